"""Per-layer MoE diagnostics: expert load, drops, balance and router statistics.

All values are float32 scalars except tokens_per_expert and expert_counts ([E]). Under a scan
over layers they come out stacked per layer.
"""

from __future__ import annotations

from typing import Dict

import jax
import jax.numpy as jnp

from moejax import plan as plan_lib
from moejax.routing.types import Routing


def expert_counts(routing: Routing, num_experts: int, group_size: int) -> jax.Array:
    """[E] float32 assignments the router gave each expert (before capacity; for expert
    choice, the tokens each expert took)."""
    a = routing.assignment
    if a is not None:
        eid = jnp.where(a.valid, a.expert_index, num_experts).reshape(-1)
        return jnp.bincount(eid, length=num_experts + 1)[:num_experts].astype(jnp.float32)
    filled = routing.plan.filled(group_size).astype(jnp.float32)       # [G, E, C]
    return jnp.sum(filled, axis=(0, 2))


def max_violation(counts: jax.Array) -> jax.Array:
    """MaxVio (Wang et al. 2024): max_e load_e / mean load − 1; 0 when perfectly balanced."""
    mean = jnp.mean(counts)
    return jnp.where(mean > 0, jnp.max(counts) / jnp.maximum(mean, 1e-9) - 1.0, 0.0)


def router_entropy(probs: jax.Array) -> jax.Array:
    """Mean over tokens of −Σ_e p_e log p_e (log E for a uniform router, 0 for a one-hot one)."""
    logp = jnp.log(jnp.where(probs > 0, probs, 1.0))
    return jnp.mean(-jnp.sum(probs * logp, axis=-1))


def routing_metrics(routing: Routing, logits: jax.Array, group_size: int) -> Dict[str, jax.Array]:
    """The metrics every MoE layer reports, from its routing decisions and router logits."""
    num_experts = logits.shape[-1]
    counts = expert_counts(routing, num_experts, group_size)
    total = jnp.maximum(jnp.sum(counts), 1.0)
    metrics = {
        "expert_counts": counts,
        "tokens_per_expert": counts / total,
        "max_violation": max_violation(counts),
        "router_entropy": router_entropy(routing.probs),
        "router_z": jnp.mean(jnp.square(jax.nn.logsumexp(logits, axis=-1))),
        "dropped_fraction": jnp.zeros((), jnp.float32),
        "dropped_assignment_fraction": jnp.zeros((), jnp.float32),
    }
    if routing.plan is not None:
        metrics["dropped_fraction"] = plan_lib.dropped_fraction(routing.plan, group_size)
        metrics["dropped_assignment_fraction"] = plan_lib.dropped_assignment_fraction(
            routing.plan, group_size)
    return metrics
