"""The experts: E feed-forward networks stored as stacked weights [E, D, F] and [E, F, D].

Activations: relu, gelu, silu, and the gated GEGLU (ST-MoE) and SwiGLU (Mixtral, DeepSeek)
(Shazeer 2020, "GLU Variants Improve Transformer"). Weights carry logical axis names
(`expert`, `embed`, `mlp`) that the sharding rules map to mesh axes.
"""

from __future__ import annotations

import functools
from typing import Callable, Dict, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from moejax.grouped import grouped_matmul
from moejax.megablox import megablox_matmul

GATED = {"geglu": jax.nn.gelu, "swiglu": jax.nn.silu}
PLAIN = {"relu": jax.nn.relu, "gelu": jax.nn.gelu, "silu": jax.nn.silu}


def stacked_matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """x [..., N, D] · w [..., D, F] -> [..., N, F] (one expert, or E stacked experts)."""
    return jnp.einsum("...nd,...df->...nf", x, w)


def expert_ffn(w: Dict[str, jax.Array], x: jax.Array, activation: str, dtype,
               dropout_rate: float = 0.0, key: Optional[jax.Array] = None,
               matmul: Callable[[jax.Array, jax.Array], jax.Array] = stacked_matmul
               ) -> jax.Array:
    """y = act(x·wi)·wo, or (act(x·wi_gate) ⊙ x·wi)·wo for gated activations.

    `matmul` multiplies rows by weights: stacked_matmul for one expert (x [N, D], wi [D, F]) or
    stacked experts (x [E, N, D], wi [E, D, F]); a ragged_dot for rows sorted by expert.
    Matmuls run in `dtype`; dropout on the hidden layer when a key is given.
    """
    x = x.astype(dtype)
    h = matmul(x, w["wi"].astype(dtype))
    if activation in GATED:
        h = GATED[activation](matmul(x, w["wi_gate"].astype(dtype))) * h
    else:
        h = PLAIN[activation](h)
    if key is not None and dropout_rate > 0.0:
        keep = jax.random.bernoulli(key, 1.0 - dropout_rate, h.shape)
        h = jnp.where(keep, h / (1.0 - dropout_rate), 0.0).astype(dtype)
    return matmul(h, w["wo"].astype(dtype))


def resolve_grouped_matmul(impl: str) -> str:
    """'auto' -> 'ragged_dot' on TPU/GPU, 'blocks' on CPU (where ragged_dot is dense)."""
    if impl != "auto":
        return impl
    return "blocks" if jax.default_backend() == "cpu" else "ragged_dot"


class Experts(nnx.Module):
    """E expert FFNs with stacked weights wi [E, D, F], (wi_gate [E, D, F]), wo [E, F, D]."""

    def __init__(self, num_experts: int, model_dim: int, hidden_dim: int, *,
                 activation: str = "relu", init_scale: float = 1.0, dtype="float32",
                 dropout_rate: float = 0.0, rngs: nnx.Rngs):
        self.activation = activation
        self.dtype = jnp.dtype(dtype)
        self.dropout_rate = dropout_rate
        init = jax.nn.initializers.variance_scaling(
            init_scale, "fan_in", "truncated_normal", in_axis=-2, out_axis=-1, batch_axis=(0,))
        e, d, f = num_experts, model_dim, hidden_dim
        self.wi = nnx.Param(init(rngs.params(), (e, d, f)), logical_axes=("expert", "embed", "mlp"))
        if activation in GATED:
            self.wi_gate = nnx.Param(init(rngs.params(), (e, d, f)),
                                     logical_axes=("expert", "embed", "mlp"))
        self.wo = nnx.Param(init(rngs.params(), (e, f, d)), logical_axes=("expert", "mlp", "embed"))

    @classmethod
    def from_config(cls, cfg, model_dim: int, *, rngs: nnx.Rngs, num_experts=None,
                    hidden_dim=None) -> "Experts":
        """The experts a MoeConfig describes (num_experts / hidden_dim override E and F)."""
        return cls(num_experts or cfg.num_experts, model_dim, hidden_dim or cfg.hidden_dim,
                   activation=cfg.activation, init_scale=cfg.expert_init_scale,
                   dtype=cfg.dtype, dropout_rate=cfg.expert_dropout, rngs=rngs)

    def weights(self) -> Dict[str, jax.Array]:
        w = {"wi": self.wi[...], "wo": self.wo[...]}
        if self.activation in GATED:
            w["wi_gate"] = self.wi_gate[...]
        return w

    def __call__(self, x: jax.Array, key: Optional[jax.Array] = None) -> jax.Array:
        """x [E, N, D] (row block n of expert e) -> [E, N, D]."""
        return expert_ffn(self.weights(), x, self.activation, self.dtype, self.dropout_rate, key)

    def grouped(self, x: jax.Array, group_sizes: jax.Array, *, impl: str = "auto",
                block_size: int = 128, key: Optional[jax.Array] = None) -> jax.Array:
        """x [N, D] rows sorted by expert, group_sizes [E] -> [N, D]; rows past the groups -> 0."""
        return grouped_ffn(self.weights(), x, group_sizes, self.activation, self.dtype,
                           impl=impl, block_size=block_size, dropout_rate=self.dropout_rate,
                           key=key)


def grouped_ffn(w: Dict[str, jax.Array], x: jax.Array, group_sizes: jax.Array, activation: str,
                dtype, *, impl: str = "auto", block_size: int = 128, dropout_rate: float = 0.0,
                key: Optional[jax.Array] = None) -> jax.Array:
    """Each row of x [N, D] (sorted by expert, group_sizes [E]) through its expert -> [N, D].

    impl: 'ragged_dot' (jax.lax.ragged_dot), 'blocks' (moejax.grouped.grouped_matmul),
    'megablox' (moejax.megablox, a Pallas TPU kernel) or 'auto'. Rows past the last group come
    back as zeros.
    """
    impl = resolve_grouped_matmul(impl)
    if impl == "blocks":
        matmul = lambda rows, w_e: grouped_matmul(rows, w_e, group_sizes, block_size)
        return expert_ffn(w, x, activation, dtype, dropout_rate, key, matmul)
    if impl == "megablox":
        matmul = lambda rows, w_e: megablox_matmul(rows, w_e, group_sizes)
        return expert_ffn(w, x, activation, dtype, dropout_rate, key, matmul)
    ragged = functools.partial(ragged_matmul, group_sizes=group_sizes)
    return expert_ffn(w, x, activation, dtype, dropout_rate, key, ragged)


def ragged_matmul(x: jax.Array, w: jax.Array, group_sizes: jax.Array) -> jax.Array:
    """Rows x [N, D] sorted by expert times their expert's w [E, D, F] -> [N, F]."""
    return jax.lax.ragged_dot(x, w, group_sizes)
