"""Block-sparse grouped computation: run each expert only on its own rows (Megablocks-style).

Rows sorted by expert are laid out in blocks of `block_size` rows that each belong to one
expert (an expert's last block is padded with zero rows). A scan over blocks then applies
that block's expert, so the cost is (rows + E·block_size) · per-row cost, never every expert on
every row. This is the dropless path for XLA:CPU, where `jax.lax.ragged_dot` computes every
expert on every row; on TPU/GPU moejax uses `ragged_dot` instead.

Gale et al. 2022, "MegaBlocks: Efficient Sparse Training with Mixture-of-Experts".
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp


def block_layout(group_sizes: jax.Array, num_rows: int, block_size: int):
    """Where each sorted row goes in the blocked layout, and which expert owns each block.

    group_sizes: [E] int32 rows per expert (they may sum to less than num_rows; the rest are
      ignored). Returns (padded_row [num_rows] int32, an index into num_blocks·block_size rows
      or num_blocks·block_size for ignored rows; block_expert [num_blocks] int32), with the
      static num_blocks = ceil(num_rows / block_size) + E, enough for any group sizes.
    """
    num_experts = group_sizes.shape[0]
    num_blocks = -(-num_rows // block_size) + num_experts
    blocks_per_expert = (group_sizes + block_size - 1) // block_size            # [E]
    block_end = jnp.cumsum(blocks_per_expert)                                    # [E]
    block_start = block_end - blocks_per_expert                                  # [E]
    row_end = jnp.cumsum(group_sizes)                                            # [E]
    row_start = row_end - group_sizes                                            # [E]
    rows = jnp.arange(num_rows, dtype=jnp.int32)
    expert = jnp.searchsorted(row_end, rows, side="right")                       # [num_rows]
    in_group = expert < num_experts
    e = jnp.minimum(expert, num_experts - 1)
    padded = block_start[e] * block_size + rows - row_start[e]
    padded_row = jnp.where(in_group, padded, num_blocks * block_size).astype(jnp.int32)
    blocks = jnp.arange(num_blocks, dtype=jnp.int32)
    block_expert = jnp.minimum(jnp.searchsorted(block_end, blocks, side="right"),
                               num_experts - 1).astype(jnp.int32)
    return padded_row, block_expert


def grouped_apply(fn: Callable[[Any, jax.Array, jax.Array], jax.Array], params: Any,
                  x: jax.Array, group_sizes: jax.Array, block_size: int) -> jax.Array:
    """y[r] = fn(params[e(r)], x[r]) for rows x [N, D] sorted by expert e(r).

    fn(params_e, x_block [block_size, D], block_index) -> [block_size, D_out] applies one
    expert; params is a pytree whose leaves have a leading expert axis E. Rows outside every
    group come back as zeros.
    """
    n, d = x.shape
    padded_row, block_expert = block_layout(group_sizes, n, block_size)
    num_blocks = block_expert.shape[0]
    x_blocks = jnp.zeros((num_blocks * block_size, d), x.dtype).at[padded_row].set(
        x, mode="drop").reshape(num_blocks, block_size, d)

    def one_block(args):
        x_block, expert, index = args
        params_e = jax.tree.map(lambda p: jax.lax.dynamic_index_in_dim(p, expert, 0, False),
                                params)
        return fn(params_e, x_block, index)

    y_blocks = jax.lax.map(one_block, (x_blocks, block_expert,
                                       jnp.arange(num_blocks, dtype=jnp.int32)))
    y_padded = y_blocks.reshape(num_blocks * block_size, -1)
    return jnp.take(y_padded, padded_row, axis=0, mode="fill", fill_value=0)
