"""Suite `tpu_gmm`: grouped matmuls compiled for one TPU v5p chip, from this machine (libtpu).

What XLA:TPU's cost analysis says a dropless layer's grouped matmul costs, forward and both
gradients (d lhs, d rhs) of Σ (x ⊛ w)·probe, bf16 in and out, rows sorted into E equal groups:
  - jax.lax.ragged_dot (what moejax's dropless layers use on TPU: grouped_matmul='ragged_dot');
  - megablox gmm (jax.experimental.pallas.ops.tpu.megablox: a Pallas kernel with its own VJP)
    as moejax wraps it for grouped_matmul='megablox' (moejax/megablox.py).
Useful FLOPs are 3 · 2·M·D·F (forward, d lhs, d rhs). Per row: XLA's FLOPs and HBM bytes,
their ratio to the useful FLOPs, and a roofline time at the v5p's peak and HBM bandwidth
(moejax/parallel/tpu_chips.py): a prediction from the compiler's counts, not a measurement.
Nothing runs: there is no TPU here. Without libtpu the suite prints one line and skips.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from experiments.benchmarks.aot import compiled_cost, tpu_devices
from experiments.benchmarks.table import Table
from moejax.experts import ragged_matmul
from moejax.megablox import megablox_matmul
from moejax.parallel.tpu_chips import CHIPS


@dataclasses.dataclass(frozen=True)
class Sizes:
    rows: tuple = (16384, 32768)    # M: tokens × k of one chip's dropless layer
    model_dim: int = 768        # D
    hidden_dim: int = 3072      # F
    experts: tuple = (8, 64)


FULL = Sizes()
SMOKE = Sizes(rows=(1024,), model_dim=128, hidden_dim=256, experts=(8,))


# each as moejax's dropless experts call it (moejax/experts.py, moejax/megablox.py)
IMPLEMENTATIONS = {"ragged_dot": ragged_matmul, "megablox gmm": megablox_matmul}


def compile_grads(impl, sizes: Sizes, rows: int, experts: int, device):
    """The compiled forward + gradients of Σ impl(x, w)·probe on `device` (one TPU chip)."""
    m, d, f = rows, sizes.model_dim, sizes.hidden_dim
    sharding = NamedSharding(Mesh(np.array([device]), ("chip",)), PartitionSpec())
    x = jax.ShapeDtypeStruct((m, d), jnp.bfloat16, sharding=sharding)
    w = jax.ShapeDtypeStruct((experts, d, f), jnp.bfloat16, sharding=sharding)
    probe = jax.ShapeDtypeStruct((m, f), jnp.float32, sharding=sharding)

    def loss(x, w, probe):
        group_sizes = jnp.full((experts,), m // experts, jnp.int32)
        return jnp.sum(impl(x, w, group_sizes).astype(jnp.float32) * probe)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(x, w, probe).compile()


def add_row(table: Table, chip, name: str, rows: int, experts: int, useful: int, compile_fn
            ) -> None:
    """One implementation at one size: XLA's counts and the roofline, or why it failed."""
    row = dict(impl=name, rows=rows, experts=experts, useful_tflop=useful / 1e12)
    try:
        flops, accessed = compiled_cost(compile_fn())
    except Exception as err:  # noqa: BLE001 -- a kernel that does not compile is a row
        table.add(**row, status=f"does not compile: {str(err).splitlines()[0][:60]}")
        return
    seconds = max(flops / chip.bf16_flops, accessed / chip.hbm_bandwidth)
    table.add(**row, xla_tflop=flops / 1e12, flop_ratio=flops / useful, hbm_gb=accessed / 1e9,
              roofline_ms=seconds * 1e3, status="compiles")


def run(smoke: bool = False) -> Table:
    sizes = SMOKE if smoke else FULL
    chip = CHIPS["v5p"]
    table = Table(
        title=(f"grouped matmul fwd + grads compiled for one TPU v5p chip, jax {jax.__version__}"
               f": M×{sizes.model_dim}×{sizes.hidden_dim} bf16, equal groups"),
        columns=[("impl", "implementation", ""), ("rows", "M", "d"), ("experts", "E", "d"),
                 ("useful_tflop", "useful TFLOP", ".3f"), ("xla_tflop", "XLA's TFLOP", ".3f"),
                 ("flop_ratio", "XLA / useful", ".2f"), ("hbm_gb", "HBM GB", ".3f"),
                 ("roofline_ms", "roofline ms", ".3f"), ("status", "status", "")])
    if importlib.util.find_spec("libtpu") is None:
        print('skipped: libtpu is not installed (pip install "jax[tpu]")', flush=True)
        table.notes.append("skipped: no libtpu")
        return table
    from moejax.parallel.tpu_chips import parse_topology
    device = tpu_devices(*parse_topology("v5p-4"))[0]
    for rows in sizes.rows:
        useful = 3 * 2 * rows * sizes.model_dim * sizes.hidden_dim
        for experts in sizes.experts:
            for name, impl in IMPLEMENTATIONS.items():
                add_row(table, chip, name, rows, experts, useful,
                        lambda: compile_grads(impl, sizes, rows, experts, device))
    table.notes += [
        "useful FLOPs: forward, d lhs and d rhs, 2·M·D·F each. XLA's FLOPs and HBM bytes: the "
        "cost analysis of the compiled program (a Pallas kernel's as its cost estimate says).",
        f"roofline: max(FLOPs / {chip.bf16_flops / 1e12:.0f} TFLOP/s, bytes / "
        f"{chip.hbm_bandwidth / 1e9:.0f} GB/s): a prediction, not a measurement.",
    ]
    return table
