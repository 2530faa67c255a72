"""Multi-head latent attention (MLA; DeepSeek-AI 2024, DeepSeek-V2 Section 2.1, also V3).

Keys and values come from one low-rank latent per token, and only that latent (and a small
rotary key shared by all heads) is cached when decoding:

  c_kv = RMSNorm(x · W_DKV)              [B, L, r_kv]     the cached latent
  k_R  = RoPE(x · W_KR)                  [B, L, d_R]      one rotary key for every head (cached)
  k_C, v = c_kv · W_UK, c_kv · W_UV      [B, L, H, d_C], [B, L, H, d_V]
  q    = RMSNorm(x · W_DQ) · W_UQ        [B, L, H, d_C + d_R]   (x · W_Q without q compression)
  k    = [k_C ; k_R broadcast over heads],   q = [q_C ; RoPE(q_R)]
  out  = softmax(q·k / sqrt(d_C + d_R)) v · W_O

W_DKV and W_KR are one matrix `kv_a` [D, r_kv + d_R] and W_UK, W_UV one matrix `kv_b`
[r_kv, H, d_C + d_V], as in DeepSeek's released checkpoints. Rotary positions use the
half-split layout of moejax.models.attention.rotary (DeepSeek's checkpoints store the
interleaved layout: a fixed permutation of the rotary columns). YaRN context extension
(DeepSeek-V3's rope_scaling) is not modelled. The cache holds r_kv + d_R values per token
(576 for DeepSeek-V2/V3) instead of 2·H·Dh.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from moejax.models.attention import attend, rotary, write_cache
from moejax.models.layers import RMSNorm


@dataclasses.dataclass(frozen=True)
class LatentDims:
    """MLA's widths: q_lora_rank r_q (0: queries projected directly from x), kv_lora_rank
    r_kv, qk_nope_head_dim d_C, qk_rope_head_dim d_R, v_head_dim d_V."""
    q_lora_rank: int
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim


class LatentAttention(nnx.Module):
    """Causal self-attention through a compressed key/value latent (see the module docstring)."""

    def __init__(self, dim: int, num_heads: int, dims: LatentDims, *, dtype, rngs: nnx.Rngs,
                 init_scale: float = 1.0, norm_eps: float = 1e-6):
        def init(in_axis, out_axis):
            return jax.nn.initializers.variance_scaling(
                init_scale, "fan_in", "truncated_normal", in_axis=in_axis, out_axis=out_axis)
        h, d_qk = num_heads, dims.qk_head_dim
        if dims.q_lora_rank:
            self.q_a = nnx.Param(init(0, 1)(rngs.params(), (dim, dims.q_lora_rank)),
                                 logical_axes=("embed", "latent"))
            self.q_a_norm = RMSNorm(dims.q_lora_rank, norm_eps)
            self.q_b = nnx.Param(init(0, (1, 2))(rngs.params(), (dims.q_lora_rank, h, d_qk)),
                                 logical_axes=("latent", "heads", "kv"))
        else:
            self.q = nnx.Param(init(0, (1, 2))(rngs.params(), (dim, h, d_qk)),
                               logical_axes=("embed", "heads", "kv"))
        self.kv_a = nnx.Param(
            init(0, 1)(rngs.params(), (dim, dims.kv_lora_rank + dims.qk_rope_head_dim)),
            logical_axes=("embed", "latent"))
        self.kv_a_norm = RMSNorm(dims.kv_lora_rank, norm_eps)
        self.kv_b = nnx.Param(
            init(0, (1, 2))(rngs.params(),
                            (dims.kv_lora_rank, h, dims.qk_nope_head_dim + dims.v_head_dim)),
            logical_axes=("latent", "heads", "kv"))
        self.o = nnx.Param(init((0, 1), 2)(rngs.params(), (h, dims.v_head_dim, dim)),
                           logical_axes=("heads", "kv", "embed"))
        self.dims = dims
        self.dtype = jnp.dtype(dtype)

    def _w(self, name: str) -> jax.Array:
        return getattr(self, name)[...].astype(self.dtype)

    def queries(self, x: jax.Array) -> jax.Array:
        """x [B, L, D] -> q [B, L, H, d_C + d_R] before rotary positions."""
        if self.dims.q_lora_rank:
            c_q = self.q_a_norm(jnp.einsum("bld,dr->blr", x, self._w("q_a")))
            return jnp.einsum("blr,rhk->blhk", c_q, self._w("q_b"))
        return jnp.einsum("bld,dhk->blhk", x, self._w("q"))

    def latent(self, x: jax.Array, positions: jax.Array, max_wavelength: float):
        """x [B, L, D] -> the cached pair: c_kv [B, L, r_kv] and rotated k_R [B, L, d_R]."""
        c_kv, k_rope = jnp.split(jnp.einsum("bld,dr->blr", x, self._w("kv_a")),
                                 [self.dims.kv_lora_rank], axis=-1)
        k_rope = rotary(k_rope[:, :, None, :], positions, max_wavelength)[:, :, 0]
        return self.kv_a_norm(c_kv), k_rope

    def __call__(self, x: jax.Array, context: jax.Array, mask: jax.Array,
                 bias: Optional[jax.Array] = None, q_positions: Optional[jax.Array] = None,
                 k_positions: Optional[jax.Array] = None, rope_max_wavelength: float = 1e4,
                 cache_index: Optional[jax.Array] = None) -> jax.Array:
        """Self-attention of x [B, L, D] (context must be x) under mask [B, 1, L, L], with
        rotary positions q_positions [B, L]; the signature of Attention's."""
        del context, k_positions
        if bias is not None:
            raise ValueError("multi-head latent attention uses rotary positions, not a bias")
        dims, h = self.dims, self.o.shape[-3]
        x = x.astype(self.dtype)
        q = self.queries(x)
        q_nope, q_rope = jnp.split(q, [dims.qk_nope_head_dim], axis=-1)
        q = jnp.concatenate([q_nope, rotary(q_rope, q_positions, rope_max_wavelength)], -1)
        c_kv, k_rope = self.latent(x, q_positions, rope_max_wavelength)
        if cache_index is not None:
            (c_kv, k_rope), mask = write_cache(self, {"latent": c_kv, "rope_key": k_rope},
                                               cache_index)
        kv = jnp.einsum("btr,rhk->bthk", c_kv, self._w("kv_b"))
        k_nope, v = jnp.split(kv, [dims.qk_nope_head_dim], axis=-1)
        k_rope = jnp.broadcast_to(k_rope[:, :, None], (*k_rope.shape[:2], h, dims.qk_rope_head_dim))
        k = jnp.concatenate([k_nope, k_rope], axis=-1)                     # [B, T, H, d_C + d_R]
        out = attend(q, k, v, mask, None, self.dtype)                       # [B, L, H, d_V]
        return jnp.einsum("bqhk,hkd->bqd", out, self._w("o"))

    def init_cache(self, batch: int, max_length: int) -> None:
        """Zeroed caches of the latent [..., B, max_length, r_kv] and the rotary key
        [..., B, max_length, d_R] (leading axes of stacked layers first)."""
        *lead, _, _ = self.kv_a.shape
        shape = (*lead, batch, max_length)
        self.cached_latent = nnx.Cache(jnp.zeros((*shape, self.dims.kv_lora_rank), self.dtype))
        self.cached_rope_key = nnx.Cache(
            jnp.zeros((*shape, self.dims.qk_rope_head_dim), self.dtype))


__all__ = ["LatentAttention", "LatentDims"]
