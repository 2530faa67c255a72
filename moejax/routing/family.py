"""What a router family is, declared in one object: one row of the routing registry.

Everything that differs between routing papers lives in a family's row, so the layer, the
router, the config checks and the FLOP-matched dense baseline ask the row and never compare
router names (moejax/routing/registry.py holds the table).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional, Tuple

import jax

from moejax.routing.types import Routing


@dataclasses.dataclass(frozen=True)
class RouteInputs:
    """What a routing function may need besides the logits [G, S, E].

    capacity: slots per expert per group, or None for dropless dispatch.
    train: training (True) or evaluation.
    key: a PRNG key when the family is random (None at evaluation unless random_at_eval).
    extra_logits: x·W for each of the family's router_weights, by name ([G, S, columns]).
    bias: [E] the selection bias (families with selection_bias).
    mask: [G, S] real tokens (nonzero), None when every token is real. A family keeps padding
      out of its losses and, if it builds its own plan, out of its slots; route() withdraws
      padding's token-choice assignments.
    """
    capacity: Optional[int] = None
    train: bool = True
    key: Optional[jax.Array] = None
    extra_logits: Mapping[str, jax.Array] = dataclasses.field(default_factory=dict)
    bias: Optional[jax.Array] = None
    mask: Optional[jax.Array] = None


@dataclasses.dataclass(frozen=True)
class RouterWeight:
    """A router weight matrix [D, columns(cfg)] beyond W_g, initialised to zeros (Shazeer et
    al.'s W_noise) or N(0, moe.router_init_std²); the router passes x·W to the family."""
    name: str
    columns: Callable[[Any], int]
    init: str = "normal"


def selected_k(cfg) -> int:
    """k experts per token: what most families count in the capacity formula."""
    return cfg.num_selected_experts


def selected_width(cfg) -> int:
    """k·F: the routed hidden width a token passes through (top-k token choice)."""
    return cfg.num_selected_experts * cfg.hidden_dim


def no_checks(cfg) -> None:
    del cfg


@dataclasses.dataclass(frozen=True)
class RouterFamily:
    """One routing family.

    name: its MoeConfig.router value. paper: where it comes from.
    route: (MoeConfig, logits [G, S, E], RouteInputs) -> Routing, with a token-choice
      Assignment (the layer turns it into a capacity plan) or, for expert-choice families,
      the plan itself. None for families that are their own layer (Soft MoE).
    choice: 'token' (tokens pick experts; can run dropless), 'expert' (experts pick tokens) or
      'soft' (no discrete choice: its own layer, moejax.SoftMoeLayer).
    causal: whether a token's routing depends on that token alone (so it can run in a causal
      decoder without moe.allow_non_causal_routing).
    random_in_training / random_at_eval: whether routing draws random numbers in training, and
      at evaluation too (with a fixed key, so evaluating never moves the training stream).
    router_weights: extra router weight matrices (RouterWeight), e.g. noisy top-k's W_noise.
    selection_bias: whether the router keeps a bias used only to choose experts, updated from
      its training load (DeepSeek-V3's loss-free balancing).
    owned_fields: MoeConfig fields that only this family reads; any other family refuses a
      non-default value for them.
    capacity_k: (MoeConfig) -> assignments per token that the capacity formula counts.
    full_capacity: every expert takes every token of its group (capacity = S).
    active_width: (MoeConfig) -> the routed hidden width a token passes through on average,
      the FLOP-matched dense baseline's width (shared experts are added by the config); None
      where a token has no per-token width.
    validate: (MoeConfig) -> None, raising one ConfigError line for a family-specific mistake.
    """
    name: str
    paper: str
    route: Optional[Callable[[Any, jax.Array, RouteInputs], Routing]]
    choice: str = "token"
    causal: bool = True
    random_in_training: bool = False
    random_at_eval: bool = False
    router_weights: Tuple[RouterWeight, ...] = ()
    selection_bias: bool = False
    owned_fields: Tuple[str, ...] = ()
    capacity_k: Callable[[Any], int] = selected_k
    full_capacity: bool = False
    active_width: Optional[Callable[[Any], int]] = selected_width
    validate: Callable[[Any], None] = no_checks
