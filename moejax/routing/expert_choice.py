"""Expert-choice routing (Zhou et al. 2022, "Mixture-of-Experts with Expert Choice Routing")."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from moejax import losses
from moejax.errors import check
from moejax.routing.family import RouteInputs, RouterFamily
from moejax.plan import CapacityPlan
from moejax.routing.select import top_k
from moejax.routing.types import Routing


def expert_choice_routing(logits: jax.Array, capacity: int,
                          max_experts_per_token: Optional[int] = None,
                          mask: Optional[jax.Array] = None) -> Routing:
    """Each expert takes the C tokens of its group with the highest router scores.

    Scores are softmax(x·W_g) over experts; the combine weight of a (token, expert) pair is its
    score. A token may be taken by no expert (dropped), or by many. There is no auxiliary loss.
    The choice of a token depends on other tokens of its group, later ones included, so this
    router is not causal.

    logits: [G, S, E] float32; capacity: C slots per expert (C = S·cf/E; cf = 2 by default).
    max_experts_per_token: EC-CAP: a token keeps only its highest-scoring `cap` experts among
      those that chose it; the slots it releases stay empty. (The paper caps with an
      entropy-regularised linear program; this greedy cut keeps the same bound without it.)
    mask: [G, S] real tokens (None: all). Experts choose among real tokens only: padding ranks
      below every real token, and a slot left to padding (fewer real tokens than slots) stays
      empty.
    """
    g, s, num_experts = logits.shape
    probs = jax.nn.softmax(logits, axis=-1)                                   # [G, S, E]
    scores = jnp.swapaxes(probs, 1, 2)                                        # [G, E, S]
    if mask is not None:
        scores = jnp.where(mask[:, None, :] != 0, scores, -1.0)      # below any probability
    slot_weight, slot_token = top_k(scores, capacity)                         # [G, E, C]
    slot_token = slot_token.astype(jnp.int32)
    if mask is not None:
        real = jnp.take_along_axis(jnp.broadcast_to(mask[:, None, :] != 0, scores.shape),
                                   slot_token, axis=-1)                       # [G, E, C]
        slot_token = jnp.where(real, slot_token, s)
        slot_weight = jnp.where(real, slot_weight, 0.0)
    if max_experts_per_token is not None and max_experts_per_token < num_experts:
        gi = jnp.arange(g)[:, None, None]
        ei = jnp.arange(num_experts)[None, :, None]
        chosen = jnp.zeros((g, s, num_experts), bool).at[gi, slot_token, ei].set(True)
        chosen_scores = jnp.where(chosen, probs, -jnp.inf)                   # [G, S, E]
        # the token's best `cap` experts by rank (ties: lower expert index), not by score
        _, best = top_k(chosen_scores, max_experts_per_token)         # [G, S, cap]
        keep_pair = chosen & (jnp.sum(jax.nn.one_hot(best, num_experts, dtype=jnp.int32),
                                      axis=-2) > 0)                           # [G, S, E]
        keep = keep_pair[gi, slot_token, ei]                                  # [G, E, C]
        slot_token = jnp.where(keep, slot_token, s)
        slot_weight = jnp.where(keep, slot_weight, 0.0)
    real_tokens = (jnp.full((g,), s) if mask is None else
                   jnp.sum(mask != 0, axis=-1))                                # [G]
    requested = num_experts * jnp.minimum(capacity, real_tokens).astype(jnp.float32)
    plan = CapacityPlan(slot_token=slot_token, slot_weight=slot_weight, num_requested=requested)
    return Routing(probs=probs, losses={"router_z_loss": losses.router_z_loss(logits, mask)},
                   plan=plan)


def _route(cfg, logits: jax.Array, inputs: RouteInputs) -> Routing:
    return expert_choice_routing(logits, inputs.capacity,
                                 cfg.expert_choice_max_experts_per_token, inputs.mask)


def _validate(cfg) -> None:
    cap = cfg.expert_choice_max_experts_per_token
    check(cap is None or (isinstance(cap, int) and not isinstance(cap, bool) and cap >= 1),
          f"moe.expert_choice_max_experts_per_token={cap!r} must be None or an integer >= 1")


FAMILY = RouterFamily(
    name="expert_choice", route=_route, validate=_validate, choice="expert", causal=False,
    capacity_k=lambda cfg: 1,                       # C = S·cf/E: each expert's share, once
    active_width=lambda cfg: round(cfg.capacity_factor * cfg.hidden_dim),   # cf experts/token
    owned_fields=("expert_choice_max_experts_per_token",),
    paper="Zhou et al. 2022, Mixture-of-Experts with Expert Choice Routing")
