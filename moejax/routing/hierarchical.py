"""Hierarchical mixtures of experts (Jordan & Jacobs 1994): a gate over groups of experts and
a gate within each group; an expert's mixture weight is the product of the two.

    g_i(x)   = softmax_i(x·W_groups)            over the moe.num_expert_groups groups
    g_j|i(x) = softmax_j(x·W_g) within group i  over its E / num_expert_groups experts
    y        = Σ_i g_i Σ_j g_j|i · f_ij(x)

'hierarchical_dense' is the paper's form: every expert on every token. 'hierarchical' is the
sparse form: each token's top-1 group and its top-k experts (moe.num_selected_experts) within
that group, with the same product weights (not renormalised), dispatched through capacity plans
like every token-choice family. The Switch load-balancing loss is computed on the product
distribution, so moe.load_balance_loss works as for top-k routing.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from moejax.errors import check
from moejax.routing.family import RouteInputs, RouterFamily, RouterWeight
from moejax.routing.select import top_k
from moejax.routing.top_k import token_choice
from moejax.routing.types import Routing


def mixture_weights(logits: jax.Array, group_logits: jax.Array) -> jax.Array:
    """[G, S, E] expert logits and [G, S, ng] group logits -> [G, S, E] g_i · g_j|i."""
    *lead, e = logits.shape
    ng = group_logits.shape[-1]
    within = jax.nn.softmax(logits.astype(jnp.float32).reshape(*lead, ng, e // ng), axis=-1)
    top = jax.nn.softmax(group_logits.astype(jnp.float32), axis=-1)[..., None]
    return (top * within).reshape(*lead, e)


def hierarchical_routing(logits: jax.Array, group_logits: jax.Array, k: int, *,
                         dense: bool, mask: Optional[jax.Array] = None) -> Routing:
    """Dense: all E experts with their mixture weights. Sparse: the top-1 group's top-k."""
    weights = mixture_weights(logits, group_logits)                          # [G, S, E]
    *lead, e = logits.shape
    ng = group_logits.shape[-1]
    if dense:
        expert_index = jnp.broadcast_to(jnp.arange(e, dtype=jnp.int32), weights.shape)
        gate = weights
    else:
        per_group = e // ng
        group = jnp.argmax(group_logits, axis=-1).astype(jnp.int32)          # [G, S]
        in_group = jnp.take_along_axis(weights.reshape(*lead, ng, per_group),
                                       group[..., None, None], axis=-2)[..., 0, :]
        gate, local = top_k(in_group, k)                                     # [G, S, k]
        expert_index = (group[..., None] * per_group + local).astype(jnp.int32)
    return token_choice(weights, logits, expert_index, gate, mask)


def _router(dense: bool):
    def route(cfg, logits: jax.Array, inputs: RouteInputs) -> Routing:
        return hierarchical_routing(logits, inputs.extra_logits["w_groups"],
                                    cfg.num_selected_experts, dense=dense, mask=inputs.mask)
    return route


def _validate(cfg) -> None:
    ng = cfg.num_expert_groups
    check(ng >= 2 and cfg.num_experts % ng == 0,
          f"moe.num_expert_groups={ng} must be >= 2 and divide moe.num_experts="
          f"{cfg.num_experts} for moe.router={cfg.router!r}")
    check(cfg.num_selected_experts <= cfg.num_experts // ng,
          f"moe.num_selected_experts={cfg.num_selected_experts} must be <= the "
          f"{cfg.num_experts // ng} experts of a group for moe.router={cfg.router!r}")


GROUPS = (RouterWeight("w_groups", lambda cfg: cfg.num_expert_groups),)
PAPER = "Jordan & Jacobs 1994, Hierarchical Mixtures of Experts and the EM Algorithm"

FAMILY = RouterFamily(
    name="hierarchical", route=_router(dense=False), validate=_validate,
    router_weights=GROUPS, owned_fields=("num_expert_groups",), paper=PAPER)

DENSE_FAMILY = RouterFamily(
    name="hierarchical_dense", route=_router(dense=True), validate=_validate,
    router_weights=GROUPS, owned_fields=("num_expert_groups",), full_capacity=True,
    capacity_k=lambda cfg: cfg.num_experts,
    active_width=lambda cfg: cfg.num_experts * cfg.hidden_dim, paper=PAPER)
