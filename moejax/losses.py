"""Auxiliary router losses, as pure functions of router outputs (unweighted).

The layer multiplies each by its MoeConfig coefficient. Every function computes in float32
whatever its inputs' dtype (a bfloat16 router, moe.router_dtype, routes in bfloat16, but its
losses are not rounded to bfloat16).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def load_balance_loss(probs: jax.Array, expert_index: jax.Array) -> jax.Array:
    """Switch Transformer load-balancing loss (Fedus et al. 2021, eq. 4) without α.

    E · Σ_e f_e · P_e per group, averaged over groups: f_e is the fraction of the group's tokens
    with e among their top-k choices (before capacity), P_e the mean router probability of e.
    Perfectly uniform routing gives k (1 for Switch). For k = 1 this is GShard's aux loss
    (1/E)·Σ_e (c_e/S)·m_e times E².

    probs: [G, S, E] router probabilities; expert_index: [G, S, k] chosen experts.
    """
    num_experts = probs.shape[-1]
    chosen = jax.nn.one_hot(expert_index, num_experts, dtype=jnp.float32)   # [G, S, k, E]
    f = jnp.mean(jnp.max(chosen, axis=-2), axis=-2)                          # [G, E]
    p = jnp.mean(probs.astype(jnp.float32), axis=-2)                                             # [G, E]
    return jnp.mean(num_experts * jnp.sum(f * p, axis=-1))


def router_z_loss(logits: jax.Array) -> jax.Array:
    """ST-MoE router z-loss (Zoph et al. 2022, eq. 5): mean over tokens of logsumexp(x)²."""
    return jnp.mean(jnp.square(jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1)))


def cv_squared(x: jax.Array, eps: float = 1e-10) -> jax.Array:
    """Squared coefficient of variation of a vector: population variance / mean²."""
    x = x.astype(jnp.float32)
    mean = jnp.mean(x)
    return jnp.mean(jnp.square(x - mean)) / (jnp.square(mean) + eps)


def importance_loss(gates: jax.Array) -> jax.Array:
    """Shazeer et al. 2017 importance loss without w_importance: CV(Σ_x G(x))².

    gates: [G, S, E] full gate vectors (zero for unselected experts), summed over the batch.
    """
    return cv_squared(jnp.sum(gates, axis=(0, 1)))


def load_loss(prob_selected: jax.Array) -> jax.Array:
    """Shazeer et al. 2017 load loss without w_load: CV(Σ_x P(x, e))².

    prob_selected: [G, S, E] probability that expert e stays in token x's top-k when its noise
      is resampled (the smooth load estimator of the paper's appendix A).
    """
    return cv_squared(jnp.sum(prob_selected, axis=(0, 1)))


def sequence_balance_loss(affinity: jax.Array, expert_index: jax.Array) -> jax.Array:
    """DeepSeek-V3 complementary sequence-wise balance loss without α (eqs. 17-20).

    Per sequence of T tokens: Σ_i f_i · P_i with f_i = E / (k·T) · Σ_t 1[i ∈ top-k(t)] and
    P_i = (1/T) Σ_t s'_{i,t}, s' the affinities normalised over all experts. Uniform routing
    gives 1. Each routing group counts as one sequence; averaged over groups.

    affinity: [G, S, E] sigmoid scores s; expert_index: [G, S, k] selected experts.
    """
    num_experts = affinity.shape[-1]
    k = expert_index.shape[-1]
    chosen = jax.nn.one_hot(expert_index, num_experts, dtype=jnp.float32)      # [G, S, k, E]
    f = jnp.sum(chosen, axis=(1, 2)) * num_experts / (k * affinity.shape[1])   # [G, E]
    affinity = affinity.astype(jnp.float32)
    normalised = affinity / jnp.sum(affinity, axis=-1, keepdims=True)          # [G, S, E]
    p = jnp.mean(normalised, axis=1)                                            # [G, E]
    return jnp.mean(jnp.sum(f * p, axis=-1))
