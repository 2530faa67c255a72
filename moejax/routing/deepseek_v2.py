"""DeepSeek-V2 routing: softmax affinities, group-limited greedy top-k, scaled gates.

DeepSeek-AI 2024, "DeepSeek-V2: A Strong, Economical, and Efficient Mixture-of-Experts
Language Model", sections 2.2.1-2.2.3 (DeepSeekMoE with device-limited routing). A token's
affinities are the softmax over all routed experts, s = softmax(u·e); with num_expert_groups
> 1 it only considers the experts of its num_selected_groups groups whose highest affinity is
largest (the released models' "group_limited_greedy": DeepSeek-V2 8 groups, 3 chosen;
DeepSeek-V2-Lite no groups); the gates are the k chosen affinities, not renormalised unless
moe.renormalize_gates, times routed_scaling_factor (16.0 for DeepSeek-V2, 1.0 for Lite).
Shared experts are moe.num_shared_experts. Balance: an expert-level auxiliary loss, here the
load-balance loss of moejax.losses (moe.load_balance_loss), and the router z-loss.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from moejax.routing.deepseek import limit_to_groups, validate_groups
from moejax.routing.family import RouteInputs, RouterFamily
from moejax.routing.select import top_k
from moejax.routing.top_k import token_choice
from moejax.routing.types import Routing


def group_max(grouped: jax.Array) -> jax.Array:
    """DeepSeek-V2's group score: a group's highest affinity ([..., ng, E/ng] -> [..., ng])."""
    return jnp.max(grouped, axis=-1)


def deepseek_v2_routing(logits: jax.Array, k: int, *, routed_scaling_factor: float = 1.0,
                        renormalize: bool = False, num_expert_groups: int = 1,
                        num_selected_groups: int = 1, mask: Optional[jax.Array] = None
                        ) -> Routing:
    """logits [G, S, E] float32 -> the k experts of each token and their gates (see above)."""
    probs = jax.nn.softmax(logits, axis=-1)                                # [G, S, E]
    choice = limit_to_groups(probs, num_expert_groups, num_selected_groups, group_max)
    _, expert_index = top_k(choice, k)                                     # [G, S, k]
    gate = jnp.take_along_axis(probs, expert_index, axis=-1)               # [G, S, k]
    if renormalize:
        gate = gate / jnp.sum(gate, axis=-1, keepdims=True)
    return token_choice(probs, logits, expert_index, gate * routed_scaling_factor, mask)


def _route(cfg, logits: jax.Array, inputs: RouteInputs) -> Routing:
    return deepseek_v2_routing(
        logits, cfg.num_selected_experts, routed_scaling_factor=cfg.routed_scaling_factor,
        renormalize=cfg.renormalize_gates, num_expert_groups=cfg.num_expert_groups,
        num_selected_groups=cfg.num_selected_groups, mask=inputs.mask)


FAMILY = RouterFamily(
    name="deepseek_v2", route=_route, validate=validate_groups,
    owned_fields=("num_expert_groups", "num_selected_groups", "routed_scaling_factor"),
    paper="DeepSeek-AI 2024, DeepSeek-V2 (sections 2.2.1-2.2.3)")
