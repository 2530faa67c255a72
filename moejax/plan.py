"""Expert capacity and the capacity plan shared by every capacity-based router.

A plan says, for every expert slot (group g, expert e, slot c), which token of the group fills
it and with what combine weight. Token choice (GShard, Switch, ...) and expert choice (Zhou et
al. 2022) both produce one, so dispatch, combine, expert parallelism and metrics are written
once. A token that no slot points at is dropped: it gets no expert output and the residual
connection carries it.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
from flax import struct


def expert_capacity(group_size: int, num_experts: int, num_selected_experts: int,
                    capacity_factor: float, min_capacity: int) -> int:
    """Slots per expert per group: max(min_capacity, ceil(cf · k · S / E)), at most S.

    moejax multiplies by k as MaxText does (flaxformer uses round(cf · S / E) without k). An
    expert can hold each token at most once, so more than S slots would stay empty.
    """
    # round() first: 1.1 · 100 / 10 is 11.000000000000002 in floating point, not 12 slots.
    c = math.ceil(round(capacity_factor * num_selected_experts * group_size / num_experts, 9))
    return int(min(group_size, max(min_capacity, c)))


@struct.dataclass
class CapacityPlan:
    """Which token fills each expert slot, and its combine weight.

    slot_token: [G, E, C] int32 position in [0, S) of the token in the slot; S marks an empty
      slot (it gathers zeros and scatters nowhere).
    slot_weight: [G, E, C] float32 combine weight; 0 for empty slots.
    num_requested: [G] float32 how many (token, expert) assignments the router asked for before
      capacity was applied (to report the dropped fraction of assignments).
    """
    slot_token: jax.Array
    slot_weight: jax.Array
    num_requested: jax.Array

    @property
    def capacity(self) -> int:
        return self.slot_token.shape[-1]

    def filled(self, group_size: int) -> jax.Array:
        """[G, E, C] bool: which slots hold a token."""
        return self.slot_token < group_size


def positions_in_expert(expert_id: jax.Array, num_experts: int) -> jax.Array:
    """For a list of assignments in priority order, the rank of each within its expert.

    expert_id: [N] int32 in [0, E]; E marks an assignment that takes no slot.
    Returns [N] int32: how many earlier assignments (in list order) went to the same expert.
    A stable sort makes this O(N log N) instead of the O(N·E) one-hot cumulative sum.
    """
    n = expert_id.shape[0]
    order = jnp.argsort(expert_id, stable=True)                      # [N]
    sorted_id = expert_id[order]                                      # [N]
    counts = jnp.bincount(expert_id, length=num_experts + 1)          # [E + 1]
    starts = jnp.cumsum(counts) - counts                              # [E + 1]
    rank_sorted = jnp.arange(n, dtype=jnp.int32) - starts[sorted_id]  # [N]
    return jnp.zeros((n,), jnp.int32).at[order].set(rank_sorted.astype(jnp.int32))


def plan_from_assignment(expert_index: jax.Array, gate: jax.Array, valid: jax.Array,
                         num_experts: int, capacity: int,
                         priority: Optional[jax.Array] = None) -> CapacityPlan:
    """Fills expert slots from token-choice assignments, first choices before second choices.

    expert_index: [G, S, k] int32 chosen experts, best first.
    gate: [G, S, k] float32 combine weights of those choices.
    valid: [G, S, k] bool; False for choices the router withdrew (GShard random routing).
    priority: [G, S] float32 or None. None: tokens take capacity in sequence order (Switch,
      GShard). Otherwise higher priority first (V-MoE batch-prioritized routing uses the top-1
      gate). Either way all first choices are placed before any second choice.
    """
    g, s, k = expert_index.shape
    if priority is None:
        token_order = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (g, s))   # [G, S]
    else:
        token_order = jnp.argsort(-priority, axis=-1, stable=True).astype(jnp.int32)

    def one_group(expert_index, gate, valid, token_order):
        # Assignment list in priority order: rank-major, tokens in token_order.
        eid = jnp.where(valid, expert_index, num_experts)[token_order].T.reshape(-1)  # [k*S]
        tok = jnp.tile(token_order, k)                                               # [k*S]
        gat = gate[token_order].T.reshape(-1)                                        # [k*S]
        pos = positions_in_expert(eid, num_experts)                                  # [k*S]
        keep = (eid < num_experts) & (pos < capacity)
        slot = jnp.where(keep, eid * capacity + pos, num_experts * capacity)         # [k*S]
        slot_token = jnp.full((num_experts * capacity,), s, jnp.int32)
        slot_token = slot_token.at[slot].set(tok, mode="drop")
        slot_weight = jnp.zeros((num_experts * capacity,), gate.dtype)
        slot_weight = slot_weight.at[slot].set(gat, mode="drop")
        return (slot_token.reshape(num_experts, capacity),
                slot_weight.reshape(num_experts, capacity),
                jnp.sum(valid).astype(jnp.float32))

    slot_token, slot_weight, requested = jax.vmap(one_group)(
        expert_index, gate, valid, token_order)
    return CapacityPlan(slot_token, slot_weight, requested)


def tokens_served(plan: CapacityPlan, group_size: int) -> jax.Array:
    """[G, S] int32: how many expert slots hold each token."""
    def one_group(slot_token):
        return jnp.bincount(slot_token.reshape(-1), length=group_size + 1)[:group_size]
    return jax.vmap(one_group)(plan.slot_token)


def dropped_fraction(plan: CapacityPlan, group_size: int,
                     mask: Optional[jax.Array] = None) -> jax.Array:
    """Fraction of tokens that no slot points at (they get no expert output); with a mask
    [G, S], of the real tokens (padding is never routed, so never dropped)."""
    dropped = (tokens_served(plan, group_size) == 0).astype(jnp.float32)   # [G, S]
    if mask is None:
        return jnp.mean(dropped)
    real = (mask != 0).astype(jnp.float32)
    return jnp.sum(dropped * real) / jnp.maximum(jnp.sum(real), 1.0)


def dropped_assignment_fraction(plan: CapacityPlan, group_size: int) -> jax.Array:
    """Fraction of the router's (token, expert) assignments that found no slot."""
    filled = jnp.sum(plan.filled(group_size).astype(jnp.float32))
    requested = jnp.sum(plan.num_requested)
    return jnp.where(requested > 0, 1.0 - filled / jnp.maximum(requested, 1.0), 0.0)
