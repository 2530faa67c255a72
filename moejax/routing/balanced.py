"""Balanced assignment routing: BASE layers (Lewis et al. 2021) with Sinkhorn-balanced scores
(S-BASE, Clark et al. 2022, "Unified Scaling Laws for Routed Language Models").

Training: the router's scores are balanced by SINKHORN_ITERATIONS Sinkhorn-Knopp iterations
(log domain: every token's row sums to 1, every expert's column to S/E), then each token gets
exactly one expert by a hard assignment that gives every expert ceil(S/E) tokens at most:
tokens in order of their largest balanced score (the most certain first) take their best
expert that still has room. With E dividing S every expert gets exactly S/E tokens; BASE
solves the same balanced assignment exactly (an auction); the greedy pass is this module's
convention. Evaluation: greedy top-1 on the raw scores (no balancing). The combine weight is
sigmoid(logit) of the chosen expert, as in BASE. No auxiliary balance loss is needed; the
router z-loss is reported like every family's.

Choosing a token's expert depends on the whole group, so this family is not causal.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp

from moejax import losses
from moejax.routing.family import RouteInputs, RouterFamily
from moejax.routing.types import Assignment, Routing

SINKHORN_ITERATIONS = 8


def sinkhorn(logits: jax.Array, iterations: int = SINKHORN_ITERATIONS) -> jax.Array:
    """log P [G, S, E] of the balanced plan: alternately rows (tokens) to 1 and columns
    (experts) to S/E, starting from exp(logits); ends on the columns."""
    s, e = logits.shape[-2:]
    log_p = logits.astype(jnp.float32)
    for _ in range(iterations):
        log_p = log_p - jax.nn.logsumexp(log_p, axis=-1, keepdims=True)
        log_p = log_p - jax.nn.logsumexp(log_p, axis=-2, keepdims=True) + math.log(s / e)
    return log_p


def balanced_assignment(scores: jax.Array) -> jax.Array:
    """[G, S, E] scores -> [G, S] int32 experts, each expert taking ceil(S/E) tokens at most:
    tokens in order of their best score (ties: lower position) take their best expert with
    room left."""
    s, e = scores.shape[-2:]
    room = -(-s // e)

    def one_group(group):                                                    # [S, E]
        order = jnp.argsort(-jnp.max(group, axis=-1), stable=True)           # [S]

        def take(left, token):
            row = jnp.where(left > 0, group[token], -jnp.inf)                 # [E]
            expert = jnp.argmax(row).astype(jnp.int32)
            return left.at[expert].add(-1), (token, expert)

        _, (tokens, experts) = jax.lax.scan(take, jnp.full((e,), room, jnp.int32), order)
        return jnp.zeros((s,), jnp.int32).at[tokens].set(experts)

    return jax.vmap(one_group)(jax.lax.stop_gradient(scores))


def balanced_routing(logits: jax.Array, train: bool, mask: Optional[jax.Array] = None
                     ) -> Routing:
    """logits [G, S, E] -> top-1 Assignment with sigmoid gates (see the module docstring)."""
    if train:
        expert = balanced_assignment(sinkhorn(logits))                       # [G, S]
    else:
        expert = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    expert_index = expert[..., None]                                          # [G, S, 1]
    gate = jax.nn.sigmoid(jnp.take_along_axis(logits, expert_index, axis=-1).astype(
        jnp.float32))
    assignment = Assignment(expert_index=expert_index, gate=gate,
                            valid=jnp.ones(gate.shape, bool))
    return Routing(probs=jax.nn.softmax(logits, axis=-1),
                   losses={"router_z_loss": losses.router_z_loss(logits, mask)},
                   assignment=assignment)


def _route(cfg, logits: jax.Array, inputs: RouteInputs) -> Routing:
    del cfg
    return balanced_routing(logits, inputs.train, inputs.mask)


FAMILY = RouterFamily(
    name="balanced", route=_route, causal=False,
    capacity_k=lambda cfg: 1, active_width=lambda cfg: cfg.hidden_dim,
    paper="Lewis et al. 2021, BASE Layers; Clark et al. 2022, Unified Scaling Laws for "
          "Routed Language Models (S-BASE)")
