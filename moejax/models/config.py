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
ATTENTIONS = ("mha", "mla")
QK_NORMS = ("none", "per_head", "across_heads")
REMATS = ("none", "full", "save_dots")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A decoder-only LM (GLaM, Mixtral, DeepSeek) or a T5.1.1 encoder-decoder (Switch, ST-MoE).

    arch: 'decoder' (RoPE, causal) or 'encoder_decoder' (T5 relative position bias).
    num_layers: decoder-only depth; num_encoder_layers / num_decoder_layers for T5.
    num_heads, head_dim (None: d_model / num_heads), d_ff, activation: attention and dense FFN.
    attention: 'mha' (multi-head or grouped-query attention) or 'mla' (DeepSeek-V2/V3's
      multi-head latent attention, decoder-only: moejax.models.latent_attention; its widths are
      q_lora_rank (0: no query compression, DeepSeek-V2-Lite), kv_lora_rank, qk_nope_head_dim,
      qk_rope_head_dim and v_head_dim, and head_dim is not used).
    num_kv_heads: key/value heads of 'mha' self-attention (None: num_heads; fewer: grouped-query
      attention, Mixtral, Qwen3, Llama 4). Cross-attention keeps num_heads.
    qkv_bias: biases on the q, k, v projections (Qwen1.5/Qwen2-MoE).
    qk_norm: RMSNorm of queries and keys: 'per_head' (Qwen3), 'across_heads' (OLMoE: over the
      whole projection) or 'none'.
    norm_eps: ε of every RMSNorm.
    position: 'rope' or 'relative' (T5 buckets); default by arch.
    tie_embeddings: logits from the input embedding (T5.1.1 does not tie).
    init_scale: variance scale s of the truncated-normal init N(0, s / fan_in) of the attention
      projections, the dense FFNs and the output head (Switch's reduced init: 0.1; default 1.0).
      The experts have moe.expert_init_scale and the router moe.router_init_std; embeddings and
      relative position biases are drawn at std 1.0 whatever s is.
    moe_stacks: which stacks of an encoder-decoder get MoE layers: 'all', 'encoder' (keeps
      non-causal routers such as expert choice and Soft MoE out of the causal decoder), 'decoder'.
    extra_dense_ffn_after_moe: ST-MoE's dense FFN right after every sparse one.
    dense_moe_hybrid: Arctic's dense-MoE hybrid (Snowflake 2024): every MoE layer also has a
      dense FFN of width d_ff in a residual branch; the dense FFN reads the stream after
      attention, the MoE reads the layer's input, in parallel with attention, and both outputs
      are added (Arctic's parallel_attn_mlp_res).
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
    num_kv_heads: Optional[int] = None
    attention: str = "mha"
    q_lora_rank: int = 0
    kv_lora_rank: int = 512
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128
    qkv_bias: bool = False
    qk_norm: str = "none"
    norm_eps: float = 1e-6
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
    dense_moe_hybrid: bool = False
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

    @property
    def attention_head_dims(self) -> Tuple[int, int]:
        """(query/key, value) width of each attention head."""
        if self.attention == "mla":
            return self.qk_nope_head_dim + self.qk_rope_head_dim, self.v_head_dim
        return self.resolved_head_dim, self.resolved_head_dim

    def validate(self) -> None:
        p = "model."
        check_choice(p + "arch", self.arch, ARCHS)
        check_choice(p + "moe_layout", self.moe_layout, LAYOUTS)
        check_choice(p + "moe_stacks", self.moe_stacks, MOE_STACKS)
        check_choice(p + "activation", self.activation, ACTIVATIONS)
        check_choice(p + "dtype", self.dtype, DTYPES)
        check_choice(p + "remat", self.remat, REMATS)
        check_choice(p + "attention", self.attention, ATTENTIONS)
        check_choice(p + "qk_norm", self.qk_norm, QK_NORMS)
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
        check(self.norm_eps > 0, f"{p}norm_eps={self.norm_eps!r} must be > 0")
        if self.num_kv_heads is not None:
            check(isinstance(self.num_kv_heads, int) and self.num_kv_heads >= 1
                  and self.num_heads % self.num_kv_heads == 0,
                  f"{p}num_kv_heads={self.num_kv_heads!r} must be an integer >= 1 that divides "
                  f"{p}num_heads={self.num_heads}")
        if self.attention == "mla":
            self._validate_latent_attention()
        check(not (self.dense_moe_hybrid and self.extra_dense_ffn_after_moe),
              f"{p}dense_moe_hybrid (Arctic: a dense FFN beside the MoE) and "
              f"{p}extra_dense_ffn_after_moe (ST-MoE: one after it) exclude each other")
        if self.resolved_position == "rope" and self.attention == "mha":
            check(self.resolved_head_dim % 2 == 0,
                  f"{p}head_dim={self.resolved_head_dim} must be even for rotary positions")
        if self.moe_as_dense and self.moe_layout != "none":
            check(family(self.moe).active_width is not None,
                  f"{p}moe_as_dense=True needs a per-token expert width, which "
                  f"moe.router={self.moe.router!r} does not have (its FLOPs per token are "
                  "E·slots_per_expert·F / group_size)")
        for stack, depth in self.stack_depths().items():
            ffn_pattern(self, depth, stack)  # raises on layouts that do not fit the depth

    def _validate_latent_attention(self) -> None:
        p = "model."
        check(self.arch == "decoder" and self.resolved_position == "rope",
              f"{p}attention='mla' needs a decoder-only model with rotary positions "
              f"(model.arch={self.arch!r})")
        for name in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
            value = getattr(self, name)
            check(isinstance(value, int) and value >= 1, f"{p}{name}={value!r} must be an integer >= 1")
        check(isinstance(self.q_lora_rank, int) and self.q_lora_rank >= 0,
              f"{p}q_lora_rank={self.q_lora_rank!r} must be an integer >= 0 (0: no query "
              "compression)")
        check(self.qk_rope_head_dim % 2 == 0,
              f"{p}qk_rope_head_dim={self.qk_rope_head_dim} must be even for rotary positions")
        for name, default in (("num_kv_heads", None), ("qkv_bias", False), ("qk_norm", "none")):
            check(getattr(self, name) == default,
                  f"{p}{name}={getattr(self, name)!r} is an option of attention='mha'; "
                  "multi-head latent attention has none")

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
