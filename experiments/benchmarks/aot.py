"""Ahead-of-time compilation of a config's train step for a Cloud TPU slice, and its sizing:
memory against HBM, FLOPs, the collectives of the compiled program and a roofline prediction
(the library of experiments/aot.py; see there)."""

from __future__ import annotations

import math
import os
import time
from typing import Any, Dict, Optional

import jax
import numpy as np
from flax import nnx
from jax.experimental import topologies

from experiments.benchmarks import comm, train_setup
from experiments.benchmarks.collectives import parse_collectives, summarize
from moejax.checkpoints.store import StderrHeld
from moejax.errors import ConfigError, first_line
from moejax.parallel import MeshConfig
from moejax.parallel.tpu_chips import parse_topology

def tpu_devices(chip, shape):
    """The devices of a slice of `chip` with chip grid `shape` (no TPU needed). libtpu's
    start-up warnings about the TPU VM it is not running on are held back."""
    bounds = (2, 2, 1) if chip.dims == 3 or math.prod(shape) < 8 else (2, 4, 1)
    name = f"{chip.name}:{'x'.join(map(str, shape))}"
    # libtpu locks /tmp/libtpu_lockfile for the one process it expects per TPU VM; compiling
    # needs no chips, so parallel test workers and compiles may each load it.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    with StderrHeld() as held:
        held.drop = True
        try:
            return topologies.get_topology_desc(platform="tpu", topology_name=name,
                                                chip_config_name="default",
                                                chips_per_host_bounds=bounds,
                                                num_slices=1).devices
        except Exception as err:  # noqa: BLE001 -- libtpu raises plain RuntimeErrors
            raise ConfigError(f"libtpu cannot describe a {name} slice: {first_line(err)}"
                              ) from None


def collectives(hlo_text: str) -> Dict[str, Dict[str, int]]:
    """{kind: {"count", "bytes", "elements"}} of the collectives that one device runs per step:
    every instruction of the compiled HLO times the runs of its computation (a loop body, e.g.
    layers under nnx.scan, once per iteration; experiments/benchmarks/collectives.py), bytes
    its result's size (async ops at their -start); kinds that move nothing are left out."""
    return {op: {"count": v["ops"], "bytes": v["bytes"], "elements": v["elements"]}
            for op, v in summarize(parse_collectives(hlo_text)).items() if v["ops"]}


def sharded_bytes(tree) -> int:
    """Bytes one device holds of an abstract, sharded pytree."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = getattr(leaf, "shape", None)
        if shape is None:
            continue
        sharding = getattr(leaf, "sharding", None)
        local = sharding.shard_shape(shape) if sharding is not None else shape
        total += math.prod(local) * np.dtype(leaf.dtype).itemsize
    return total


def compiled_cost(compiled) -> tuple:
    """(FLOPs, HBM bytes accessed) of a compiled program by XLA's cost analysis (some jax
    versions return it as a one-element list)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))


def does_not_fit(message: str, topology: str) -> str:
    """One line for XLA's compile-time out-of-memory error (the program needs more HBM than a
    chip has, so the compiler stops before there is a memory analysis to read)."""
    first = next((line.strip() for line in message.splitlines()
                  if "RESOURCE_EXHAUSTED" in line), message.strip().splitlines()[0])
    cause = first.split("RESOURCE_EXHAUSTED:", 1)[-1].strip()
    return (f"DOES NOT FIT on {topology}: {cause} Shard more (--config.mesh.*), rematerialise "
            "(--config.model.remat=full), or split the batch into microbatches "
            "(--config.train.grad_accum_steps).")


# What a TPU runs where a config leaves the choice to the backend ('auto' resolves by the
# backend that traces, and here that is the CPU): the real ragged exchange and ragged_dot.
TPU_CHOICES = {"moe.grouped_matmul": "ragged_dot", "moe.dropless_all_to_all": "ragged"}


def for_tpu(config):
    """A copy of config with its 'auto' backend choices made as on a TPU (TPU_CHOICES)."""
    config = config.copy_and_resolve_references()
    for field, choice in TPU_CHOICES.items():
        section, name = field.split(".")
        if section in config and config[section].get(name) == "auto":
            config[section][name] = choice
    return config


def plan_minimum(setup) -> Optional[int]:
    """All-to-all elements per chip and step that the capacity plan (or, dropless, the exact
    rows) needs (experiments/benchmarks/comm.py); None without routed MoE layers."""
    from moejax.routing import family
    cfg = setup.model_cfg
    if not cfg.has_moe or family(cfg.moe).choice == "soft":
        return None
    return comm.minimum_all_to_all_elements(setup)


def analyse(config, topology: str, log=print) -> Dict[str, Any]:
    """Compiles config's train step for `topology`; returns the figures (see the module doc).

    With model.scan_layers (the default) XLA's cost analysis counts the scanned layer body
    once: FLOPs, HBM traffic and so the prediction are then lower bounds (`scanned` in the
    figures); the collective census multiplies loop bodies by their trip counts.
    --config.model.scan_layers=False unrolls the layers and makes them whole, at a longer
    compile."""
    chip, shape = parse_topology(topology)
    config = for_tpu(config)
    devices = tpu_devices(chip, shape)
    log(f"{topology}: {len(devices)} chips ({'x'.join(map(str, shape))}), "
        f"{chip.hbm_bytes / 2 ** 30:.0f} GiB HBM each")
    start = time.perf_counter()
    setup = train_setup.build(config, MeshConfig.from_dict(dict(config.mesh)), abstract=True,
                              devices=devices)
    log(f"mesh: {' '.join(f'{k}={v}' for k, v in setup.mesh.shape.items())}")
    try:
        compiled = setup.compile()
    except jax.errors.JaxRuntimeError as err:
        if "RESOURCE_EXHAUSTED" not in str(err):
            raise
        raise ConfigError(does_not_fit(str(err), topology)) from None
    seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    flops, accessed = compiled_cost(compiled)
    found = collectives(compiled.as_text())
    params = sharded_bytes(nnx.state(setup.model, nnx.Param))
    optimizer = sharded_bytes(nnx.state(setup.optimizer))
    total = (memory.argument_size_in_bytes + memory.output_size_in_bytes
             - memory.alias_size_in_bytes + memory.temp_size_in_bytes)
    moved = sum(c["bytes"] for c in found.values())
    compute_s, hbm_s, ici_s = (flops / chip.bf16_flops, accessed / chip.hbm_bandwidth,
                               moved / chip.ici_bandwidth)
    step_s = max(compute_s, hbm_s) + ici_s
    return {
        "topology": topology, "chips": len(devices), "shape": list(shape),
        "scanned": bool(config.model.scan_layers),
        "mesh": dict(setup.mesh.shape), "compile_seconds": round(seconds, 1),
        "per_chip": {
            "parameter_bytes": params, "optimizer_state_bytes": optimizer,
            "argument_bytes": memory.argument_size_in_bytes,
            "output_bytes": memory.output_size_in_bytes,
            "alias_bytes": memory.alias_size_in_bytes,
            "temporary_bytes": memory.temp_size_in_bytes,
            "total_bytes": total, "hbm_bytes": chip.hbm_bytes,
            "flops": flops, "bytes_accessed": accessed, "collectives": found,
            "all_to_all_minimum_elements": plan_minimum(setup),
        },
        "fits": total <= chip.hbm_bytes,
        "prediction": {"compute_seconds": compute_s, "hbm_seconds": hbm_s,
                       "collective_seconds": ici_s, "step_seconds": step_s,
                       "mfu": compute_s / step_s if step_s else None},
    }


def report(figures: Dict[str, Any]) -> str:
    c, p = figures["per_chip"], figures["prediction"]
    gib = 2 ** 30
    lines = [
        f"per chip: parameters {c['parameter_bytes'] / gib:.2f} GiB, optimizer state "
        f"{c['optimizer_state_bytes'] / gib:.2f} GiB",
        f"compiled memory per chip: arguments {c['argument_bytes'] / gib:.2f} GiB, outputs "
        f"{c['output_bytes'] / gib:.2f} GiB (aliased {c['alias_bytes'] / gib:.2f}), temporaries "
        f"{c['temporary_bytes'] / gib:.2f} GiB, total {c['total_bytes'] / gib:.2f} GiB of "
        f"{c['hbm_bytes'] / gib:.1f} GiB HBM",
        ("FITS" if figures["fits"] else "DOES NOT FIT") + f": {c['total_bytes'] / gib:.2f} GiB "
        f"needed, {c['hbm_bytes'] / gib:.1f} GiB per chip",
        f"per chip and step: {c['flops'] / 1e12:.2f} TFLOP, {c['bytes_accessed'] / 1e9:.2f} GB "
        f"of HBM traffic",
    ]
    if c["collectives"]:
        lines.append("collectives per chip and step: " + ", ".join(
            f"{kind} ×{v['count']} {v['bytes'] / 1e6:.1f} MB"
            for kind, v in sorted(c["collectives"].items())))
    else:
        lines.append("collectives per chip and step: none")
    minimum = c.get("all_to_all_minimum_elements")
    if minimum:
        moved = sum(v["elements"] for kind, v in c["collectives"].items()
                    if kind in ("all-to-all", "ragged-all-to-all"))
        lines.append(f"all-to-all elements per chip and step: {moved / 1e6:.2f} M moved "
                     f"(buffers as compiled), plan minimum {minimum / 1e6:.2f} M "
                     f"(ratio {moved / minimum:.2f})")
    lines.append(
        f"PREDICTION (roofline, not a measurement): step {p['step_seconds'] * 1e3:.1f} ms = "
        f"max(compute {p['compute_seconds'] * 1e3:.1f} ms, HBM {p['hbm_seconds'] * 1e3:.1f} ms) "
        f"+ collectives {p['collective_seconds'] * 1e3:.1f} ms; MFU "
        + ("n/a" if p["mfu"] is None else f"{100 * p['mfu']:.0f}%"))
    if figures["scanned"]:
        lines.append("NOTE: layers are scanned, so XLA's FLOPs and HBM traffic, and the "
                     "prediction, count one layer body once (lower bounds; the collectives "
                     "count every layer); --config.model.scan_layers=False counts every layer")
    lines.append(f"(compiled in {figures['compile_seconds']:.0f} s)")
    return "\n".join(lines)
