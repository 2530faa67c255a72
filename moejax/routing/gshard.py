"""GShard top-2 routing with a random second expert (Lepikhin et al. 2020)."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from moejax.errors import check
from moejax.routing.family import RouteInputs, RouterFamily
from moejax.routing.top_k import top_k_routing
from moejax.routing.types import Routing


def gshard_routing(logits: jax.Array, key: jax.Array, *, batch_prioritized: bool = False,
                   mask: Optional[jax.Array] = None) -> Routing:
    """GShard top-2 (Lepikhin et al. 2020, Algorithm 1) with random second-expert routing.

    Gates of the two best experts are renormalised, g1/(g1+g2) and g2/(g1+g2); the second
    expert is dispatched only if 2·g2 > u, u ~ Uniform(0, 1) per token. The withdrawn choice
    keeps no slot; the first gate is not rescaled.
    """
    routing = top_k_routing(logits, 2, renormalize=True, batch_prioritized=batch_prioritized,
                            mask=mask)
    a = routing.assignment
    u = jax.random.uniform(key, a.gate.shape[:-1])              # [G, S]
    second = 2.0 * a.gate[..., 1] > u                           # [G, S]
    valid = jnp.stack([jnp.ones_like(second), second], axis=-1)
    return routing.replace(assignment=a.replace(valid=valid))


def _route(cfg, logits: jax.Array, inputs: RouteInputs) -> Routing:
    return gshard_routing(logits, inputs.key, batch_prioritized=cfg.batch_prioritized,
                          mask=inputs.mask)


def _validate(cfg) -> None:
    check(cfg.num_selected_experts == 2,
          f"moe.num_selected_experts={cfg.num_selected_experts} must be 2 for "
          f"moe.router='gshard' (random second-expert routing is top-2)")


FAMILY = RouterFamily(
    name="gshard", route=_route, validate=_validate,
    random_in_training=True, random_at_eval=True,
    paper="Lepikhin et al. 2020, GShard (Algorithm 1)")
