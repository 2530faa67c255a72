"""Transformer models around the MoE layer: decoder-only LMs and T5-style encoder-decoders."""

import math

import jax
from flax import nnx

from moejax.models.config import ModelConfig, ffn_pattern
from moejax.models.decoder import DecoderLM
from moejax.models.encoder_decoder import EncoderDecoder


def build_model(cfg: ModelConfig, *, rngs: nnx.Rngs):
    """DecoderLM for arch='decoder', EncoderDecoder for arch='encoder_decoder'."""
    return (DecoderLM if cfg.arch == "decoder" else EncoderDecoder)(cfg, rngs=rngs)


def init_model(cfg: ModelConfig, seed: int):
    """The model of a training run with seed `seed`: the project's one convention for its
    random streams, params = seed, dropout = seed + 1, routing = seed + 2 (so runs that
    differ only in their FFNs share every other initial weight, see ModelConfig)."""
    return build_model(cfg, rngs=nnx.Rngs(params=seed, dropout=seed + 1, routing=seed + 2))


def count_params(model: nnx.Module) -> int:
    """Total parameters (every nnx.Param; all experts counted)."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


__all__ = ["ModelConfig", "DecoderLM", "EncoderDecoder", "build_model", "count_params",
           "init_model", "ffn_pattern"]
