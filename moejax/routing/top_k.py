"""Top-k token-choice routing: Switch (k=1), GShard, GLaM, ST-MoE, Mixtral (k=2), and more.

Also the dense softmax mixture of Jacobs et al. 1991, which is token choice with k = E.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from moejax import losses
from moejax.routing.select import top_k
from moejax.routing.types import Assignment, Routing


def top_k_routing(logits: jax.Array, k: int, *, gate_order: str = "softmax_then_top_k",
                  renormalize: bool = False, batch_prioritized: bool = False) -> Routing:
    """Each token picks its k highest-scoring experts.

    logits: [G, S, E] router logits (float32, or bfloat16 with moe.router_dtype).
    gate_order: "softmax_then_top_k" (Switch, GShard: gates are probabilities over all experts)
      or "top_k_then_softmax" (Mixtral: softmax over the k chosen logits only).
    renormalize: divide the chosen gates by their sum (GShard top-2: g1/(g1+g2), g2/(g1+g2)).
    batch_prioritized: V-MoE (Riquelme et al. 2021): tokens take capacity in order of their
      top-1 router probability (max of the softmax over all experts) instead of sequence order.
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
    assignment = Assignment(
        expert_index=expert_index.astype(jnp.int32), gate=gate,
        valid=jnp.ones(gate.shape, bool),
        priority=jnp.max(probs, axis=-1) if batch_prioritized else None)
    return Routing(
        probs=probs,
        losses={"load_balance_loss": losses.load_balance_loss(probs, expert_index),
                "router_z_loss": losses.router_z_loss(logits)},
        assignment=assignment)


def gshard_routing(logits: jax.Array, key: jax.Array, *, batch_prioritized: bool = False
                   ) -> Routing:
    """GShard top-2 (Lepikhin et al. 2020, Algorithm 1) with random second-expert routing.

    Gates of the two best experts are renormalised, g1/(g1+g2) and g2/(g1+g2); the second
    expert is dispatched only if 2·g2 > u, u ~ Uniform(0, 1) per token. The withdrawn choice
    keeps no slot; the first gate is not rescaled.
    """
    routing = top_k_routing(logits, 2, renormalize=True, batch_prioritized=batch_prioritized)
    a = routing.assignment
    u = jax.random.uniform(key, a.gate.shape[:-1])              # [G, S]
    second = 2.0 * a.gate[..., 1] > u                           # [G, S]
    valid = jnp.stack([jnp.ones_like(second), second], axis=-1)
    return routing.replace(assignment=a.replace(valid=valid))


def dense_routing(logits: jax.Array) -> Routing:
    """The classical dense mixture of experts (Jacobs et al. 1991): every expert, softmax gates."""
    probs = jax.nn.softmax(logits, axis=-1)                      # [G, S, E]
    num_experts = logits.shape[-1]
    expert_index = jnp.broadcast_to(jnp.arange(num_experts, dtype=jnp.int32), probs.shape)
    assignment = Assignment(expert_index=expert_index, gate=probs,
                            valid=jnp.ones(probs.shape, bool))
    return Routing(probs=probs, losses={"router_z_loss": losses.router_z_loss(logits)},
                   assignment=assignment)
