"""One pre-norm transformer layer: self-attention, optional cross-attention, dense or MoE FFN."""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

import jax
from flax import nnx

from moejax.layers import make_moe_layer
from moejax.models.attention import Attention
from moejax.models.config import ModelConfig
from moejax.models.latent_attention import LatentAttention, LatentDims
from moejax.models.layers import DenseFfn, RMSNorm


@dataclasses.dataclass(frozen=True)
class LayerInputs:
    """What every layer of a stack sees besides the residual stream."""
    self_mask: jax.Array                      # [B, 1, L, L] bool
    self_bias: Optional[jax.Array] = None     # [1, H, L, L] relative position bias
    positions: Optional[jax.Array] = None     # [B, L] for RoPE
    context: Optional[jax.Array] = None       # [B, Lc, D] encoder output (cross-attention)
    cross_mask: Optional[jax.Array] = None    # [B, 1, L, Lc]
    token_mask: Optional[jax.Array] = None    # [B, L] bool real tokens (segment id != 0): the
    #                                           MoE layers route no padding
    decode_index: Optional[jax.Array] = None  # [] int: decoding with a cache, the position of
    #                                           the first of these L tokens (self_mask unused)


jax.tree_util.register_dataclass(
    LayerInputs, data_fields=["self_mask", "self_bias", "positions", "context", "cross_mask",
                              "token_mask", "decode_index"],
    meta_fields=[])


def self_attention(cfg: ModelConfig, rngs: nnx.Rngs) -> nnx.Module:
    """The self-attention module cfg.attention names."""
    if cfg.attention == "mla":
        dims = LatentDims(cfg.q_lora_rank, cfg.kv_lora_rank, cfg.qk_nope_head_dim,
                          cfg.qk_rope_head_dim, cfg.v_head_dim)
        return LatentAttention(cfg.d_model, cfg.num_heads, dims, dtype=cfg.dtype, rngs=rngs,
                               init_scale=cfg.init_scale, norm_eps=cfg.norm_eps)
    return Attention(cfg.d_model, cfg.num_heads, cfg.resolved_head_dim, dtype=cfg.dtype,
                     rngs=rngs, init_scale=cfg.init_scale, num_kv_heads=cfg.num_kv_heads,
                     qkv_bias=cfg.qkv_bias, qk_norm=cfg.qk_norm, norm_eps=cfg.norm_eps)


class Block(nnx.Module):
    """x + Attn(norm(x)) [+ CrossAttn(norm(x), context)] + FFN(norm(x)) [+ dense FFN (ST-MoE)].

    With model.dense_moe_hybrid (Arctic) a MoE layer is x + Attn(norm(x)) + Dense(norm(x'))
    + MoE(norm(x)), x' = x + Attn(norm(x)): the MoE reads the layer's input."""

    def __init__(self, cfg: ModelConfig, ffn_kind: str, *, causal: bool, cross: bool,
                 rngs: nnx.Rngs):
        d = cfg.d_model
        self.cfg = cfg
        norm = lambda: RMSNorm(d, cfg.norm_eps)
        self.attn_norm = norm()
        dense_ffn = lambda width, activation: DenseFfn(
            d, width, activation=activation, dtype=cfg.dtype, dropout_rate=cfg.dropout_rate,
            rngs=rngs, init_scale=cfg.init_scale)
        self.attn = self_attention(cfg, rngs)
        self.cross_norm = nnx.data(norm() if cross else None)
        self.cross_attn = nnx.data(Attention(
            d, cfg.num_heads, cfg.resolved_head_dim, dtype=cfg.dtype, rngs=rngs,
            init_scale=cfg.init_scale) if cross else None)
        self.ffn_norm = norm()
        self.is_moe = ffn_kind == "moe" and not cfg.moe_as_dense
        if ffn_kind == "moe" and cfg.moe_as_dense:                    # FLOP-matched baseline
            self.ffn = dense_ffn(cfg.moe.active_hidden_dim, cfg.moe.activation)
        elif self.is_moe:
            moe_cfg = cfg.moe.replace(causal=causal)
            self.ffn = make_moe_layer(moe_cfg, d, rngs=rngs)
        else:
            self.ffn = dense_ffn(cfg.d_ff, cfg.activation)
        extra = ffn_kind == "moe" and (cfg.extra_dense_ffn_after_moe or cfg.dense_moe_hybrid)
        self.extra_norm = nnx.data(norm() if extra else None)
        self.extra_ffn = nnx.data(dense_ffn(cfg.d_ff, cfg.activation) if extra else None)
        self.dropout = nnx.Dropout(cfg.dropout_rate, rngs=rngs)

    def __call__(self, x: jax.Array, inputs: LayerInputs, deterministic: bool
                 ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
        cfg = self.cfg
        drop = lambda y: self.dropout(y, deterministic=deterministic)
        rope = cfg.resolved_position == "rope"
        layer_input = x
        h = self.attn_norm(x)
        x = x + drop(self.attn(h, h, inputs.self_mask, inputs.self_bias,
                               inputs.positions if rope else None,
                               inputs.positions if rope else None, cfg.rope_max_wavelength,
                               cache_index=inputs.decode_index))
        if self.cross_attn is not None:
            h = self.cross_norm(x)
            x = x + drop(self.cross_attn(h, inputs.context, inputs.cross_mask))
        stats = {}
        hybrid = self.extra_ffn is not None and cfg.dense_moe_hybrid
        h = self.ffn_norm(layer_input if hybrid else x)
        ffn_key = None
        if not deterministic and cfg.dropout_rate > 0 and not self.is_moe:
            ffn_key = self.dropout.rngs()
        if self.is_moe:
            y, stats = self.ffn(h, deterministic=deterministic, mask=inputs.token_mask)
        else:
            y = self.ffn(h, ffn_key)
        if self.extra_ffn is not None:
            key = self.dropout.rngs() if not deterministic and cfg.dropout_rate > 0 else None
            if hybrid:          # Arctic: the dense residual branch beside the MoE
                return x + drop(self.extra_ffn(self.extra_norm(x), key)) + drop(y), stats
            x = x + drop(y)     # ST-MoE: a dense FFN after the sparse one
            return x + drop(self.extra_ffn(self.extra_norm(x), key)), stats
        return x + drop(y), stats
