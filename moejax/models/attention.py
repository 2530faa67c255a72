"""Multi-head attention with rotary positions (RoPE) or T5 relative position biases."""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx


def rotary(x: jax.Array, positions: jax.Array, max_wavelength: float) -> jax.Array:
    """RoPE (Su et al. 2021) on x [B, L, H, Dh] at integer positions [B, L]."""
    half = x.shape[-1] // 2
    freq = max_wavelength ** (-jnp.arange(half, dtype=jnp.float32) / half)         # [Dh/2]
    angle = positions[..., None, None].astype(jnp.float32) * freq                   # [B, L, 1, Dh/2]
    sin, cos = jnp.sin(angle), jnp.cos(angle)
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x.dtype)


def relative_position_bucket(relative: jax.Array, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> jax.Array:
    """T5's bucketing of key − query offsets (Raffel et al. 2020): exact near, log-spaced far."""
    bucket = jnp.zeros_like(relative)
    n = -relative
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (n < 0).astype(jnp.int32) * num_buckets
        n = jnp.abs(n)
    else:
        n = jnp.maximum(n, 0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    large = max_exact + (jnp.log(jnp.maximum(n, 1).astype(jnp.float32) / max_exact)
                         / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    large = jnp.minimum(large.astype(jnp.int32), num_buckets - 1)
    return bucket + jnp.where(is_small, n, large)


class RelativePositionBias(nnx.Module):
    """Per-head learned bias of the relative-position bucket, shared by all layers of a stack."""

    def __init__(self, num_heads: int, *, bidirectional: bool, num_buckets: int,
                 max_distance: int, rngs: nnx.Rngs):
        self.bidirectional = bidirectional
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        init = jax.nn.initializers.normal(1.0)
        self.table = nnx.Param(init(rngs.params(), (num_buckets, num_heads), jnp.float32),
                               logical_axes=(None, "heads"))

    def __call__(self, q_len: int, k_len: int, q_offset=0) -> jax.Array:
        """[1, H, Lq, Lk] bias; queries at positions q_offset + [0, Lq) (decoding with a
        cache: the new tokens' positions), keys at [0, Lk)."""
        relative = jnp.arange(k_len)[None, :] - (q_offset + jnp.arange(q_len))[:, None]
        buckets = relative_position_bucket(relative, self.bidirectional, self.num_buckets,
                                           self.max_distance)
        return jnp.transpose(self.table[...][buckets], (2, 0, 1))[None]


def attention_mask(q_segments: jax.Array, k_segments: jax.Array, causal: bool) -> jax.Array:
    """[B, 1, Lq, Lk] bool: same packed segment (and key not after query if causal)."""
    mask = q_segments[:, :, None] == k_segments[:, None, :]
    if causal:
        lq, lk = q_segments.shape[1], k_segments.shape[1]
        mask = mask & (jnp.arange(lk)[None, :] <= jnp.arange(lq)[:, None])[None]
    return mask[:, None]


class Attention(nnx.Module):
    """Multi-head attention; projections q, k, v [D, H, Dh] and o [H, Dh, D], no biases."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, *, dtype, rngs: nnx.Rngs,
                 init_scale: float = 1.0):
        init = jax.nn.initializers.variance_scaling(init_scale, "fan_in", "truncated_normal",
                                                    in_axis=0, out_axis=(1, 2))
        out_init = jax.nn.initializers.variance_scaling(init_scale, "fan_in", "truncated_normal",
                                                        in_axis=(0, 1), out_axis=2)
        shape = (dim, num_heads, head_dim)
        axes = ("embed", "heads", "kv")
        self.q = nnx.Param(init(rngs.params(), shape), logical_axes=axes)
        self.k = nnx.Param(init(rngs.params(), shape), logical_axes=axes)
        self.v = nnx.Param(init(rngs.params(), shape), logical_axes=axes)
        self.o = nnx.Param(out_init(rngs.params(), (num_heads, head_dim, dim)),
                           logical_axes=("heads", "kv", "embed"))
        self.dtype = jnp.dtype(dtype)

    def __call__(self, x: jax.Array, context: jax.Array, mask: jax.Array,
                 bias: Optional[jax.Array] = None, q_positions: Optional[jax.Array] = None,
                 k_positions: Optional[jax.Array] = None, rope_max_wavelength: float = 1e4,
                 cache_index: Optional[jax.Array] = None) -> jax.Array:
        """x [B, Lq, D] attends to context [B, Lk, D] under mask [B, 1, Lq, Lk].

        cache_index (self-attention with a cache from init_cache, decoding): x are the tokens
        at positions cache_index + [0, Lq); their keys and values are written into the cache
        there and x attends causally to every cached position up to its own (`mask` is not
        used)."""
        cast = lambda p: p[...].astype(self.dtype)
        q = jnp.einsum("bld,dhk->blhk", x.astype(self.dtype), cast(self.q))
        k = jnp.einsum("bld,dhk->blhk", context.astype(self.dtype), cast(self.k))
        v = jnp.einsum("bld,dhk->blhk", context.astype(self.dtype), cast(self.v))
        if q_positions is not None:
            q = rotary(q, q_positions, rope_max_wavelength)
            k = rotary(k, k_positions, rope_max_wavelength)
        if cache_index is not None:
            k, v, mask = self._cached(k, v, cache_index)
        logits = jnp.einsum("bqhk,bthk->bhqt", q, k).astype(jnp.float32) / math.sqrt(q.shape[-1])
        if bias is not None:
            logits = logits + bias
        logits = jnp.where(mask, logits, -1e9)
        probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        out = jnp.einsum("bhqt,bthk->bqhk", probs, v)
        return jnp.einsum("bqhk,hkd->bqd", out, cast(self.o))

    def init_cache(self, batch: int, max_length: int) -> None:
        """Zeroed key and value caches [..., B, max_length, H, Dh] for decoding (the leading
        axes of a stacked layer's parameters, if any, lead here too)."""
        *lead, _, heads, head_dim = self.k.shape
        shape = (*lead, batch, max_length, heads, head_dim)
        self.cached_key = nnx.Cache(jnp.zeros(shape, self.dtype))
        self.cached_value = nnx.Cache(jnp.zeros(shape, self.dtype))

    def _cached(self, k: jax.Array, v: jax.Array, index: jax.Array):
        """Writes the new keys and values [B, Lq, H, Dh] at `index`; returns the whole cache
        and the causal mask [1, 1, Lq, max_length] of the new queries over it."""
        if getattr(self, "cached_key", None) is None:
            raise ValueError("decoding needs a cache: call moejax.models.decode.init_cache first")
        at = (0, index, 0, 0)
        self.cached_key[...] = jax.lax.dynamic_update_slice(self.cached_key[...], k, at)
        self.cached_value[...] = jax.lax.dynamic_update_slice(self.cached_value[...], v, at)
        keys = self.cached_key[...]
        q_positions = index + jnp.arange(k.shape[1])
        mask = jnp.arange(keys.shape[1])[None, :] <= q_positions[:, None]          # [Lq, Lmax]
        return keys, self.cached_value[...], mask[None, None]
