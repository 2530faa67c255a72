"""Routing: pure functions from router logits [G, S, E] to decisions, losses and plans.

The logits are float32 unless moe.router_dtype="bfloat16" (Switch Table 2's unstable router).

One module per family, each declaring its RouterFamily (moejax/routing/family.py); the registry
(moejax/routing/registry.py) maps MoeConfig.router to them. `route` runs a config's family and,
for capacity-based dispatch, turns token-choice assignments into the shared capacity plan.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Optional

import jax

from moejax.plan import plan_from_assignment
from moejax.routing.deepseek import deepseek_v3_routing, update_selection_bias
from moejax.routing.dense import dense_routing
from moejax.routing.expert_choice import expert_choice_routing
from moejax.routing.family import RouteInputs, RouterFamily, RouterWeight
from moejax.routing.gshard import gshard_routing
from moejax.routing.noisy_top_k import noisy_top_k_routing
from moejax.routing.registry import FAMILIES, ROUTERS, family
from moejax.routing.top_k import top_k_routing
from moejax.routing.types import Assignment, Routing

if TYPE_CHECKING:
    from moejax.config import MoeConfig

__all__ = [
    "Assignment", "Routing", "RouteInputs", "RouterFamily", "RouterWeight", "FAMILIES",
    "ROUTERS", "family", "route", "routing_k", "top_k_routing", "gshard_routing", "dense_routing",
    "noisy_top_k_routing", "expert_choice_routing", "deepseek_v3_routing",
    "update_selection_bias",
]


def routing_k(cfg: MoeConfig) -> int:
    """Assignments per token that the capacity formula counts (the family's capacity_k)."""
    return family(cfg).capacity_k(cfg)


def route(cfg: MoeConfig, logits: jax.Array, *, capacity: Optional[int], train: bool = True,
          key: Optional[jax.Array] = None, extra_logits: Optional[Mapping[str, jax.Array]] = None,
          bias: Optional[jax.Array] = None, mask: Optional[jax.Array] = None) -> Routing:
    """Runs the router family `cfg.router` on logits [G, S, E].

    capacity: slots per expert per group, or None for dropless dispatch (no plan is built).
    train: training or evaluation (families that route differently at evaluation).
    key: PRNG key for families that draw random numbers (see RouterFamily).
    extra_logits: x·W for each of the family's router_weights, by name (the Router's second
      output), e.g. {"w_noise": x·W_noise} for noisy top-k.
    bias: [E] selection bias.
    mask: [G, S] real tokens (nonzero; None: all). Padding takes no expert slot or dropless row
      (its assignments are withdrawn), adds no load, and takes no part in the losses.
    """
    fam = family(cfg)
    if fam.route is None:
        raise ValueError(f"moe.router={cfg.router!r} has no routing function: it is its own "
                         f"layer (moejax.make_moe_layer)")
    routing = fam.route(cfg, logits, RouteInputs(capacity, train, key, dict(extra_logits or {}),
                                                 bias, mask))
    if mask is not None and routing.assignment is not None:
        a = routing.assignment
        routing = routing.replace(assignment=a.replace(valid=a.valid & (mask[..., None] != 0)))
    if capacity is None or routing.plan is not None:     # dropless, or expert choice's own plan
        return routing
    a = routing.assignment
    plan = plan_from_assignment(a.expert_index, a.gate, a.valid, cfg.num_experts, capacity,
                                a.priority)
    return routing.replace(plan=plan)
