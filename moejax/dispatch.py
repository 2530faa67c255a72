"""Dispatch tokens to expert slots and combine expert outputs back, for one capacity plan.

Two implementations of the same plan that agree to float tolerance:
- index: gather into slots, scatter-add back. Cost linear in tokens (the default).
- einsum: GShard/flaxformer one-hot dispatch and combine tensors [G, S, E, C]; cost grows
  with S·E·C, kept for fidelity and as the reference benchmarks compare against.
And the dropless layout: assignments sorted by expert for a grouped matmul (Megablocks).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from moejax.plan import CapacityPlan


def dispatch_index(x: jax.Array, plan: CapacityPlan) -> jax.Array:
    """x [G, S, D] -> expert inputs [G, E, C, D]; empty slots hold zeros."""
    g, s, d = x.shape
    _, e, c = plan.slot_token.shape
    x_padded = jnp.concatenate([x, jnp.zeros((g, 1, d), x.dtype)], axis=1)     # [G, S+1, D]
    idx = plan.slot_token.reshape(g, e * c, 1)
    return jnp.take_along_axis(x_padded, idx, axis=1).reshape(g, e, c, d)


def combine_index(y: jax.Array, plan: CapacityPlan, group_size: int) -> jax.Array:
    """Expert outputs [G, E, C, D] -> [G, S, D]: Σ over a token's slots of weight · output."""
    g, e, c, d = y.shape
    weighted = y.astype(jnp.float32) * plan.slot_weight[..., None]            # [G, E, C, D]

    def one_group(weighted, slot_token):
        out = jnp.zeros((group_size, d), jnp.float32)
        return out.at[slot_token.reshape(-1)].add(weighted.reshape(e * c, d), mode="drop")

    return jax.vmap(one_group)(weighted, plan.slot_token)


def dispatch_mask(plan: CapacityPlan, group_size: int) -> jax.Array:
    """[G, S, E, C] float32 one-hot: 1 where slot (e, c) holds token s (GShard's dispatch)."""
    tokens = jnp.arange(group_size, dtype=jnp.int32)
    return (plan.slot_token[:, None, :, :] == tokens[None, :, None, None]).astype(jnp.float32)


def dispatch_einsum(x: jax.Array, plan: CapacityPlan) -> jax.Array:
    """x [G, S, D] -> [G, E, C, D] through the one-hot dispatch tensor."""
    mask = dispatch_mask(plan, x.shape[1]).astype(x.dtype)
    return jnp.einsum("gsec,gsd->gecd", mask, x)


def combine_einsum(y: jax.Array, plan: CapacityPlan, group_size: int) -> jax.Array:
    """[G, E, C, D] -> [G, S, D] through the combine tensor (dispatch mask · slot weight)."""
    combine = dispatch_mask(plan, group_size) * plan.slot_weight[:, None, :, :]  # [G, S, E, C]
    return jnp.einsum("gsec,gecd->gsd", combine, y.astype(jnp.float32))


@struct.dataclass
class SortedAssignments:
    """Token-choice assignments sorted by expert, for dropless dispatch.

    token: [N] int32 flat token index (in [0, T)) of each sorted row; N = T·k.
    gate: [N] float32 combine weight (0 for withdrawn choices).
    group_sizes: [E] int32 rows of each expert; withdrawn choices sort last, outside all groups.
    """
    token: jax.Array
    gate: jax.Array
    group_sizes: jax.Array


def sort_assignments(expert_index: jax.Array, gate: jax.Array, valid: jax.Array,
                     num_experts: int) -> SortedAssignments:
    """[T, k] choices -> rows sorted by expert (stable: token order within an expert)."""
    t, k = expert_index.shape
    eid = jnp.where(valid, expert_index, num_experts).reshape(-1)              # [T*k]
    order = jnp.argsort(eid, stable=True)                                      # [T*k]
    token = (jnp.arange(t * k, dtype=jnp.int32) // k)[order]
    gate = jnp.where(valid, gate, 0.0).reshape(-1)[order]
    group_sizes = jnp.bincount(eid, length=num_experts + 1)[:num_experts].astype(jnp.int32)
    return SortedAssignments(token=token, gate=gate, group_sizes=group_sizes)


def combine_sorted(y_sorted: jax.Array, sorted_assignments: SortedAssignments,
                   num_tokens: int) -> jax.Array:
    """Sorted expert outputs [N, D] -> [T, D]: Σ over a token's rows of gate · output."""
    weighted = y_sorted.astype(jnp.float32) * sorted_assignments.gate[:, None]
    out = jnp.zeros((num_tokens, y_sorted.shape[-1]), jnp.float32)
    return out.at[sorted_assignments.token].add(weighted)
