"""The dense softmax mixture of experts (Jacobs et al. 1991): token choice with k = E."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from moejax import losses
from moejax.routing.family import RouteInputs, RouterFamily
from moejax.routing.types import Assignment, Routing


def dense_routing(logits: jax.Array, mask: Optional[jax.Array] = None) -> Routing:
    """The classical dense mixture of experts (Jacobs et al. 1991): every expert, softmax gates."""
    probs = jax.nn.softmax(logits, axis=-1)                      # [G, S, E]
    num_experts = logits.shape[-1]
    expert_index = jnp.broadcast_to(jnp.arange(num_experts, dtype=jnp.int32), probs.shape)
    assignment = Assignment(expert_index=expert_index, gate=probs,
                            valid=jnp.ones(probs.shape, bool))
    return Routing(probs=probs, losses={"router_z_loss": losses.router_z_loss(logits, mask)},
                   assignment=assignment)


def _route(cfg, logits: jax.Array, inputs: RouteInputs) -> Routing:
    del cfg
    return dense_routing(logits, inputs.mask)


FAMILY = RouterFamily(
    name="dense", route=_route, full_capacity=True,
    capacity_k=lambda cfg: cfg.num_experts,
    active_width=lambda cfg: cfg.num_experts * cfg.hidden_dim,
    paper="Jacobs et al. 1991, Adaptive Mixtures of Local Experts")
