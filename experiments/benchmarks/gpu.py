"""Suite `gpu`: what one GPU says about the dropless path and a bf16 training step.

Never needed by CI: on a machine without a GPU the full suite prints one line and returns an
empty table (--smoke runs the same code at tiny sizes on any backend, for the tests).

1. ragged_dot against blocks. The dropless MoE layer (top-2 of E experts, SwiGLU) on the same
   weights and tokens twice: with grouped_matmul='ragged_dot' (jax.lax.ragged_dot) on the
   accelerator and with 'blocks' (moejax.grouped, the tested CPU path) on the host's CPU, both
   in float32 at matmul precision 'highest'. Rows: the output and every gradient of Σ y·probe
   (router, expert weights, input), as max |a − b| / max |b|. They agree when that is at most
   1e-4: reordered float32 sums of n terms (blocked CPU loops against GPU kernels) typically
   differ by about √n·ε (5e-6 for n = 2048 rows; the worst-case bound n·ε = 2e-4 assumes every
   rounding error has the same sign), while TF32 or bf16 arithmetic would show as ~1e-3.
1b. ragged_dot's speed: on rows sorted into E equal groups, against the same products as one
   batched matmul (equal FLOPs; what a capacity buffer with no slack computes).
2. A bf16 training step at GLaM-base width (12 decoder layers, d_model 768, d_ff 3072, every
   other FFN a top-2 MoE of E=8 GEGLU experts; Adafactor; random tokens): the MoE with
   capacity dispatch (index, capacity factor 1.0 as GLaM trains) and dropless (ragged_dot),
   against the FLOP-matched dense baseline (model.moe_as_dense: each MoE FFN one dense FFN of
   width k·F), timed in alternation. Model FLOPs are PaLM's 6·N + 12·L·H·Q·T per token with
   N the active parameters (moejax.models.flops): the work the model needs, without capacity
   slack or padding; MFU = model FLOPs / median step time / the chip's datasheet peak. XLA's
   own count is shown beside them: on GPU its cost analysis of the compiled step misses most
   of the work (0.3–0.4 of 39 TFLOP on an H200, jax 0.11.2), so it cannot be the numerator. A
   large bf16 matmul timed in the same run gives the peak this chip reaches in practice.
"""

from __future__ import annotations

import dataclasses
import statistics

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments.benchmarks import train_setup
from experiments.benchmarks.table import Table
from experiments.benchmarks.timing import once, side_by_side
from moejax.config import MoeConfig
from moejax.layer import MoeLayer
from moejax.models.flops import train_flops_per_token
from moejax.train.throughput import peak_flops

AGREE = 1e-4          # max |a − b| / max |b| at which the two grouped matmuls agree (above)


@dataclasses.dataclass(frozen=True)
class Sizes:
    # part 1: the dropless layer
    experts: int = 8
    model_dim: int = 512
    hidden_dim: int = 1024
    groups: int = 2
    group_tokens: int = 2048
    # part 2: the training step: configs/glam.py:<glam> with these overrides
    glam: str = "base"
    step_overrides: tuple = (("moe.num_experts", 8), ("data.batch_size", 32),
                             ("data.seq_length", 1024), ("model.dtype", "bfloat16"),
                             ("moe.dtype", "bfloat16"))
    repeats: int = 20
    matmul: int = 8192
    grouped: tuple = (65536, 768, 3072)     # part 1b: rows (32k tokens × top-2), D, F


FULL = Sizes()
SMOKE = Sizes(experts=4, model_dim=32, hidden_dim=64, groups=2, group_tokens=64,
              glam="tiny", step_overrides=train_setup.SMOKE_OVERRIDES + (
                  ("model.dtype", "bfloat16"), ("moe.dtype", "bfloat16")),
              repeats=2, matmul=256, grouped=(256, 32, 64))


def _loss_and_grads(layer, x, probe):
    """(y, {router, experts..., x}: gradients of Σ y·probe), compiled where x lives."""
    def loss(layer, x):
        y, _ = layer(x, deterministic=True)
        return jnp.sum(y * probe), y

    (_, y), (g_layer, g_x) = nnx.jit(nnx.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
        layer, x)
    flat = {"/".join(map(str, path)): v[...] for path, v in nnx.to_flat_state(g_layer)}
    return {"output": y, **flat, "input": g_x}


def ragged_against_blocks(table: Table, sizes: Sizes, device) -> None:
    """Rows of part 1: the ragged_dot layer on `device` against blocks on the host CPU."""
    cpu = jax.devices("cpu")[0]
    cfg = MoeConfig(num_experts=sizes.experts, num_selected_experts=2, hidden_dim=sizes.hidden_dim,
                    activation="swiglu", dispatch="dropless", grouped_matmul="blocks")
    shape = (sizes.groups, sizes.group_tokens, sizes.model_dim)           # [G, S, D]
    with jax.default_device(cpu), jax.default_matmul_precision("highest"):
        reference = MoeLayer(cfg, sizes.model_dim, rngs=nnx.Rngs(0))
        x = jax.random.normal(jax.random.key(1), shape)
        probe = jax.random.normal(jax.random.key(2), shape)
        want = _loss_and_grads(reference, x, probe)
    ragged = MoeLayer(dataclasses.replace(cfg, grouped_matmul="ragged_dot"), sizes.model_dim,
                      rngs=nnx.Rngs(1))
    nnx.update(ragged, jax.device_put(nnx.state(reference), device))
    with jax.default_matmul_precision("highest"):
        got = _loss_and_grads(ragged, jax.device_put(x, device), jax.device_put(probe, device))
    for name, b in want.items():
        a, b = np.asarray(got[name], np.float64), np.asarray(b, np.float64)
        error = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
        table.add(part="ragged_dot vs blocks", what=name, shape="×".join(map(str, b.shape)),
                  rel_error=error, verdict="agrees" if error <= AGREE else "DIFFERS")


def ragged_against_batched(table: Table, sizes: Sizes) -> None:
    """Rows of part 1b: jax.lax.ragged_dot on rows sorted into E equal groups against the same
    products as one batched matmul [E, rows/E, D] × [E, D, F] (equal FLOPs), bf16, forward."""
    e, (m, d, f) = sizes.experts, sizes.grouped
    x = jax.random.normal(jax.random.key(0), (m, d), jnp.bfloat16)
    w = jax.random.normal(jax.random.key(1), (e, d, f), jnp.bfloat16)
    group_sizes = jnp.full((e,), m // e, jnp.int32)
    ragged = jax.jit(lambda x, w: jax.lax.ragged_dot(x, w, group_sizes))
    batched = jax.jit(lambda x, w: jnp.einsum("end,edf->enf", x.reshape(e, m // e, d), w))
    seconds = side_by_side({"ragged_dot": lambda: ragged(x, w),
                            "batched matmul": lambda: batched(x, w)}, sizes.repeats)
    for name, t in seconds.items():
        table.add(part="grouped matmul, bf16", what=name, shape=f"{m}×{d}×{f}, E={e}",
                  ms=t * 1e3, tflop_s=2 * m * d * f / t / 1e12)


def matmul_tflops(n: int, repeats: int) -> float:
    """Median FLOP/s of an n×n×n bf16 matmul on the default device (random data)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.bfloat16)
    mm = jax.jit(lambda a, b: a @ b)
    jax.block_until_ready(mm(a, b))
    return 2 * n ** 3 / statistics.median(once(lambda: mm(a, b)) for _ in range(repeats))


def train_steps(table: Table, sizes: Sizes, peak: float | None) -> None:
    """Rows of part 2: dense baseline, capacity MoE and dropless MoE, timed in alternation."""
    base = dict(sizes.step_overrides)
    variants = {"dense (k·F)": {**base, **train_setup.DENSE},
                "MoE, index (capacity 1.0)": {**base, "moe.dispatch": "index"},
                "MoE, dropless (ragged_dot)": {**base, "moe.dispatch": "dropless",
                                               "moe.grouped_matmul": "ragged_dot"}}
    setups = {name: train_setup.build(train_setup.load_config("glam", overrides, sizes.glam))
              for name, overrides in variants.items()}
    seconds = side_by_side({name: s.step_fn() for name, s in setups.items()}, sizes.repeats)
    for name, setup in setups.items():
        t = seconds[name]
        model_flops = setup.tokens * train_flops_per_token(
            setup.model, setup.model_cfg, setup.config.data.seq_length)
        table.add(part="bf16 train step", what=name,
                  shape=f"{setup.params / 1e6:.0f}M params, {setup.tokens} tokens", ms=t * 1e3,
                  tokens_s=setup.tokens / t, model_tflop=model_flops / 1e12,
                  xla_tflop=_flops(setup) / 1e12, tflop_s=model_flops / t / 1e12,
                  mfu=model_flops / t / peak if peak else None)


def _flops(setup) -> float:
    """XLA's cost analysis of the compiled step (what the step suite reports)."""
    return float(setup.compile().cost_analysis()["flops"])


def run(smoke: bool = False) -> Table:
    device = jax.devices()[0]
    sizes = SMOKE if smoke else FULL
    table = Table(
        title=(f"one {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}: "
               "dropless ragged_dot against the CPU blocks path; bf16 train step at GLaM-base "
               f"width, median of {sizes.repeats} steps"),
        columns=[("part", "part", ""), ("what", "what", ""), ("shape", "shape / size", ""),
                 ("rel_error", "rel. error", ".2e"), ("verdict", "verdict", ""),
                 ("ms", "ms/step", ".1f"), ("tokens_s", "tokens/s", ".0f"),
                 ("model_tflop", "model TFLOP/step", ".2f"),
                 ("xla_tflop", "XLA's TFLOP/step", ".2f"), ("tflop_s", "TFLOP/s", ".1f"),
                 ("mfu", "MFU", ".1%")])
    if jax.default_backend() != "gpu" and not smoke:
        print(f"skipped: no GPU here (jax's backend is {jax.default_backend()})", flush=True)
        table.notes.append("skipped: no GPU")
        return table
    ragged_against_blocks(table, sizes, device)
    ragged_against_batched(table, sizes)
    peak = peak_flops(device)
    reached = matmul_tflops(sizes.matmul, sizes.repeats)
    table.add(part="bf16 matmul", what=f"{sizes.matmul}³", tflop_s=reached / 1e12,
              mfu=reached / peak if peak else None)
    train_steps(table, sizes, peak)
    table.notes += [
        f"peak: {peak / 1e12:.0f} TFLOP/s dense bf16 by the datasheet" if peak else
        f"peak: {device.device_kind} is not in GPU_BF16_PEAK, so no MFU",
        "bf16 matmul row: TFLOP/s reached on random data, and that as a fraction of the peak.",
        "model FLOPs: 6·N_active + 12·L·H·Q·T per token (PaLM, moejax.models.flops); MFU = "
        "model FLOPs per step / median step time / peak. XLA's count is its cost analysis "
        "of the compiled step, shown for comparison (capacity slack and router included).",
        f"ragged_dot vs blocks: max |a − b| / max |b|; agrees at <= {AGREE:g} (float32 "
        "reordering; see the module's docstring).",
    ]
    return table
