"""Suite `comm`: the collectives of a sharded training step against the capacity plan's minimum.

The train step (forward, backward, optimizer update) of a tiny config is compiled on 8
devices (virtual CPU devices here; from shapes only: the compiled program is read, nothing
runs) for
meshes data × expert, and every collective of its HLO is counted with the times it runs
(experiments.benchmarks.collectives: a loop body, such as the scanned layers, counts once per
iteration). Per collective kind: executed ops and bytes (one device's result per op).

Minimum all-to-all traffic of a capacity-based MoE layer: its [G, E, C, D] expert buffer is
all_to_all'd to the experts and back in the forward pass, and both transposed in the backward
pass: 4 exchanges per layer, each of a device's share G_local·E·C·D·itemsize, with
C = expert_capacity(S, E, k, capacity factor, min_capacity) and G_local = G / (data ·
expert). A dropless layer's exact exchange is its T_local·k assignment rows (what
ragged_all_to_all moves); on XLA:CPU it moves padded worst-case buffers instead.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

import jax

from experiments.benchmarks import train_setup
from experiments.benchmarks.collectives import parse_collectives, summarize
from experiments.benchmarks.table import Table
from moejax.models import ffn_pattern
from moejax.parallel import MeshConfig
from moejax.parallel.mesh import batch_shards
from moejax.plan import expert_capacity
from moejax.routing import routing_k

ITEM = {"float32": 4, "bfloat16": 2, "float16": 2}
MESHES = {"data=2 × expert=4": MeshConfig(data=2, expert=4),
          "expert=8": MeshConfig(data=1, expert=8)}
# The dropless exchange is the same whatever runs the local experts; ragged_dot keeps the
# compiled program small (the CPU `blocks` matmul adds loops).
DROPLESS = {"moe.grouped_matmul": "ragged_dot"}


@dataclasses.dataclass(frozen=True)
class Sizes:
    # (row name, config family, mesh name, overrides)
    cases: tuple = (
        ("Switch tiny", "switch", "data=2 × expert=4", ()),
        ("Switch tiny", "switch", "expert=8", ()),
        ("ST-MoE tiny", "st_moe", "data=2 × expert=4", ()),
        ("Mixtral tiny (dropless)", "mixtral", "data=2 × expert=4", tuple(DROPLESS.items())),
        ("Mixtral tiny (dropless)", "mixtral", "expert=8", tuple(DROPLESS.items())),
        ("Mixtral tiny (dropless), unrolled", "mixtral", "data=2 × expert=4",
         tuple(DROPLESS.items()) + (("model.scan_layers", False),)),
    )
    overrides: tuple = ()                   # applied to every case


FULL = Sizes()
# The single-device smoke sizes, with a batch and E that the 8 devices divide.
SMALL = tuple({**dict(train_setup.SMOKE_OVERRIDES), "data.batch_size": 8,
               "moe.num_experts": 8}.items())
SMOKE = Sizes(cases=(("Switch tiny", "switch", "data=2 × expert=4", ()),
                     ("Mixtral tiny (dropless)", "mixtral", "data=2 × expert=4",
                      tuple(DROPLESS.items()) + (("model.num_layers", 2),))),
              overrides=SMALL)


def stack_lengths(setup: train_setup.TrainSetup) -> Dict[str, int]:
    """{stack: tokens per row}: encoder/decoder of a T5 batch, or the decoder-only length."""
    lengths = train_setup.batch_lengths(setup.config)
    if setup.model_cfg.arch == "decoder":
        return {"decoder": lengths["targets"]}
    return {"encoder": lengths["inputs"], "decoder": lengths["targets"]}


def moe_layers(setup: train_setup.TrainSetup) -> List[Tuple[str, int]]:
    """(stack, row length) of every MoE layer, in order."""
    cfg = setup.model_cfg
    layers = []
    for stack, length in stack_lengths(setup).items():
        depth = cfg.stack_depths()[stack]
        layers += [(stack, length)] * ffn_pattern(cfg, depth, stack).count("moe")
    return layers


def minimum_all_to_all_elements(setup: train_setup.TrainSetup) -> int:
    """Elements per device per step: 4 exchanges per MoE layer (out, back; both transposed)."""
    moe = setup.model_cfg.moe
    b, d = setup.config.data.batch_size, setup.model_cfg.d_model
    shards, k = batch_shards(setup.mesh), routing_k(moe)
    total = 0
    for _, length in moe_layers(setup):
        if not moe.uses_capacity:                  # exact rows: T_local · k · D
            total += 4 * (b * length // shards) * k * d
            continue
        s = moe.group_size or length
        g_local = b * length // s // shards
        c = expert_capacity(s, moe.num_experts, k, moe.capacity_factor, moe.min_capacity)
        total += 4 * g_local * moe.num_experts * c * d        # [G_l, E, C, D]
    return total


def minimum_all_to_all(setup: train_setup.TrainSetup) -> int:
    """Bytes per device per step: the exchanged rows are the layer's input, in the model's
    dtype (the experts cast later)."""
    return minimum_all_to_all_elements(setup) * ITEM[setup.model_cfg.dtype]


def measure(table: Table, name: str, family: str, mesh_name: str, overrides: dict) -> None:
    setup = train_setup.build(train_setup.load_config(family, overrides), MESHES[mesh_name],
                              abstract=True)
    found = parse_collectives(setup.compile().as_text())
    kinds = summarize(found)
    layers = len(moe_layers(setup))
    a2a, minimum = kinds["all-to-all"], minimum_all_to_all(setup)
    ints = sum(c.executions * c.nbytes for c in found          # dropless row counts
               if c.op == "all-to-all" and c.dtypes == ("s32",))
    kib = 1 / 1024
    table.add(config=name, mesh=mesh_name, moe_layers=layers,
              a2a_ops=a2a["ops"] / layers, a2a_kib=a2a["bytes"] / layers * kib,
              min_kib=minimum / layers * kib, ratio=a2a["bytes"] / minimum,
              ar_ops=kinds["all-reduce"]["ops"], ar_kib=kinds["all-reduce"]["bytes"] * kib,
              ag_ops=kinds["all-gather"]["ops"], ag_kib=kinds["all-gather"]["bytes"] * kib,
              rs_ops=kinds["reduce-scatter"]["ops"],
              rs_kib=kinds["reduce-scatter"]["bytes"] * kib,
              cp_ops=kinds["collective-permute"]["ops"],
              cp_kib=kinds["collective-permute"]["bytes"] * kib,
              # in the JSON only: exact numbers the tests compare
              a2a_bytes=a2a["bytes"], min_bytes=minimum, a2a_int_bytes=ints,
              trivial_all_reduces=kinds["all-reduce"]["trivial"],
              dispatch=setup.model_cfg.moe.dispatch)


def run(smoke: bool = False) -> Table:
    sizes = SMOKE if smoke else FULL
    table = Table(
        title=(f"collectives of the compiled train step on {jax.device_count()} "
               f"{jax.default_backend()} devices, per device (bytes of each op's result), "
               "all-to-all per MoE layer, the rest per step"),
        columns=[("config", "config", ""), ("mesh", "mesh", ""),
                 ("moe_layers", "MoE layers", "d"),
                 ("a2a_ops", "all-to-all ops/layer", ".1f"),
                 ("a2a_kib", "all-to-all KiB/layer", ".1f"),
                 ("min_kib", "minimum KiB/layer", ".1f"),
                 ("ratio", "ratio to minimum", ".2f"),
                 ("ar_ops", "all-reduce ops/step", "d"), ("ar_kib", "all-reduce KiB/step", ".1f"),
                 ("ag_ops", "all-gather ops", "d"), ("ag_kib", "all-gather KiB", ".1f"),
                 ("rs_ops", "reduce-scatter ops", "d"), ("rs_kib", "reduce-scatter KiB", ".1f"),
                 ("cp_ops", "collective-permute ops", "d"),
                 ("cp_kib", "collective-permute KiB", ".1f")])
    for name, family, mesh_name, overrides in sizes.cases:
        measure(table, name, family, mesh_name, {**dict(sizes.overrides), **dict(overrides)})
    trivial = sorted({r["trivial_all_reduces"] // r["moe_layers"] for r in table.rows})
    table.notes += [
        "counting: an op inside a while loop (the layers under nnx.scan) counts once per "
        "iteration (XLA's known_trip_count), so the unrolled row (scan_layers=False, every "
        "layer its own ops) must match the scanned row above it; XLA removes loops of one "
        "iteration, so Switch/ST-MoE (one MoE layer per stack) have none.",
        "minimum (capacity plans): 4 all-to-alls per MoE layer (to the experts and back, "
        "forward and backward), each a device's share G_local·E·C·D·4 bytes of the [G, E, C, D] "
        "expert buffer; encoder and decoder layers differ in S and so in C, the columns are "
        "per-layer averages. Ratio 1.00: nothing beyond the plan's buffers is exchanged.",
        "minimum (dropless): the exact exchange of T_local·k rows of D floats, 4 per layer. On "
        "XLA:CPU (no ragged_all_to_all) rows move as padded [|expert|, T_local·min(k, E_local), "
        "D] buffers: ratio |expert|·min(k, E_local)/k, plus one small int32 all-to-all of the "
        "per-expert row counts per layer (included).",
        "all-reduce: the data-parallel gradient sums (expert weights over the `data` axis, "
        "every other parameter over all devices), the loss and metric sums; XLA combines many "
        "into one tuple op. Not counted: "
        f"{', '.join(str(t) for t in trivial)} per MoE layer over groups of one device (the "
        "experts' psum over the size-1 `model` axis), which move nothing.",
        "ops are counted after XLA's combiners: one tuple all-to-all or all-reduce is one op "
        "(unrolled, XLA combines the gradient all-reduces of several layers: fewer ops, the "
        "same bytes).",
    ]
    absent = [op for op in ("ag", "rs", "cp") if not any(r[op + "_ops"] for r in table.rows)]
    if len(absent) == 3:
        table.notes.append("no all-gather, reduce-scatter or collective-permute: parameters "
                           "and optimizer state are replicated over `data` (no fsdp axis here) "
                           "and the experts' weights stay on their devices.")
    return table
