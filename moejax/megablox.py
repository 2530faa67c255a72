"""A grouped matmul by the megablox Pallas kernel (jax.experimental.pallas.ops.tpu.megablox),
the TPU kernel of MegaBlocks-style dropless MoE (Gale et al. 2023, "MegaBlocks: Efficient Sparse
Training with Mixture-of-Experts").

Why it is here: XLA:TPU's own `jax.lax.ragged_dot` kernel does not compile for a v5p chip at
32768 rows of d_model 768 × d_ff 3072 (it asks for more on-chip vector memory than there is;
libtpu 0.0.42 and 0.0.50), and with jax 0.10.2 it computes 22x the useful FLOPs at 64 experts.
megablox compiles at every size measured, with exactly the useful FLOPs
(docs/PERFORMANCE.md, `--suite=tpu_gmm`). Select it with moe.grouped_matmul='megablox'.

The kernel is written for TPUs; elsewhere it runs in Pallas' interpret mode (correct, slow:
for tests). It leaves rows past the last group unwritten, so they are masked to zeros here,
in the output and in the input's gradient.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

TILE = 512          # rows, contraction and output tile; smaller dimensions take their size


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def megablox_matmul(x: jax.Array, w: jax.Array, group_sizes: jax.Array) -> jax.Array:
    """Rows x [N, D] sorted by expert times their expert's w [E, D, F] -> [N, F] in x's dtype;
    rows past sum(group_sizes) are 0 (and get 0 gradient)."""
    from jax.experimental.pallas.ops.tpu.megablox import ops
    n, d = x.shape
    f = w.shape[-1]
    tm = TILE if n >= TILE else _round_up(n, 8)
    padded = _round_up(n, tm)                 # the kernel needs whole row tiles
    valid = (jnp.arange(padded) < jnp.sum(group_sizes))[:, None]       # [N_pad, 1]
    rows = jnp.where(valid, jnp.pad(x, ((0, padded - n), (0, 0))), 0)
    tiling = (tm, min(TILE, d), min(TILE, f))

    def gmm(interpret, rows, w, group_sizes):
        # positional: preferred_element_type, tiling, group_offset, existing_out,
        # transpose_rhs, interpret (its custom VJP takes the non-differentiable ones so)
        return ops.gmm(rows, w, group_sizes, x.dtype, tiling, None, None, False, interpret)

    # the kernel where the program is compiled for a TPU (also ahead of time, from a CPU host),
    # Pallas' interpreter elsewhere
    y = jax.lax.platform_dependent(rows, w.astype(x.dtype), group_sizes,
                                   tpu=functools.partial(gmm, False),
                                   default=functools.partial(gmm, True))
    return jnp.where(valid, y, 0)[:n]
