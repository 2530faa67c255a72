"""Transformer models around the MoE layer: decoder-only LMs and T5-style encoder-decoders."""

from flax import nnx

from moejax.models.config import ModelConfig, ffn_pattern
from moejax.models.decoder import DecoderLM
from moejax.models.encoder_decoder import EncoderDecoder


def build_model(cfg: ModelConfig, *, rngs: nnx.Rngs):
    """DecoderLM for arch='decoder', EncoderDecoder for arch='encoder_decoder'."""
    return (DecoderLM if cfg.arch == "decoder" else EncoderDecoder)(cfg, rngs=rngs)


__all__ = ["ModelConfig", "DecoderLM", "EncoderDecoder", "build_model", "ffn_pattern"]
