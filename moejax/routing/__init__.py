"""Routing: pure functions from router logits [G, S, E] to decisions, losses and plans.

The logits are float32 unless moe.router_dtype="bfloat16" (Switch Table 2's unstable router).

One function per family; `route` picks one from a MoeConfig and, for capacity-based dispatch,
turns token-choice assignments into the shared capacity plan.
"""

from __future__ import annotations

from typing import Optional

import jax

from moejax.config import MoeConfig
from moejax.plan import plan_from_assignment
from moejax.routing.deepseek import deepseek_v3_routing, update_selection_bias
from moejax.routing.expert_choice import expert_choice_routing
from moejax.routing.noisy_top_k import noisy_top_k_routing
from moejax.routing.top_k import dense_routing, gshard_routing, top_k_routing
from moejax.routing.types import Assignment, Routing

__all__ = [
    "Assignment", "Routing", "route", "top_k_routing", "gshard_routing", "dense_routing",
    "noisy_top_k_routing", "expert_choice_routing", "deepseek_v3_routing",
    "update_selection_bias", "routing_k",
]


def routing_k(cfg: MoeConfig) -> int:
    """Assignments per token that the capacity formula counts: k, E for dense, 1 for expert choice."""
    if cfg.router == "dense":
        return cfg.num_experts
    if cfg.router == "expert_choice":
        return 1
    return cfg.num_selected_experts


def route(cfg: MoeConfig, logits: jax.Array, *, capacity: Optional[int],
          key: Optional[jax.Array] = None, noise_logits: Optional[jax.Array] = None,
          bias: Optional[jax.Array] = None) -> Routing:
    """Runs the router family `cfg.router` on logits [G, S, E].

    capacity: slots per expert per group, or None for dropless dispatch (no plan is built).
    key: PRNG key for routers that sample (gshard, noisy_top_k in training); None at eval
      for noisy_top_k (no noise). gshard needs a key always.
    noise_logits: [G, S, E] x·W_noise for noisy_top_k.
    bias: [E] selection bias for deepseek_v3.
    """
    k = cfg.num_selected_experts
    if cfg.router == "top_k":
        routing = top_k_routing(logits, k, gate_order=cfg.gate_order,
                                renormalize=cfg.renormalize_gates,
                                batch_prioritized=cfg.batch_prioritized)
    elif cfg.router == "gshard":
        routing = gshard_routing(logits, key, batch_prioritized=cfg.batch_prioritized)
    elif cfg.router == "noisy_top_k":
        routing = noisy_top_k_routing(logits, noise_logits, k, key)
    elif cfg.router == "deepseek_v3":
        routing = deepseek_v3_routing(
            logits, bias, k, routed_scaling_factor=cfg.routed_scaling_factor,
            renormalize=cfg.renormalize_gates, num_expert_groups=cfg.num_expert_groups,
            num_selected_groups=cfg.num_selected_groups)
    elif cfg.router == "dense":
        routing = dense_routing(logits)
    elif cfg.router == "expert_choice":
        return expert_choice_routing(logits, capacity,
                                     cfg.expert_choice_max_experts_per_token)
    else:
        raise ValueError(f"moe.router={cfg.router!r} has no routing function")
    if capacity is None:
        return routing
    a = routing.assignment
    plan = plan_from_assignment(a.expert_index, a.gate, a.valid, cfg.num_experts, capacity,
                                a.priority)
    return routing.replace(plan=plan)
