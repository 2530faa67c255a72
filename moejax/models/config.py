"""ModelConfig: the transformer around the MoE layers, and which FFNs are sparse.

Which FFN layers are MoE is configuration, never a per-paper code branch:
  moe_layout='every'  every moe_every-th layer (the last of each period; Switch/GLaM: 2, ST-MoE: 4)
  moe_layout='top'    the last num_moe_layers layers;  'bottom': the first num_moe_layers
  moe_layout='list'   exactly the layers in moe_layer_list;  'none': a dense model
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Tuple

from moejax.config import ACTIVATIONS, DTYPES, MoeConfig, dataclass_from_dict
from moejax.errors import check, check_choice
from moejax.routing.registry import family

ARCHS = ("decoder", "encoder_decoder")
LAYOUTS = ("every", "top", "bottom", "list", "none")
MOE_STACKS = ("all", "encoder", "decoder")
POSITIONS = ("rope", "relative")
REMATS = ("none", "full", "save_dots")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A decoder-only LM (GLaM, Mixtral, DeepSeek) or a T5.1.1 encoder-decoder (Switch, ST-MoE).

    arch: 'decoder' (RoPE, causal) or 'encoder_decoder' (T5 relative position bias).
    num_layers: decoder-only depth; num_encoder_layers / num_decoder_layers for T5.
    num_heads, head_dim (None: d_model / num_heads), d_ff, activation: attention and dense FFN.
    position: 'rope' or 'relative' (T5 buckets); default by arch.
    tie_embeddings: logits from the input embedding (T5.1.1 does not tie).
    init_scale: variance scale s of the truncated-normal init N(0, s / fan_in) of the attention
      projections, the dense FFNs and the output head (Switch's reduced init: 0.1; default 1.0).
      The experts have moe.expert_init_scale and the router moe.router_init_std; embeddings and
      relative position biases are drawn at std 1.0 whatever s is.
    moe_stacks: which stacks of an encoder-decoder get MoE layers: 'all', 'encoder' (keeps
      non-causal routers such as expert choice and Soft MoE out of the causal decoder), 'decoder'.
    extra_dense_ffn_after_moe: ST-MoE's dense FFN right after every sparse one.
    moe_as_dense: the FLOP-matched dense baseline of the Switch and ST-MoE papers: every FFN the
      layout makes sparse is a dense FFN of the MoE layer's active width instead
      (moe.active_hidden_dim: k·F plus shared experts) with the experts' activation, and the
      model's dtype, dropout and initialisation (a dense model's FFN, not the experts').
    scan_layers: run repeated layers under nnx.scan (fast compiles); False unrolls them.
    remat: what each layer keeps for the backward pass (jax.checkpoint per layer): none
      (everything), full (only its input; the rest is recomputed), save_dots (matmul outputs
      without batch dimensions: projections and FFNs, not attention scores; MaxText's
      "minimal").
    moe: the MoeConfig of every sparse layer (its `causal` is set per stack).
    """

    arch: str = "decoder"
    vocab_size: int = 256
    d_model: int = 64
    num_heads: int = 4
    head_dim: Optional[int] = None
    d_ff: int = 256
    activation: str = "relu"
    num_layers: int = 2
    num_encoder_layers: int = 2
    num_decoder_layers: int = 2
    position: Optional[str] = None
    rope_max_wavelength: float = 10_000.0
    relative_num_buckets: int = 32
    relative_max_distance: int = 128
    dropout_rate: float = 0.0
    tie_embeddings: bool = False
    init_scale: float = 1.0
    dtype: str = "float32"
    scan_layers: bool = True
    remat: str = "none"
    moe_layout: str = "every"
    moe_every: int = 2
    num_moe_layers: int = 0
    moe_layer_list: Tuple[int, ...] = ()
    moe_stacks: str = "all"
    extra_dense_ffn_after_moe: bool = False
    moe_as_dense: bool = False
    moe: MoeConfig = dataclasses.field(default_factory=MoeConfig)

    def __post_init__(self):
        if isinstance(self.moe, Mapping) or hasattr(self.moe, "to_dict"):
            object.__setattr__(self, "moe", MoeConfig.from_dict(self.moe))
        object.__setattr__(self, "moe_layer_list", tuple(self.moe_layer_list))
        self.validate()

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ModelConfig":
        return dataclass_from_dict(cls, values, "model")

    @property
    def has_moe(self) -> bool:
        """Whether any layer is a sparse MoE layer."""
        return self.moe_layout != "none" and not self.moe_as_dense

    @property
    def resolved_position(self) -> str:
        return self.position or ("rope" if self.arch == "decoder" else "relative")

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim or self.d_model // self.num_heads

    def validate(self) -> None:
        p = "model."
        check_choice(p + "arch", self.arch, ARCHS)
        check_choice(p + "moe_layout", self.moe_layout, LAYOUTS)
        check_choice(p + "moe_stacks", self.moe_stacks, MOE_STACKS)
        check_choice(p + "activation", self.activation, ACTIVATIONS)
        check_choice(p + "dtype", self.dtype, DTYPES)
        check_choice(p + "remat", self.remat, REMATS)
        if self.position is not None:
            check_choice(p + "position", self.position, POSITIONS)
        for name in ("vocab_size", "d_model", "num_heads", "d_ff", "moe_every",
                     "relative_num_buckets", "relative_max_distance"):
            value = getattr(self, name)
            check(isinstance(value, int) and value >= 1, f"{p}{name}={value!r} must be an integer >= 1")
        for name in ("num_layers", "num_encoder_layers", "num_decoder_layers", "num_moe_layers"):
            value = getattr(self, name)
            check(isinstance(value, int) and value >= 0, f"{p}{name}={value!r} must be an integer >= 0")
        if self.head_dim is None:
            check(self.d_model % self.num_heads == 0,
                  f"{p}d_model={self.d_model} must be divisible by {p}num_heads="
                  f"{self.num_heads} (or set {p}head_dim)")
        check(0.0 <= self.dropout_rate < 1.0, f"{p}dropout_rate={self.dropout_rate!r} must be in [0, 1)")
        check(self.init_scale > 0, f"{p}init_scale={self.init_scale!r} must be > 0")
        if self.resolved_position == "rope":
            check(self.resolved_head_dim % 2 == 0,
                  f"{p}head_dim={self.resolved_head_dim} must be even for rotary positions")
        if self.moe_as_dense and self.moe_layout != "none":
            check(family(self.moe).active_width is not None,
                  f"{p}moe_as_dense=True needs a per-token expert width, which "
                  f"moe.router={self.moe.router!r} does not have (its FLOPs per token are "
                  "E·slots_per_expert·F / group_size)")
        for stack, depth in self.stack_depths().items():
            ffn_pattern(self, depth, stack)  # raises on layouts that do not fit the depth

    def stack_depths(self) -> dict:
        if self.arch == "decoder":
            return {"decoder": self.num_layers}
        return {"encoder": self.num_encoder_layers, "decoder": self.num_decoder_layers}


def ffn_pattern(cfg: ModelConfig, num_layers: int, stack: str = "decoder") -> Tuple[str, ...]:
    """'dense' or 'moe' for each of the num_layers FFNs of `stack`, from the layout fields."""
    p = "model."
    skip = cfg.arch == "encoder_decoder" and cfg.moe_stacks not in ("all", stack)
    if cfg.moe_layout == "none" or skip:
        moe = set()
    elif cfg.moe_layout == "every":
        moe = {i for i in range(num_layers) if (i + 1) % cfg.moe_every == 0}
    elif cfg.moe_layout in ("top", "bottom"):
        check(cfg.num_moe_layers <= num_layers,
              f"{p}num_moe_layers={cfg.num_moe_layers} must be <= the stack depth {num_layers}")
        n = cfg.num_moe_layers
        moe = set(range(num_layers - n, num_layers)) if cfg.moe_layout == "top" else set(range(n))
    else:
        bad = [i for i in cfg.moe_layer_list if not 0 <= i < num_layers]
        check(not bad, f"{p}moe_layer_list={list(cfg.moe_layer_list)} has layers {bad} outside "
                       f"0..{num_layers - 1}")
        moe = set(cfg.moe_layer_list)
    return tuple("moe" if i in moe else "dense" for i in range(num_layers))


def moe_layer_names(cfg: ModelConfig) -> list[str]:
    """Names of the MoE layers in the order their stats are stacked ('encoder layer 1', ...)."""
    if not cfg.has_moe:
        return []
    return [f"{stack} layer {i}" for stack, depth in cfg.stack_depths().items()
            for i, kind in enumerate(ffn_pattern(cfg, depth, stack)) if kind == "moe"]
