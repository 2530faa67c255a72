"""DeepSeek-V3 routing: sigmoid affinities, bias-shifted selection, auxiliary-loss-free balance.

DeepSeek-AI 2024, "DeepSeek-V3 Technical Report", section 2.1.2; Wang et al. 2024,
"Auxiliary-Loss-Free Load Balancing Strategy for Mixture-of-Experts".
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from moejax import losses
from moejax.errors import check
from moejax.routing.family import RouteInputs, RouterFamily
from moejax.routing.select import top_k
from moejax.routing.types import Assignment, Routing


def deepseek_v3_routing(logits: jax.Array, bias: Optional[jax.Array], k: int, *,
                        routed_scaling_factor: float = 1.0, renormalize: bool = True,
                        num_expert_groups: int = 1, num_selected_groups: int = 1,
                        mask: Optional[jax.Array] = None) -> Routing:
    """s = sigmoid(u·e); experts chosen by top-k of s + b; gates from s alone.

    logits: [G, S, E] float32 token-to-expert affinities before the sigmoid.
    bias: [E] selection bias b, used only to choose experts (updated by
      update_selection_bias, not by gradients); None for no bias.
    renormalize: gates g = s_chosen / Σ s_chosen (DeepSeek-V3 does); then times
      routed_scaling_factor.
    num_expert_groups / num_selected_groups: group-limited routing: a token uses only experts
      of its num_selected_groups groups with the largest sum of their top-2 biased scores.
    """
    affinity = jax.nn.sigmoid(logits)                                      # [G, S, E]
    choice_score = affinity if bias is None else affinity + bias            # [G, S, E]
    choice_score = limit_to_groups(choice_score, num_expert_groups, num_selected_groups,
                                   top_two_sum)
    _, expert_index = top_k(choice_score, k)                        # [G, S, k]
    expert_index = expert_index.astype(jnp.int32)
    gate = jnp.take_along_axis(affinity, expert_index, axis=-1)            # [G, S, k]
    if renormalize:
        gate = gate / jnp.sum(gate, axis=-1, keepdims=True)
    gate = gate * routed_scaling_factor
    assignment = Assignment(expert_index=expert_index, gate=gate,
                            valid=jnp.ones(gate.shape, bool))
    return Routing(
        probs=affinity / jnp.sum(affinity, axis=-1, keepdims=True),
        losses={"sequence_balance_loss": losses.sequence_balance_loss(affinity, expert_index,
                                                                         mask)},
        assignment=assignment)


def top_two_sum(grouped: jax.Array) -> jax.Array:
    """DeepSeek-V3's group score: the sum of a group's two highest scores ([..., ng, E/ng])."""
    return jnp.sum(top_k(grouped, min(2, grouped.shape[-1]))[0], axis=-1)


def limit_to_groups(score: jax.Array, num_groups: int, num_selected: int, group_score
                    ) -> jax.Array:
    """Group-limited routing: the experts [..., E] are num_groups consecutive groups; only
    those of the num_selected groups with the highest group_score(scores [..., ng, E/ng])
    keep their score, the others get -inf (so top-k never picks them). A no-op for 1 group."""
    if num_groups <= 1:
        return score
    per_group = score.shape[-1] // num_groups
    grouped = score.reshape(*score.shape[:-1], num_groups, per_group)
    _, best_groups = top_k(group_score(grouped), num_selected)              # [..., selected]
    group_mask = jnp.sum(jax.nn.one_hot(best_groups, num_groups), axis=-2) > 0
    expert_mask = jnp.repeat(group_mask, per_group, axis=-1)                # [..., E]
    return jnp.where(expert_mask, score, -jnp.inf)


def update_selection_bias(bias: jax.Array, expert_counts: jax.Array, rate: float) -> jax.Array:
    """One step of auxiliary-loss-free balancing: b_e += γ · sign(mean load − load_e).

    An overloaded expert's bias drops by γ, an underloaded one's rises by γ. Applied by the
    train step after each optimizer update (it is a state update, not a gradient).

    bias: [..., E]; expert_counts: [..., E] tokens routed to each expert in the step's batch
      (leading axes, e.g. stacked layers, are independent).
    """
    counts = expert_counts.astype(jnp.float32)
    mean = jnp.mean(counts, axis=-1, keepdims=True)
    return bias + rate * jnp.sign(mean - counts).astype(bias.dtype)


def _route(cfg, logits: jax.Array, inputs: RouteInputs) -> Routing:
    return deepseek_v3_routing(
        logits, inputs.bias, cfg.num_selected_experts,
        routed_scaling_factor=cfg.routed_scaling_factor, renormalize=cfg.renormalize_gates,
        num_expert_groups=cfg.num_expert_groups, num_selected_groups=cfg.num_selected_groups,
        mask=inputs.mask)


def validate_groups(cfg) -> None:
    """Group-limited routing's config checks (DeepSeek-V2 and V3)."""
    p = "moe."
    check(cfg.num_experts % cfg.num_expert_groups == 0,
          f"{p}num_experts={cfg.num_experts} must be divisible by "
          f"{p}num_expert_groups={cfg.num_expert_groups}")
    if cfg.num_expert_groups > 1:
        per_group = cfg.num_experts // cfg.num_expert_groups
        check(cfg.num_selected_groups * per_group >= cfg.num_selected_experts,
              f"{p}num_selected_groups={cfg.num_selected_groups} groups of {per_group} "
              f"experts cannot hold {p}num_selected_experts={cfg.num_selected_experts}")


FAMILY = RouterFamily(
    name="deepseek_v3", route=_route, validate=validate_groups, selection_bias=True,
    owned_fields=("num_expert_groups", "num_selected_groups", "bias_update_rate",
                  "routed_scaling_factor"),
    paper="DeepSeek-AI 2024, DeepSeek-V3 (section 2.1.2); Wang et al. 2024, "
          "Auxiliary-Loss-Free Load Balancing")
