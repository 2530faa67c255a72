"""T5.1.1-style encoder-decoder (Raffel et al. 2020) with MoE FFNs (Switch, ST-MoE)."""

from __future__ import annotations

from typing import Dict, Tuple

import jax
import jax.numpy as jnp
from flax import nnx

from moejax.models.attention import RelativePositionBias, attention_mask
from moejax.models.block import Block, LayerInputs
from moejax.models.config import ModelConfig, ffn_pattern
from moejax.models.layers import Embed, RMSNorm, output_head
from moejax.models.stack import LayerStack


class EncoderDecoder(nnx.Module):
    """Encoder (bidirectional) and decoder (causal, cross-attending) sharing one embedding.

    Relative position biases are learned per stack and shared by its layers, as in T5.
    Returns logits [B, Ld, V] (float32) and the MoE stats of the encoder then the decoder,
    stacked per MoE layer.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed = Embed(cfg.vocab_size, cfg.d_model, rngs=rngs)
        # drawn before the layers: every config with this seed starts from the same embedding and
        # head whatever its layers draw, so comparisons of FFN variants share them (common
        # random numbers; the head's draw alone moved early losses by ~0.2 nats at tiny size)
        self.head = nnx.data(None if cfg.tie_embeddings else output_head(
            cfg.d_model, cfg.vocab_size, init_scale=cfg.init_scale, rngs=rngs))
        bias = lambda bidirectional: RelativePositionBias(
            cfg.num_heads, bidirectional=bidirectional, num_buckets=cfg.relative_num_buckets,
            max_distance=cfg.relative_max_distance, rngs=rngs)
        self.encoder_bias = bias(True)
        self.decoder_bias = bias(False)
        self.encoder = LayerStack(
            ffn_pattern(cfg, cfg.num_encoder_layers, "encoder"),
            lambda kind, rngs: Block(cfg, kind, causal=False, cross=False, rngs=rngs),
            scan=cfg.scan_layers, remat=cfg.remat, rngs=rngs)
        self.decoder = LayerStack(
            ffn_pattern(cfg, cfg.num_decoder_layers, "decoder"),
            lambda kind, rngs: Block(cfg, kind, causal=True, cross=True, rngs=rngs),
            scan=cfg.scan_layers, remat=cfg.remat, rngs=rngs)
        self.encoder_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.decoder_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.dropout = nnx.Dropout(cfg.dropout_rate, rngs=rngs)

    def __call__(self, encoder_tokens: jax.Array, decoder_tokens: jax.Array, *,
                 encoder_segment_ids=None, decoder_segment_ids=None,
                 deterministic: bool = False) -> Tuple[jax.Array, Dict[str, jax.Array]]:
        if encoder_segment_ids is None:
            encoder_segment_ids = jnp.ones(encoder_tokens.shape, jnp.int32)
        context, enc_stats = self.encode(encoder_tokens, encoder_segment_ids, deterministic)
        logits, dec_stats = self.decode(decoder_tokens, context, encoder_segment_ids,
                                        decoder_segment_ids, deterministic)
        stats = {k: jnp.concatenate([enc_stats[k], dec_stats[k]]) for k in enc_stats
                 if k in dec_stats} if enc_stats and dec_stats else (enc_stats or dec_stats)
        return logits, stats

    def encode(self, encoder_tokens: jax.Array, encoder_segment_ids: jax.Array,
               deterministic: bool = False) -> Tuple[jax.Array, Dict[str, jax.Array]]:
        """The encoder's output [B, Le, D] (normed) and its MoE stats."""
        le = encoder_tokens.shape[1]
        drop = lambda y: self.dropout(y, deterministic=deterministic)
        x = drop(self.embed(encoder_tokens, self.cfg.dtype))
        enc_inputs = LayerInputs(
            self_mask=attention_mask(encoder_segment_ids, encoder_segment_ids, causal=False),
            self_bias=self.encoder_bias(le, le), token_mask=encoder_segment_ids != 0)
        x, stats = self.encoder(x, enc_inputs, deterministic)
        return drop(self.encoder_norm(x)), stats

    def decode(self, decoder_tokens: jax.Array, context: jax.Array,
               encoder_segment_ids: jax.Array, decoder_segment_ids=None,
               deterministic: bool = False, decode_index=None
               ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
        """Logits [B, Ld, V] (float32) of the decoder reading `context`, and its MoE stats.

        decode_index: the tokens are positions decode_index + [0, Ld) of targets whose earlier
        self-attention keys and values are in the cache (moejax.models.decode)."""
        if decoder_segment_ids is None:
            decoder_segment_ids = jnp.ones(decoder_tokens.shape, jnp.int32)
        ld = decoder_tokens.shape[1]
        drop = lambda y: self.dropout(y, deterministic=deterministic)
        y = drop(self.embed(decoder_tokens, self.cfg.dtype))
        if decode_index is None:
            bias = self.decoder_bias(ld, ld)
        else:                                  # the new queries over every cached position
            bias = self.decoder_bias(ld, self.max_decode_length(), decode_index)
        dec_inputs = LayerInputs(
            self_mask=attention_mask(decoder_segment_ids, decoder_segment_ids, causal=True),
            self_bias=bias, context=context,
            cross_mask=attention_mask(decoder_segment_ids, encoder_segment_ids, causal=False),
            token_mask=decoder_segment_ids != 0, decode_index=decode_index)
        y, stats = self.decoder(y, dec_inputs, deterministic)
        y = drop(self.decoder_norm(y))
        if self.head is None:
            logits = self.embed.attend(y)
        else:
            logits = jnp.einsum("bld,dv->blv", y, self.head[...].astype(y.dtype))
        return logits.astype(jnp.float32), stats

    def max_decode_length(self) -> int:
        """The decoder's self-attention cache length (moejax.models.decode.init_cache)."""
        for _, node in nnx.iter_graph(self.decoder):
            cache = getattr(node, "cached_key", None)
            if cache is not None:
                return cache.shape[-3]
        raise ValueError("decoding needs a cache: call moejax.models.decode.init_cache first")
