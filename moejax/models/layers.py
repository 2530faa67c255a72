"""Transformer building blocks: RMSNorm, token embedding, the dense FFN (T5.1.1 style, no biases)."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from moejax.experts import GATED, expert_ffn


class RMSNorm(nnx.Module):
    """x / sqrt(mean(x²) + ε) · scale, computed in float32 (Zhang & Sennrich 2019; T5's LayerNorm)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        self.scale = nnx.Param(jnp.ones((dim,), jnp.float32), logical_axes=("embed",))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return (y * self.scale[...]).astype(x.dtype)


class Embed(nnx.Module):
    """Token embedding [V, D]; `attend` gives tied output logits x · Eᵀ."""

    def __init__(self, vocab_size: int, dim: int, *, rngs: nnx.Rngs):
        init = jax.nn.initializers.normal(1.0)
        self.embedding = nnx.Param(init(rngs.params(), (vocab_size, dim), jnp.float32),
                                   logical_axes=("vocab", "embed"))

    def __call__(self, tokens: jax.Array, dtype) -> jax.Array:
        return jnp.take(self.embedding[...], tokens, axis=0).astype(dtype)   # [B, L, D]

    def attend(self, x: jax.Array) -> jax.Array:
        return jnp.einsum("bld,vd->blv", x, self.embedding[...].astype(x.dtype))


def output_head(dim: int, vocab_size: int, *, init_scale: float, rngs: nnx.Rngs) -> nnx.Param:
    """The untied output projection [D, V], truncated normal N(0, init_scale / D)."""
    init = jax.nn.initializers.variance_scaling(init_scale, "fan_in", "truncated_normal")
    return nnx.Param(init(rngs.params(), (dim, vocab_size)), logical_axes=("embed", "vocab"))


class DenseFfn(nnx.Module):
    """The dense feed-forward layer: wi [D, F] (+ wi_gate for GLU variants), wo [F, D]."""

    def __init__(self, dim: int, hidden: int, *, activation: str, dtype, dropout_rate: float,
                 rngs: nnx.Rngs, init_scale: float = 1.0):
        init = jax.nn.initializers.variance_scaling(init_scale, "fan_in", "truncated_normal")
        self.activation = activation
        self.dtype = jnp.dtype(dtype)
        self.dropout_rate = dropout_rate
        self.wi = nnx.Param(init(rngs.params(), (dim, hidden)), logical_axes=("embed", "mlp"))
        if activation in GATED:
            self.wi_gate = nnx.Param(init(rngs.params(), (dim, hidden)),
                                     logical_axes=("embed", "mlp"))
        self.wo = nnx.Param(init(rngs.params(), (hidden, dim)), logical_axes=("mlp", "embed"))

    def __call__(self, x: jax.Array, key: Optional[jax.Array] = None) -> jax.Array:
        w = {"wi": self.wi[...], "wo": self.wo[...]}
        if self.activation in GATED:
            w["wi_gate"] = self.wi_gate[...]
        return expert_ffn(w, x, self.activation, self.dtype, self.dropout_rate, key).astype(x.dtype)
