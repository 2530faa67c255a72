"""Top-k token-choice routing: Switch (k=1), GLaM, ST-MoE, Mixtral (k=2), V-MoE, and more."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from moejax import losses
from moejax.routing.family import RouteInputs, RouterFamily
from moejax.routing.select import top_k
from moejax.routing.types import Assignment, Routing


def top_k_routing(logits: jax.Array, k: int, *, gate_order: str = "softmax_then_top_k",
                  renormalize: bool = False, batch_prioritized: bool = False,
                  mask: Optional[jax.Array] = None) -> Routing:
    """Each token picks its k highest-scoring experts.

    logits: [G, S, E] router logits (float32, or bfloat16 with moe.router_dtype).
    gate_order: "softmax_then_top_k" (Switch, GShard: gates are probabilities over all experts)
      or "top_k_then_softmax" (Mixtral: softmax over the k chosen logits only).
    renormalize: divide the chosen gates by their sum (GShard top-2: g1/(g1+g2), g2/(g1+g2)).
    batch_prioritized: V-MoE (Riquelme et al. 2021): tokens take capacity in order of their
      top-1 router probability (max of the softmax over all experts) instead of sequence order.
    mask: [G, S] real tokens (None: all); padding takes no part in the losses.
    """
    probs = jax.nn.softmax(logits, axis=-1)                      # [G, S, E]
    if gate_order == "softmax_then_top_k":
        gate, expert_index = top_k(probs, k)             # [G, S, k]
    elif gate_order == "top_k_then_softmax":
        top_logits, expert_index = top_k(logits, k)
        gate = jax.nn.softmax(top_logits, axis=-1)
    else:
        raise ValueError(f"unknown gate_order {gate_order!r}")
    if renormalize:
        gate = gate / jnp.sum(gate, axis=-1, keepdims=True)
    return token_choice(probs, logits, expert_index, gate, mask,
                        priority=jnp.max(probs, axis=-1) if batch_prioritized else None)


def token_choice(probs: jax.Array, logits: jax.Array, expert_index: jax.Array,
                 gate: jax.Array, mask: Optional[jax.Array],
                 priority: Optional[jax.Array] = None) -> Routing:
    """The Routing of a token-choice family: each token's k experts [G, S, k] and gates, with
    Switch's load-balance loss on the router probabilities [G, S, E] and the router z-loss on
    its logits (padding in `mask` left out of both)."""
    assignment = Assignment(expert_index=expert_index.astype(jnp.int32), gate=gate,
                            valid=jnp.ones(gate.shape, bool), priority=priority)
    return Routing(
        probs=probs,
        losses={"load_balance_loss": losses.load_balance_loss(probs, expert_index, mask),
                "router_z_loss": losses.router_z_loss(logits, mask)},
        assignment=assignment)


def _route(cfg, logits: jax.Array, inputs: RouteInputs) -> Routing:
    return top_k_routing(logits, cfg.num_selected_experts, gate_order=cfg.gate_order,
                         renormalize=cfg.renormalize_gates,
                         batch_prioritized=cfg.batch_prioritized, mask=inputs.mask)


FAMILY = RouterFamily(
    name="top_k", route=_route,
    paper="Shazeer et al. 2017 (top-k); Switch (Fedus et al. 2021, k=1); GLaM, ST-MoE, "
          "Mixtral (k=2); V-MoE batch priority (Riquelme et al. 2021)")
