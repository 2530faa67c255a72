"""Grouped matmul for rows sorted by expert, for XLA:CPU (Megablocks-style, without padding).

Expert e owns the consecutive sorted rows [start_e, end_e). Each expert multiplies its rows in
windows read straight from the sorted rows: as many windows of `8·block_size` rows as fit,
then halving windows (4·, 2·, 1·block_size) for the rest, and one last `block_size` window. A
window's rows past end_e belong to the next expert and are left alone, so the cost is
(rows + E·block_size) · per-row cost at most, never every expert on every row, and most rows
go through large matmuls (XLA:CPU runs a 128-row matmul well below the speed of a 1024-row
one). Window counts are only known at run time, so
the loops have dynamic bounds; rows past the last expert's are never visited and come back as
zeros. On TPU/GPU moejax uses `jax.lax.ragged_dot` instead (on XLA:CPU it computes every
expert on every row).

The gradient is written by hand (custom_vjp; loops with dynamic bounds have no reverse-mode
derivative, and no forward-mode one here either): dx is the same loop with wᵀ, and each
expert's weight gradient [K, M] is summed in a local accumulator and written once.

Gale et al. 2022, "MegaBlocks: Efficient Sparse Training with Mixture-of-Experts".
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

BIG_WINDOWS = 8            # large windows are this many block_size-row windows


def window_sizes(block_size: int, num_rows: int) -> tuple:
    """Window rows, largest first: 8·block_size, halving down to block_size; none larger than
    num_rows (no expert has more rows, and a window must fit the array)."""
    sizes = [BIG_WINDOWS * block_size]
    while sizes[-1] > block_size:
        sizes.append(max(block_size, sizes[-1] // 2))
    return tuple(s for s in sizes if s <= num_rows)


def _expert_windows(first: jax.Array, end: jax.Array, block_size: int, num_rows: int, body,
                    carry):
    """body(window_start, window_rows (static), partial (static), carry) over the windows that
    cover one expert's rows [first, end): as many of the largest size as fit, then at most one
    of each smaller size, all inside the expert's rows (partial=False), and one last
    block_size window for the rest (< block_size rows; partial=True: it reaches past end)."""
    start = first
    for size in window_sizes(block_size, num_rows):
        count = (end - start) // size
        carry = jax.lax.fori_loop(
            0, count, lambda j, c, s=start, n=size: body(s + j * n, n, False, c), carry)
        start = start + count * size
    return jax.lax.fori_loop(0, (end > start).astype(jnp.int32),
                             lambda _, c: body(start, block_size, True, c), carry)


def _per_expert(group_sizes: jax.Array, body, carry):
    """body(e, first_row, end_row, carry) for every expert e, in order."""
    end = jnp.cumsum(group_sizes)
    start = end - group_sizes
    return jax.lax.fori_loop(0, group_sizes.shape[0],
                             lambda e, c: body(e, start[e], end[e], c), carry)


def _pad_rows(x: jax.Array, rows: int) -> jax.Array:
    """x [N, K] -> [N + rows, K] with zero rows, so the last (partial) window of the last expert
    is not clamped at the end: only that window can reach past the rows."""
    return jnp.concatenate([x, jnp.zeros((rows, x.shape[1]), x.dtype)])


def _varying(*arrays) -> set:
    """The manual mesh axes (inside shard_map) that any of the arrays varies over."""
    return set().union(*(jax.typeof(a).manual_axis_type.varying for a in arrays))


def _zeros(shape, dtype, *inputs) -> jax.Array:
    """Zeros that vary over the manual mesh axes any of `inputs` varies over: inside shard_map a
    loop carry must keep its type, and the loop body mixes the inputs into it."""
    axes = _varying(*inputs)
    zeros = jnp.zeros(shape, dtype)
    return jax.lax.pcast(zeros, tuple(sorted(axes)), to="varying") if axes else zeros


def _sum_to(cotangent: jax.Array, primal: jax.Array) -> jax.Array:
    """Sums a cotangent over the mesh axes its primal does not vary over (the transpose of
    using one copy of the primal on every device of those axes)."""
    extra = _varying(cotangent) - _varying(primal)
    return jax.lax.psum(cotangent, tuple(sorted(extra))) if extra else cotangent


def _window(x: jax.Array, first: jax.Array, rows: int) -> jax.Array:
    return jax.lax.dynamic_slice_in_dim(x, first, rows, axis=0)


def _multiply(x: jax.Array, w: jax.Array, group_sizes: jax.Array, block_size: int) -> jax.Array:
    """y[r] = x[r] · w[e(r)]: x [N, K] sorted rows, w [E, K, M] -> [N, M]; rows past the last
    group are zero."""
    n, pad = x.shape[0], block_size
    x = _pad_rows(x, pad)

    def expert(e, first, end, y):
        w_e = w[e]                                                           # [K, M], once

        def window(start, rows, partial, y):
            out = _window(x, start, rows) @ w_e                              # [rows, M]
            if partial:                                    # the next expert's rows: keep them
                mine = (start + jnp.arange(rows) < end)[:, None]
                out = jnp.where(mine, out, _window(y, start, rows))
            return jax.lax.dynamic_update_slice_in_dim(y, out, start, axis=0)

        return _expert_windows(first, end, block_size, n, window, y)

    y = _zeros((n + pad, w.shape[-1]), jnp.result_type(x, w), x, w, group_sizes)
    return _per_expert(group_sizes, expert, y)[:n]


def _weight_gradient(x: jax.Array, dy: jax.Array, group_sizes: jax.Array,
                     block_size: int) -> jax.Array:
    """dw[e] = Σ over expert e's rows r of x[r]ᵀ · dy[r] -> [E, K, M] float32, summed in a
    local accumulator and written once per expert."""
    n = x.shape[0]
    x, dy = _pad_rows(x, block_size), _pad_rows(dy, block_size)

    def expert(e, first, end, dw):
        def window(start, rows, partial, acc):
            xw, dyw = _window(x, start, rows), _window(dy, start, rows)     # [rows, K], [rows, M]
            if partial:                                    # the next expert's rows: leave out
                mine = (start + jnp.arange(rows) < end)[:, None]
                xw, dyw = jnp.where(mine, xw, 0), jnp.where(mine, dyw, 0)
            return acc + jnp.dot(xw.T, dyw, preferred_element_type=jnp.float32)
        acc = _zeros((x.shape[1], dy.shape[1]), jnp.float32, x, dy, group_sizes)   # [K, M]
        acc = _expert_windows(first, end, block_size, n, window, acc)
        return jax.lax.dynamic_update_index_in_dim(dw, acc, e, 0)

    dw = _zeros((group_sizes.shape[0], x.shape[1], dy.shape[1]), jnp.float32, x, dy,
                group_sizes)
    return _per_expert(group_sizes, expert, dw)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def grouped_matmul(x: jax.Array, w: jax.Array, group_sizes: jax.Array, block_size: int = 128
                   ) -> jax.Array:
    """x [N, K] rows sorted by expert, w [E, K, M] stacked experts, group_sizes [E] int32 rows
    per expert (summing to at most N) -> [N, M]; rows past the last group are zero."""
    return _multiply(x, w, group_sizes, block_size)


def _grouped_matmul_fwd(x, w, group_sizes, block_size):
    return _multiply(x, w, group_sizes, block_size), (x, w, group_sizes)


def _grouped_matmul_bwd(block_size, residuals, dy):
    x, w, group_sizes = residuals                                            # dy [N, M]
    dx = _multiply(dy, jnp.swapaxes(w, 1, 2), group_sizes, block_size)       # [N, K]
    dw = _weight_gradient(x, dy, group_sizes, block_size)                    # [E, K, M]
    return _sum_to(dx, x).astype(x.dtype), _sum_to(dw, w).astype(w.dtype), None


grouped_matmul.defvjp(_grouped_matmul_fwd, _grouped_matmul_bwd)
