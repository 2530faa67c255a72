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

Choosing a token's expert depends on the whole group, so this family is not causal. Padding
(a mask) takes no part in either step: the columns are balanced to R/E over a group's R real
tokens, and padding neither takes an expert nor uses up room (at most ceil(R/E) per expert).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from moejax import losses
from moejax.routing.family import RouteInputs, RouterFamily
from moejax.routing.types import Assignment, Routing

SINKHORN_ITERATIONS = 8


def sinkhorn(logits: jax.Array, iterations: int = SINKHORN_ITERATIONS,
             mask: Optional[jax.Array] = None) -> jax.Array:
    """log P [G, S, E] of the balanced plan: alternately rows (tokens) to 1 and columns
    (experts) to S/E (R/E over the R real tokens of a mask [G, S]), starting from exp(logits);
    ends on the columns. Padding rows hold a finite stand-in for −∞."""
    e = logits.shape[-1]
    log_p = logits.astype(jnp.float32)
    real = (jnp.ones(logits.shape[:-1], bool) if mask is None else mask != 0)[..., None]
    column_mass = jnp.log(jnp.maximum(jnp.sum(real, axis=-2, keepdims=True), 1) / e)  # log R/E
    for _ in range(iterations):
        log_p = jnp.where(real, log_p - jax.nn.logsumexp(log_p, axis=-1, keepdims=True), -1e30)
        log_p = log_p - jax.nn.logsumexp(log_p, axis=-2, keepdims=True) + column_mass
    return jnp.where(real, log_p, -1e30)


def balanced_assignment(scores: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
    """[G, S, E] scores -> [G, S] int32 experts, each expert taking ceil(R/E) tokens at most
    (R: the group's real tokens, S without a mask): tokens in order of their best score (ties:
    lower position) take their best expert with room left. Padding comes last and uses no room
    (its expert, the best of what is left, is withdrawn by route())."""
    s, e = scores.shape[-2:]
    real = jnp.ones(scores.shape[:-1], bool) if mask is None else mask != 0   # [G, S]

    def one_group(group, real):                                               # [S, E], [S]
        room = (jnp.sum(real) + e - 1) // e
        best = jnp.where(real, jnp.max(group, axis=-1), -jnp.inf)
        order = jnp.argsort(-best, stable=True)                               # [S]

        def take(left, token):
            row = jnp.where(left > 0, group[token], -jnp.inf)                 # [E]
            expert = jnp.argmax(row).astype(jnp.int32)
            return left.at[expert].add(-real[token].astype(jnp.int32)), (token, expert)

        start = jnp.full((e,), room, jnp.int32)
        _, (tokens, experts) = jax.lax.scan(take, start, order)
        return jnp.zeros((s,), jnp.int32).at[tokens].set(experts)

    return jax.vmap(one_group)(jax.lax.stop_gradient(scores), real)


def balanced_routing(logits: jax.Array, train: bool, mask: Optional[jax.Array] = None
                     ) -> Routing:
    """logits [G, S, E] -> top-1 Assignment with sigmoid gates (see the module docstring)."""
    if train:
        expert = balanced_assignment(sinkhorn(logits, mask=mask), mask)      # [G, S]
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
