"""Multi-head attention with rotary positions (RoPE) or T5 relative position biases."""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from moejax.models.layers import RMSNorm


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


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
           bias: Optional[jax.Array] = None, dtype=jnp.float32) -> jax.Array:
    """Scaled dot-product attention with grouped keys and values.

    q [B, Lq, H, Dk]; k [B, Lk, Hkv, Dk]; v [B, Lk, Hkv, Dv] with H a multiple of Hkv: query
    head h reads key/value head h // (H / Hkv) (grouped-query attention, Ainslie et al. 2023;
    Hkv = H is multi-head attention, Hkv = 1 multi-query). mask [B, 1, Lq, Lk] bool; bias
    [1, H, Lq, Lk] added to the logits. Logits and softmax in float32. Returns [B, Lq, H, Dv].
    """
    b, lq, h, dk = q.shape
    hkv = k.shape[2]
    q = q.reshape(b, lq, hkv, h // hkv, dk)                                 # [B, Lq, Hkv, G, Dk]
    logits = jnp.einsum("bqhgk,bthk->bhgqt", q, k).astype(jnp.float32) / math.sqrt(dk)
    if bias is not None:
        logits = logits + bias.reshape(bias.shape[0], hkv, h // hkv, *bias.shape[2:])
    logits = jnp.where(mask[:, :, None], logits, -1e9)
    probs = jax.nn.softmax(logits, axis=-1).astype(dtype)                 # [B, Hkv, G, Lq, Lk]
    out = jnp.einsum("bhgqt,bthk->bqhgk", probs, v)
    return out.reshape(b, lq, h, v.shape[-1])


class Attention(nnx.Module):
    """Multi-head or grouped-query attention; projections q [D, H, Dh], k and v [D, Hkv, Dh],
    o [H, Dh, D].

    num_kv_heads: Hkv key/value heads (None: H; grouped-query attention when fewer).
    qkv_bias: biases on the q, k and v projections (Qwen1.5/Qwen2); none elsewhere.
    qk_norm: RMSNorm of the queries and keys after projection, before rotary positions:
      'per_head' over each head's Dh values (Qwen3), 'across_heads' over all H·Dh (resp.
      Hkv·Dh) values of a token (OLMoE), or 'none'.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int, *, dtype, rngs: nnx.Rngs,
                 init_scale: float = 1.0, num_kv_heads: Optional[int] = None,
                 qkv_bias: bool = False, qk_norm: str = "none", norm_eps: float = 1e-6):
        init = jax.nn.initializers.variance_scaling(init_scale, "fan_in", "truncated_normal",
                                                    in_axis=0, out_axis=(1, 2))
        out_init = jax.nn.initializers.variance_scaling(init_scale, "fan_in", "truncated_normal",
                                                        in_axis=(0, 1), out_axis=2)
        kv_heads = num_kv_heads or num_heads
        axes = ("embed", "heads", "kv")
        self.q = nnx.Param(init(rngs.params(), (dim, num_heads, head_dim)), logical_axes=axes)
        self.k = nnx.Param(init(rngs.params(), (dim, kv_heads, head_dim)), logical_axes=axes)
        self.v = nnx.Param(init(rngs.params(), (dim, kv_heads, head_dim)), logical_axes=axes)
        self.o = nnx.Param(out_init(rngs.params(), (num_heads, head_dim, dim)),
                           logical_axes=("heads", "kv", "embed"))
        if qkv_bias:
            for name, heads in (("q_bias", num_heads), ("k_bias", kv_heads), ("v_bias", kv_heads)):
                setattr(self, name, nnx.Param(jnp.zeros((heads, head_dim), jnp.float32),
                                              logical_axes=("heads", "kv")))
        self.qkv_bias = qkv_bias
        self.qk_norm = qk_norm
        if qk_norm != "none":
            per_head = qk_norm == "per_head"
            self.q_norm = RMSNorm(head_dim if per_head else num_heads * head_dim, norm_eps)
            self.k_norm = RMSNorm(head_dim if per_head else kv_heads * head_dim, norm_eps)
        self.dtype = jnp.dtype(dtype)

    def project(self, x: jax.Array, name: str) -> jax.Array:
        """x [B, L, D] -> the q, k or v heads [B, L, heads, Dh] (bias and QK norm applied)."""
        y = jnp.einsum("bld,dhk->blhk", x.astype(self.dtype), getattr(self, name)[...].astype(
            self.dtype))
        if self.qkv_bias:
            y = y + getattr(self, name + "_bias")[...].astype(self.dtype)
        if self.qk_norm != "none" and name != "v":
            norm = getattr(self, name + "_norm")
            y = norm(y) if self.qk_norm == "per_head" else norm(
                y.reshape(*y.shape[:2], -1)).reshape(y.shape)
        return y

    def __call__(self, x: jax.Array, context: jax.Array, mask: jax.Array,
                 bias: Optional[jax.Array] = None, q_positions: Optional[jax.Array] = None,
                 k_positions: Optional[jax.Array] = None, rope_max_wavelength: float = 1e4,
                 cache_index: Optional[jax.Array] = None) -> jax.Array:
        """x [B, Lq, D] attends to context [B, Lk, D] under mask [B, 1, Lq, Lk].

        cache_index (self-attention with a cache from init_cache, decoding): x are the tokens
        at positions cache_index + [0, Lq); their keys and values are written into the cache
        there and x attends causally to every cached position up to its own (`mask` is not
        used)."""
        q, k, v = self.project(x, "q"), self.project(context, "k"), self.project(context, "v")
        if q_positions is not None:
            q = rotary(q, q_positions, rope_max_wavelength)
            k = rotary(k, k_positions, rope_max_wavelength)
        if cache_index is not None:
            (k, v), mask = write_cache(self, {"key": k, "value": v}, cache_index)
        out = attend(q, k, v, mask, bias, self.dtype)                        # [B, Lq, H, Dh]
        return jnp.einsum("bqhk,hkd->bqd", out, self.o[...].astype(self.dtype))

    def init_cache(self, batch: int, max_length: int) -> None:
        """Zeroed key and value caches [..., B, max_length, Hkv, Dh] for decoding (the leading
        axes of a stacked layer's parameters, if any, lead here too)."""
        *lead, _, heads, head_dim = self.k.shape
        shape = (*lead, batch, max_length, heads, head_dim)
        self.cached_key = nnx.Cache(jnp.zeros(shape, self.dtype))
        self.cached_value = nnx.Cache(jnp.zeros(shape, self.dtype))


def write_cache(module: nnx.Module, new: dict, index: jax.Array):
    """Writes each new entry [B, Lq, ...] into module.cached_<name> at `index` (sequence
    axis 1); returns the whole caches (in `new`'s order) and the causal mask
    [1, 1, Lq, max_length] of the new queries over them."""
    if getattr(module, "cached_" + next(iter(new)), None) is None:
        raise ValueError("decoding needs a cache: call moejax.models.decode.init_cache first")
    caches = []
    for name, value in new.items():
        cache = getattr(module, "cached_" + name)
        at = (0, index) + (0,) * (value.ndim - 2)
        cache[...] = jax.lax.dynamic_update_slice(cache[...], value.astype(cache[...].dtype), at)
        caches.append(cache[...])
    length = caches[0].shape[1]
    q_positions = index + jnp.arange(next(iter(new.values())).shape[1])
    mask = jnp.arange(length)[None, :] <= q_positions[:, None]               # [Lq, Lmax]
    return caches, mask[None, None]
