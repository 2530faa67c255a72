"""One pre-norm transformer layer: self-attention, optional cross-attention, dense or MoE FFN."""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

import jax
from flax import nnx

from moejax.layers import make_moe_layer
from moejax.models.attention import Attention
from moejax.models.config import ModelConfig
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


class Block(nnx.Module):
    """x + Attn(norm(x)) [+ CrossAttn(norm(x), context)] + FFN(norm(x)) [+ dense FFN (ST-MoE)]."""

    def __init__(self, cfg: ModelConfig, ffn_kind: str, *, causal: bool, cross: bool,
                 rngs: nnx.Rngs):
        d, h, dh = cfg.d_model, cfg.num_heads, cfg.resolved_head_dim
        self.cfg = cfg
        self.attn_norm = RMSNorm(d)
        attention = lambda: Attention(d, h, dh, dtype=cfg.dtype, rngs=rngs,
                                      init_scale=cfg.init_scale)
        dense_ffn = lambda width, activation: DenseFfn(
            d, width, activation=activation, dtype=cfg.dtype, dropout_rate=cfg.dropout_rate,
            rngs=rngs, init_scale=cfg.init_scale)
        self.attn = attention()
        self.cross_norm = nnx.data(RMSNorm(d) if cross else None)
        self.cross_attn = nnx.data(attention() if cross else None)
        self.ffn_norm = RMSNorm(d)
        self.is_moe = ffn_kind == "moe" and not cfg.moe_as_dense
        if ffn_kind == "moe" and cfg.moe_as_dense:                    # FLOP-matched baseline
            self.ffn = dense_ffn(cfg.moe.active_hidden_dim, cfg.moe.activation)
        elif self.is_moe:
            moe_cfg = cfg.moe.replace(causal=causal)
            self.ffn = make_moe_layer(moe_cfg, d, rngs=rngs)
        else:
            self.ffn = dense_ffn(cfg.d_ff, cfg.activation)
        extra = ffn_kind == "moe" and cfg.extra_dense_ffn_after_moe
        self.extra_norm = nnx.data(RMSNorm(d) if extra else None)
        self.extra_ffn = nnx.data(dense_ffn(cfg.d_ff, cfg.activation) if extra else None)
        self.dropout = nnx.Dropout(cfg.dropout_rate, rngs=rngs)

    def __call__(self, x: jax.Array, inputs: LayerInputs, deterministic: bool
                 ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
        cfg = self.cfg
        drop = lambda y: self.dropout(y, deterministic=deterministic)
        rope = cfg.resolved_position == "rope"
        h = self.attn_norm(x)
        x = x + drop(self.attn(h, h, inputs.self_mask, inputs.self_bias,
                               inputs.positions if rope else None,
                               inputs.positions if rope else None, cfg.rope_max_wavelength,
                               cache_index=inputs.decode_index))
        if self.cross_attn is not None:
            h = self.cross_norm(x)
            x = x + drop(self.cross_attn(h, inputs.context, inputs.cross_mask))
        stats = {}
        h = self.ffn_norm(x)
        ffn_key = None
        if not deterministic and cfg.dropout_rate > 0 and not self.is_moe:
            ffn_key = self.dropout.rngs()
        if self.is_moe:
            y, stats = self.ffn(h, deterministic=deterministic, mask=inputs.token_mask)
        else:
            y = self.ffn(h, ffn_key)
        x = x + drop(y)
        if self.extra_ffn is not None:
            key = self.dropout.rngs() if not deterministic and cfg.dropout_rate > 0 else None
            x = x + drop(self.extra_ffn(self.extra_norm(x), key))
        return x, stats
