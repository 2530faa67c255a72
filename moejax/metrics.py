"""Per-layer MoE diagnostics: expert load, drops, balance and router statistics.

All values are float32, whatever the router's dtype: scalars, except tokens_per_expert and
expert_counts ([E]) and experts_per_token ([EXPERTS_PER_TOKEN_BINS]). Under a scan over layers
they come out stacked per layer. With a mask [G, S] (real tokens), padding is left out of every
metric: it holds no slot and adds no load (moejax.routing.route), and the per-token averages
and fractions run over real tokens only.
"""

from __future__ import annotations

from typing import Dict, Optional

import jax
import jax.numpy as jnp

from moejax import losses
from moejax import plan as plan_lib
from moejax.routing.types import Routing

EXPERTS_PER_TOKEN_BINS = 5          # tokens processed by 0, 1, 2, 3, and 4 or more experts


def expert_counts(routing: Routing, num_experts: int, group_size: int) -> jax.Array:
    """[E] float32 assignments the router gave each expert (before capacity; for expert
    choice, the tokens each expert took)."""
    a = routing.assignment
    if a is not None:
        eid = jnp.where(a.valid, a.expert_index, num_experts).reshape(-1)
        return jnp.bincount(eid, length=num_experts + 1)[:num_experts].astype(jnp.float32)
    filled = routing.plan.filled(group_size).astype(jnp.float32)       # [G, E, C]
    return jnp.sum(filled, axis=(0, 2))


def experts_per_token(routing: Routing, group_size: int,
                      mask: Optional[jax.Array] = None) -> jax.Array:
    """[EXPERTS_PER_TOKEN_BINS] fraction of tokens processed by 0, 1, 2, 3, 4+ experts.

    With a capacity plan this counts the slots that hold each token (dropped tokens count 0;
    under expert choice a token gets as many experts as chose it, Zhou et al. 2022 Fig. 3);
    dropless routing counts each token's valid assignments.
    """
    plan, bins = routing.plan, EXPERTS_PER_TOKEN_BINS
    if plan is not None:
        token = jnp.where(plan.filled(group_size), plan.slot_token, group_size)   # [G, E, C]
        counts = jax.vmap(lambda t: jnp.bincount(t.reshape(-1), length=group_size + 1)
                          )(token)[:, :group_size]                                 # [G, S]
    else:
        counts = jnp.sum(routing.assignment.valid, axis=-1)                        # [G, S]
    weights = losses.token_weights(counts.shape, mask).reshape(-1)
    histogram = jnp.zeros((bins,), jnp.float32).at[
        jnp.minimum(counts, bins - 1).reshape(-1)].add(weights)
    return histogram / jnp.maximum(jnp.sum(weights), 1.0)


def max_violation(counts: jax.Array) -> jax.Array:
    """MaxVio (Wang et al. 2024): max_e load_e / mean load − 1; 0 when perfectly balanced."""
    mean = jnp.mean(counts)
    return jnp.where(mean > 0, jnp.max(counts) / jnp.maximum(mean, 1e-9) - 1.0, 0.0)


def router_entropy(probs: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
    """Mean over (real) tokens of −Σ_e p_e log p_e (log E for a uniform router, 0 for a
    one-hot one), in float32."""
    probs = probs.astype(jnp.float32)
    logp = jnp.log(jnp.where(probs > 0, probs, 1.0))
    entropy = -jnp.sum(probs * logp, axis=-1)                                  # [...]
    return losses.token_mean(entropy, losses.token_weights(entropy.shape, mask))


def routing_metrics(routing: Routing, logits: jax.Array, group_size: int,
                    mask: Optional[jax.Array] = None) -> Dict[str, jax.Array]:
    """The metrics every MoE layer reports, from its routing decisions and router logits
    (mask: [G, S] real tokens, the one routing was given)."""
    num_experts = logits.shape[-1]
    counts = expert_counts(routing, num_experts, group_size)
    total = jnp.maximum(jnp.sum(counts), 1.0)
    metrics = {
        "expert_counts": counts,
        "tokens_per_expert": counts / total,
        "max_violation": max_violation(counts),
        "router_entropy": router_entropy(routing.probs, mask),
        "router_z": losses.router_z_loss(logits, mask),
        "experts_per_token": experts_per_token(routing, group_size, mask),
        "dropped_fraction": jnp.zeros((), jnp.float32),
        "dropped_assignment_fraction": jnp.zeros((), jnp.float32),
    }
    if routing.plan is not None:
        metrics["dropped_fraction"] = plan_lib.dropped_fraction(routing.plan, group_size, mask)
        metrics["dropped_assignment_fraction"] = plan_lib.dropped_assignment_fraction(
            routing.plan, group_size)
    return metrics
