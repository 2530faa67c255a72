"""MoeConfig: every knob of one MoE layer, validated before anything is traced.

Papers differ in these values, never in code branches. The field names follow the papers
(capacity_factor, num_selected_experts, router_z_loss ...). A config can be built from keyword
arguments or from an ml_collections ConfigDict (`MoeConfig.from_dict(config.moe)`); an unknown or
invalid field raises one ConfigError line naming it, before any compilation.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Mapping, Optional

import numpy as np

from moejax.errors import ConfigError, check, check_choice
from moejax.routing.registry import FAMILIES, ROUTERS, TOKEN_CHOICE_ROUTERS, family

# Routing families: moejax/routing/registry.py (ROUTERS: every MoeConfig.router name;
# TOKEN_CHOICE_ROUTERS: those that choose experts per token, and so can run dropless).
GATE_ORDERS = ("softmax_then_top_k", "top_k_then_softmax")
DISPATCHES = ("index", "einsum", "dropless")
GROUPED_MATMULS = ("auto", "ragged_dot", "blocks", "megablox")
DROPLESS_ALL_TO_ALLS = ("auto", "ragged", "padded")
ACTIVATIONS = ("relu", "gelu", "silu", "geglu", "swiglu")
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class MoeConfig:
    """Configuration of one MoE layer (moejax.layer.MoeLayer).

    Routing:
      router: one of ROUTERS.
        top_k: token choice, k = num_selected_experts (Switch k=1; GShard/GLaM/ST-MoE/Mixtral k=2).
        gshard: top-2 with GShard's random second-expert routing (2·g2 > U(0, 1)).
        noisy_top_k: Shazeer et al. 2017 noisy top-k gating with importance and load losses.
        expert_choice: Zhou et al. 2022; each expert takes its top-C tokens of a group.
        deepseek_v3: sigmoid affinities, top-k on affinity + selection bias, optional groups.
        deepseek_v2: softmax affinities, top-k within the groups of highest affinity, gates
          not renormalised by default (DeepSeek-V2, V2-Lite).
        dense: Jacobs et al. 1991 softmax mixture; every expert sees every token.
        soft_moe: Puigcerver et al. 2023 Soft MoE (its own layer, moejax.soft_moe): every
          expert slot takes a softmax-weighted mix of the group's tokens; nothing is dropped.
      num_experts: E routed experts.
      num_selected_experts: k experts per token (token-choice routers).
      gate_order: softmax over all experts then top-k (Switch/GShard) or top-k then softmax
        over the chosen logits (Mixtral).
      renormalize_gates: divide the chosen gates by their sum (GShard top-2, DeepSeek-V3).
      batch_prioritized: V-MoE batch-prioritized routing (tokens take capacity in order of their
        top-1 gate) instead of sequence order.
      jitter_eps: Switch multiplicative router-input jitter U(1-eps, 1+eps), training only.
      router_init_std: router weights start N(0, router_init_std²) (Switch: 0.02).
      expert_choice_max_experts_per_token: EC-CAP: a token keeps at most this many of the
        experts that chose it (highest scores first); None for no cap.
      causal: the layer sits in a causal decoder (set by the model).
      allow_non_causal_routing: let expert choice run in a causal decoder anyway (it uses the
        scores of future tokens to pick, so it leaks the future during training).
      routed_scaling_factor: DeepSeek-V2/V3 multiply the gates by this (V2 16.0, V3 2.5).
      num_expert_groups, num_selected_groups: DeepSeek-V2/V3 group-limited routing: experts in
        num_expert_groups groups, a token only uses experts of its num_selected_groups best
        groups (a group's score: V3 the sum of its top-2 biased affinities, V2 its highest
        affinity). 1/1 = off.
      bias_update_rate: γ of DeepSeek-V3 auxiliary-loss-free balancing (0 = off).
      slots_per_expert: Soft MoE slots per expert (each slot is one expert input row).

    Capacity and dispatch:
      group_size: S tokens per routing group; the layer input [B, L, D] is cut into
        G = B·L / S groups. None: one group per sequence (S = L).
      capacity_factor, eval_capacity_factor: capacity = max(min_capacity,
        ceil(capacity_factor · k · S / E)), capped at S; train and eval factors (Switch 1.25/2.0).
      min_capacity: lower bound on slots per expert per group.
      dispatch: index (gather/scatter; default), einsum (GShard one-hot), dropless (no capacity).
      grouped_matmul: dropless expert compute: ragged_dot (TPU/GPU), blocks (moejax.grouped:
        each expert's sorted rows in windows; the CPU path), megablox (moejax.megablox: a
        Pallas TPU kernel with exact FLOPs; compiles where ragged_dot's TPU kernel runs out of
        on-chip memory; interpreted, slowly, off TPU), auto (ragged_dot on accelerators,
        blocks on CPU).
      block_size: rows of the smallest window of the blocks grouped matmul (each expert's rows
        go through windows of 8·block_size rows, then 4·, 2· and 1·block_size for the rest).
      dropless_all_to_all: how dropless expert parallelism moves rows: ragged
        (jax.lax.ragged_all_to_all, exact sizes; TPU/GPU), padded (all_to_all of worst-case
        buffers; any backend, XLA:CPU included), auto (ragged on TPU/GPU, padded on CPU).

    Experts:
      hidden_dim: F, each expert's hidden width.
      activation: relu/gelu/silu, or gated geglu (ST-MoE) / swiglu (Mixtral, DeepSeek).
      expert_dropout: dropout on the expert hidden layer (Switch fine-tuning: 0.4).
      expert_init_scale: variance scale of the expert weights' truncated-normal init
        (Switch reduced init: 0.1; default 1.0).
      dtype: compute dtype of the experts.
      router_dtype: dtype of the router's matmul, softmax and routing decisions: float32
        (Switch "selective precision", the default, also under a bfloat16 model) or bfloat16
        (Switch Table 2's unstable full-bfloat16 router).
      num_shared_experts: always-on experts added to the routed output (DeepSeekMoE, Llama 4).
      shared_hidden_dim: hidden width of each shared expert (None: hidden_dim).
      shared_expert_gate: scale the shared experts' output by sigmoid(x · w_s), w_s [D]
        learned (Qwen1.5-MoE, Qwen2-MoE); needs num_shared_experts > 0.

    Loss coefficients (stats['aux_loss'] = Σ coefficient · loss):
      load_balance_loss: α of the Switch/GShard load-balancing loss (1e-2).
      router_z_loss: c_z of the ST-MoE router z-loss (1e-3).
      importance_loss, load_loss: Shazeer et al. 2017 w_importance, w_load.
      sequence_balance_loss: α of the DeepSeek-V3 sequence-wise balance loss (1e-4).
    """

    num_experts: int = 8
    num_selected_experts: int = 1
    router: str = "top_k"
    gate_order: str = "softmax_then_top_k"
    renormalize_gates: bool = False
    batch_prioritized: bool = False
    jitter_eps: float = 0.0
    router_init_std: float = 0.02
    expert_choice_max_experts_per_token: Optional[int] = None
    causal: bool = False
    allow_non_causal_routing: bool = False
    routed_scaling_factor: float = 1.0
    num_expert_groups: int = 1
    num_selected_groups: int = 1
    bias_update_rate: float = 0.0
    slots_per_expert: int = 1

    group_size: Optional[int] = None
    capacity_factor: float = 1.25
    eval_capacity_factor: float = 2.0
    min_capacity: int = 4
    dispatch: str = "index"
    grouped_matmul: str = "auto"
    block_size: int = 128
    dropless_all_to_all: str = "auto"

    hidden_dim: int = 256
    activation: str = "relu"
    expert_dropout: float = 0.0
    expert_init_scale: float = 1.0
    dtype: str = "float32"
    router_dtype: str = "float32"
    num_shared_experts: int = 0
    shared_hidden_dim: Optional[int] = None
    shared_expert_gate: bool = False

    load_balance_loss: float = 1e-2
    router_z_loss: float = 0.0
    importance_loss: float = 0.0
    load_loss: float = 0.0
    sequence_balance_loss: float = 0.0

    def __post_init__(self):
        self.validate()

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], prefix: str = "moe") -> "MoeConfig":
        """Builds a config from a mapping (e.g. an ml_collections ConfigDict)."""
        return dataclass_from_dict(cls, values, prefix)

    def replace(self, **changes) -> "MoeConfig":
        return dataclasses.replace(self, **changes)

    @property
    def uses_capacity(self) -> bool:
        return self.dispatch != "dropless"

    @property
    def active_hidden_dim(self) -> int:
        """Hidden width a token passes through on average: the width of the dense FFN with the
        same per-token FLOPs (router aside). k·F (expert choice: capacity_factor·F, its
        average experts per token; dense mixture: E·F) plus the shared experts."""
        width = family(self).active_width
        check(width is not None,
              f"moe.router={self.router!r} has no per-token expert width: its FLOPs per token "
              f"are E·slots_per_expert·F / group_size")
        routed = width(self)
        return routed + self.num_shared_experts * (self.shared_hidden_dim or self.hidden_dim)

    def validate(self) -> None:
        """Checks every field; raises one ConfigError line naming the first bad one."""
        p = "moe."
        check_choice(p + "router", self.router, ROUTERS)
        fam = family(self)
        check_choice(p + "gate_order", self.gate_order, GATE_ORDERS)
        check_choice(p + "dispatch", self.dispatch, DISPATCHES)
        check_choice(p + "grouped_matmul", self.grouped_matmul, GROUPED_MATMULS)
        check_choice(p + "dropless_all_to_all", self.dropless_all_to_all, DROPLESS_ALL_TO_ALLS)
        check_choice(p + "activation", self.activation, ACTIVATIONS)
        check_choice(p + "dtype", self.dtype, DTYPES)
        check_choice(p + "router_dtype", self.router_dtype, ("float32", "bfloat16"))
        _positive_int(p + "num_experts", self.num_experts)
        _positive_int(p + "num_selected_experts", self.num_selected_experts)
        _positive_int(p + "hidden_dim", self.hidden_dim)
        _positive_int(p + "block_size", self.block_size)
        _positive_int(p + "min_capacity", self.min_capacity, allow_zero=True)
        check(self.num_selected_experts <= self.num_experts,
              f"{p}num_selected_experts={self.num_selected_experts} must be <= "
              f"{p}num_experts={self.num_experts}")
        for name in ("capacity_factor", "eval_capacity_factor"):
            _in_range(p + name, getattr(self, name), 0.0, None, "> 0")
        if self.dispatch == "dropless":
            check(fam.choice == "token",
                  f"{p}dispatch='dropless' needs a token-choice router "
                  f"({', '.join(TOKEN_CHOICE_ROUTERS)}), not {p}router={self.router!r}")
        if self.batch_prioritized:
            check(not self.causal or self.allow_non_causal_routing,
                  f"{p}batch_prioritized=True orders a group's tokens by their router "
                  f"probability, so later tokens can take an earlier token's slot: not causal; "
                  f"set {p}allow_non_causal_routing=True to run it in a causal decoder anyway")
        if not fam.causal:
            check(not self.causal or self.allow_non_causal_routing,
                  f"{p}router={self.router!r} looks at future tokens and cannot run in a causal "
                  f"decoder; set {p}allow_non_causal_routing=True to run it anyway")
        if self.group_size is not None:
            _positive_int(p + "group_size", self.group_size)
        _positive_int(p + "num_expert_groups", self.num_expert_groups)
        _positive_int(p + "num_selected_groups", self.num_selected_groups)
        check(self.num_selected_groups <= self.num_expert_groups,
              f"{p}num_selected_groups={self.num_selected_groups} must be <= "
              f"{p}num_expert_groups={self.num_expert_groups}")
        _in_range(p + "expert_dropout", self.expert_dropout, 0.0, 1.0, "in [0, 1)")
        _in_range(p + "jitter_eps", self.jitter_eps, 0.0, 1.0, "in [0, 1)")
        _in_range(p + "expert_init_scale", self.expert_init_scale, 0.0, None, "> 0")
        _in_range(p + "router_init_std", self.router_init_std, 0.0, None, ">= 0")
        _in_range(p + "routed_scaling_factor", self.routed_scaling_factor, 0.0, None, "> 0")
        _in_range(p + "bias_update_rate", self.bias_update_rate, 0.0, None, ">= 0")
        if self.expert_choice_max_experts_per_token is not None:
            _positive_int(p + "expert_choice_max_experts_per_token",
                          self.expert_choice_max_experts_per_token)
        _positive_int(p + "slots_per_expert", self.slots_per_expert)
        _positive_int(p + "num_shared_experts", self.num_shared_experts, allow_zero=True)
        if self.shared_hidden_dim is not None:
            _positive_int(p + "shared_hidden_dim", self.shared_hidden_dim)
        check(not self.shared_expert_gate or self.num_shared_experts > 0,
              f"{p}shared_expert_gate=True needs {p}num_shared_experts > 0")
        for name in ("load_balance_loss", "router_z_loss", "importance_loss", "load_loss",
                     "sequence_balance_loss"):
            _in_range(p + name, getattr(self, name), 0.0, None, ">= 0")
        self._check_family_fields(fam)
        fam.validate(self)

    def _check_family_fields(self, fam) -> None:
        """A field that only other families read must keep its default."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name in sorted({n for f in FAMILIES.values() for n in f.owned_fields}):
            value = getattr(self, name)
            readers = [f.name for f in FAMILIES.values() if name in f.owned_fields]
            check(name in fam.owned_fields or value == defaults[name],
                  f"moe.{name}={value!r} is read only by moe.router="
                  f"{' / '.join(repr(r) for r in readers)}, not moe.router={self.router!r}; "
                  f"leave it at {defaults[name]!r}")


def dataclass_from_dict(cls, values: Mapping[str, Any], prefix: str):
    """cls(**values), with one ConfigError line for a key that is not one of its fields."""
    values = dict(values.items())
    known = {f.name for f in dataclasses.fields(cls)}
    for name in values:
        if name not in known:
            raise ConfigError(f"{prefix}.{name} is not a {cls.__name__} field "
                              f"(known: {', '.join(sorted(known))})")
    return cls(**values)


def _is_number(value) -> bool:
    """A finite real number (Python or NumPy scalar), not a bool."""
    return (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
            and math.isfinite(value))


def _positive_int(field: str, value, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    ok = (isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
          and value >= low)
    check(ok, f"{field}={value!r} must be an integer >= {low}")


def _in_range(field: str, value, low: float, high: Optional[float], allowed: str) -> None:
    """A finite number in the interval `allowed` describes ('> 0', '>= 0' or '[0, 1)')."""
    ok = _is_number(value)
    if ok:
        ok = value > low if allowed == "> 0" else value >= low
        if high is not None:
            ok = ok and value < high
    check(ok, f"{field}={value!r} must be a finite number {allowed}")
