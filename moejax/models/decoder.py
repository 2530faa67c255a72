"""Decoder-only MoE language model (GLaM, Mixtral, DeepSeek-style): RoPE, RMSNorm, pre-norm."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import jax
import jax.numpy as jnp
from flax import nnx

from moejax.models.attention import attention_mask
from moejax.models.block import Block, LayerInputs
from moejax.models.config import ModelConfig, ffn_pattern
from moejax.models.layers import Embed, RMSNorm, output_head
from moejax.models.stack import LayerStack


class DecoderLM(nnx.Module):
    """tokens [B, L] -> logits [B, L, V] (float32) and MoE stats stacked per MoE layer."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed = Embed(cfg.vocab_size, cfg.d_model, rngs=rngs)
        # drawn before the layers: every config with this seed starts from the same embedding and
        # head whatever its layers draw, so comparisons of FFN variants share them (common
        # random numbers; the head's draw alone moved early losses by ~0.2 nats at tiny size)
        self.head = nnx.data(None if cfg.tie_embeddings else output_head(
            cfg.d_model, cfg.vocab_size, init_scale=cfg.init_scale, rngs=rngs))

        def make_block(kind, rngs):
            return Block(cfg, kind, causal=True, cross=False, rngs=rngs)

        self.layers = LayerStack(ffn_pattern(cfg, cfg.num_layers), make_block,
                                 scan=cfg.scan_layers, remat=cfg.remat, rngs=rngs)
        self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.dropout = nnx.Dropout(cfg.dropout_rate, rngs=rngs)

    def __call__(self, tokens: jax.Array, *, segment_ids: Optional[jax.Array] = None,
                 positions: Optional[jax.Array] = None, deterministic: bool = False,
                 decode_index: Optional[jax.Array] = None
                 ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
        """decode_index: the tokens [B, L] are positions decode_index + [0, L) of sequences
        whose earlier keys and values are in the cache (moejax.models.decode); no packing."""
        b, l = tokens.shape
        if segment_ids is None:
            segment_ids = jnp.ones((b, l), jnp.int32)
        if positions is None:
            start = 0 if decode_index is None else decode_index
            positions = jnp.broadcast_to(start + jnp.arange(l, dtype=jnp.int32), (b, l))
        x = self.dropout(self.embed(tokens, self.cfg.dtype), deterministic=deterministic)
        inputs = LayerInputs(self_mask=attention_mask(segment_ids, segment_ids, causal=True),
                             positions=positions, token_mask=segment_ids != 0,
                             decode_index=decode_index)
        x, stats = self.layers(x, inputs, deterministic)                 # [B, L, D]
        x = self.dropout(self.final_norm(x), deterministic=deterministic)
        if self.head is None:
            logits = self.embed.attend(x)
        else:
            logits = jnp.einsum("bld,dv->blv", x, self.head[...].astype(x.dtype))
        return logits.astype(jnp.float32), stats
