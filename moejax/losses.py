"""Auxiliary router losses, as pure functions of router outputs (unweighted).

The layer multiplies each by its MoeConfig coefficient. Every function computes in float32
whatever its inputs' dtype (a bfloat16 router, moe.router_dtype, routes in bfloat16, but its
losses are not rounded to bfloat16).

mask: [G, S] (True, or nonzero, for a real token; None: every token is real). Padding takes no
part in any loss: means and sums run over real tokens only, as if the pads were not there, and
a group without real tokens adds nothing (flaxformer's routers mask padding the same way).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp


def token_weights(shape, mask: Optional[jax.Array]) -> jax.Array:
    """float32 weights of the tokens of `shape` (the per-token shape, e.g. [G, S]): 1 for a
    real token, 0 for padding (all ones without a mask)."""
    if mask is None:
        return jnp.ones(shape, jnp.float32)
    return (mask != 0).astype(jnp.float32)


def group_mean(x: jax.Array, weights: jax.Array) -> jax.Array:
    """[G, S, ...] -> [G, ...]: the mean over each group's real tokens (0 for a group of
    padding only)."""
    w = weights.reshape(weights.shape + (1,) * (x.ndim - 2))
    return jnp.sum(x * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)


def token_mean(x: jax.Array, weights: jax.Array) -> jax.Array:
    """Mean of x [G, S] over all real tokens (0 if there are none)."""
    return jnp.sum(x * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def mean_over_groups(x: jax.Array, weights: jax.Array) -> jax.Array:
    """Mean of a per-group x [G] over the groups that hold a real token."""
    present = (jnp.sum(weights, axis=1) > 0).astype(jnp.float32)
    return jnp.sum(x * present) / jnp.maximum(jnp.sum(present), 1.0)


def load_balance_loss(probs: jax.Array, expert_index: jax.Array,
                      mask: Optional[jax.Array] = None) -> jax.Array:
    """Switch Transformer load-balancing loss (Fedus et al. 2021, eq. 4) without α.

    E · Σ_e f_e · P_e per group, averaged over groups: f_e is the fraction of the group's tokens
    with e among their top-k choices (before capacity), P_e the mean router probability of e.
    Perfectly uniform routing gives k (1 for Switch). For k = 1 this is GShard's aux loss
    (1/E)·Σ_e (c_e/S)·m_e times E².

    probs: [G, S, E] router probabilities; expert_index: [G, S, k] chosen experts.
    """
    num_experts = probs.shape[-1]
    w = token_weights(probs.shape[:2], mask)                                 # [G, S]
    chosen = jax.nn.one_hot(expert_index, num_experts, dtype=jnp.float32)   # [G, S, k, E]
    f = group_mean(jnp.max(chosen, axis=-2), w)                              # [G, E]
    p = group_mean(probs.astype(jnp.float32), w)                             # [G, E]
    return mean_over_groups(num_experts * jnp.sum(f * p, axis=-1), w)


def router_z_loss(logits: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
    """ST-MoE router z-loss (Zoph et al. 2022, eq. 5): mean over tokens of logsumexp(x)².

    logits: [..., E]; mask: logits.shape[:-1]."""
    z = jnp.square(jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1))   # [...]
    return token_mean(z, token_weights(z.shape, mask))


def cv_squared(x: jax.Array, eps: float = 1e-10) -> jax.Array:
    """Squared coefficient of variation of a vector: population variance / mean²."""
    x = x.astype(jnp.float32)
    mean = jnp.mean(x)
    return jnp.mean(jnp.square(x - mean)) / (jnp.square(mean) + eps)


def importance_loss(gates: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
    """Shazeer et al. 2017 importance loss without w_importance: CV(Σ_x G(x))².

    gates: [G, S, E] full gate vectors (zero for unselected experts), summed over the batch.
    """
    w = token_weights(gates.shape[:2], mask)[..., None]
    return cv_squared(jnp.sum(gates * w, axis=(0, 1)))


def load_loss(prob_selected: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
    """Shazeer et al. 2017 load loss without w_load: CV(Σ_x P(x, e))².

    prob_selected: [G, S, E] probability that expert e stays in token x's top-k when its noise
      is resampled (the smooth load estimator of the paper's appendix A).
    """
    w = token_weights(prob_selected.shape[:2], mask)[..., None]
    return cv_squared(jnp.sum(prob_selected * w, axis=(0, 1)))


def sequence_balance_loss(affinity: jax.Array, expert_index: jax.Array,
                          mask: Optional[jax.Array] = None) -> jax.Array:
    """DeepSeek-V3 complementary sequence-wise balance loss without α (eqs. 17-20).

    Per sequence of T tokens: Σ_i f_i · P_i with f_i = E / (k·T) · Σ_t 1[i ∈ top-k(t)] and
    P_i = (1/T) Σ_t s'_{i,t}, s' the affinities normalised over all experts. Uniform routing
    gives 1. Each routing group counts as one sequence; averaged over groups.

    affinity: [G, S, E] sigmoid scores s; expert_index: [G, S, k] selected experts. With a
    mask, T is each group's count of real tokens.
    """
    num_experts = affinity.shape[-1]
    k = expert_index.shape[-1]
    w = token_weights(affinity.shape[:2], mask)                                # [G, S]
    chosen = jax.nn.one_hot(expert_index, num_experts, dtype=jnp.float32)      # [G, S, k, E]
    f = group_mean(jnp.sum(chosen, axis=2), w) * num_experts / k               # [G, E]
    affinity = affinity.astype(jnp.float32)
    normalised = affinity / jnp.sum(affinity, axis=-1, keepdims=True)          # [G, S, E]
    p = group_mean(normalised, w)                                               # [G, E]
    return mean_over_groups(jnp.sum(f * p, axis=-1), w)
