"""Noisy top-k gating (Shazeer et al. 2017, "Outrageously Large Neural Networks")."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from jax.scipy.stats import norm

from moejax import losses
from moejax.routing.family import RouteInputs, RouterFamily, RouterWeight
from moejax.routing.select import top_k
from moejax.routing.types import Assignment, Routing

# Floor on the noise standard deviation, as in the paper's reference implementation.
NOISE_EPSILON = 1e-2


def noisy_top_k_routing(clean_logits: jax.Array, noise_logits: jax.Array, k: int,
                        key: Optional[jax.Array], mask: Optional[jax.Array] = None) -> Routing:
    """H(x)_i = (x·W_g)_i + N(0, 1)·softplus((x·W_noise)_i); keep the top k of H, softmax over them.

    clean_logits, noise_logits: [G, S, E] float32 x·W_g and x·W_noise.
    key: PRNG key for the noise; None at evaluation (H = clean logits).
    Losses: importance CV(Σ G(x))² and load CV(Σ P(x, i))², where P(x, i) is the probability,
    through the normal CDF, that expert i stays in the top k when its own noise is resampled.
    """
    num_experts = clean_logits.shape[-1]
    noise_std = jax.nn.softplus(noise_logits) + NOISE_EPSILON             # [G, S, E]
    if key is None:
        noisy = clean_logits
    else:
        noisy = clean_logits + jax.random.normal(key, clean_logits.shape) * noise_std
    top = min(k + 1, num_experts)
    top_values, top_index = top_k(noisy, top)                     # [G, S, k+1]
    expert_index = top_index[..., :k].astype(jnp.int32)
    gate = jax.nn.softmax(top_values[..., :k], axis=-1)                   # [G, S, k]
    gates_full = jnp.sum(jax.nn.one_hot(expert_index, num_experts) * gate[..., None], axis=-2)

    if k < num_experts:
        # Expert i is in the top k iff its noisy logit beats the k-th best of the others: the
        # (k+1)-th value if i is in, the k-th value if it is out.
        threshold_if_in = top_values[..., k:k + 1]                        # [G, S, 1]
        threshold_if_out = top_values[..., k - 1:k]                       # [G, S, 1]
        is_in = noisy > threshold_if_in
        prob_if_in = norm.cdf((clean_logits - threshold_if_in) / noise_std)
        prob_if_out = norm.cdf((clean_logits - threshold_if_out) / noise_std)
        prob_selected = jnp.where(is_in, prob_if_in, prob_if_out)         # [G, S, E]
    else:
        prob_selected = jnp.ones_like(clean_logits)

    assignment = Assignment(expert_index=expert_index, gate=gate,
                            valid=jnp.ones(gate.shape, bool))
    return Routing(
        probs=gates_full,
        losses={"importance_loss": losses.importance_loss(gates_full, mask),
                "load_loss": losses.load_loss(prob_selected, mask),
                "router_z_loss": losses.router_z_loss(clean_logits, mask)},
        assignment=assignment)


def _route(cfg, logits: jax.Array, inputs: RouteInputs) -> Routing:
    return noisy_top_k_routing(logits, inputs.extra_logits["w_noise"],
                               cfg.num_selected_experts, inputs.key, inputs.mask)


FAMILY = RouterFamily(
    name="noisy_top_k", route=_route, random_in_training=True,
    router_weights=(RouterWeight("w_noise", lambda cfg: cfg.num_experts, init="zeros"),),
    paper="Shazeer et al. 2017, Outrageously Large Neural Networks (noisy top-k gating)")
