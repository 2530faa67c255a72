"""Soft MoE's routing weights (Puigcerver et al. 2023): slots mix tokens, tokens mix slots.

Soft MoE makes no discrete choice, so it is its own layer (moejax.SoftMoeLayer); its family row
says so, and that it is not causal (every slot mixes all tokens of its group).
"""

from __future__ import annotations

from typing import Optional, Tuple

import jax
import jax.numpy as jnp

from moejax.routing.family import RouterFamily


def l2_normalize(x: jax.Array, axis: int, eps: float = 1e-6) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True) + eps)


def soft_moe_weights(x: jax.Array, phi: jax.Array, scale: jax.Array,
                     mask: Optional[jax.Array] = None
                     ) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """x [G, S, D], phi [D, E·p], scale [] -> (logits, dispatch, combine), each [G, S, E·p].

    mask [G, S]: real tokens; padding gets no dispatch weight (a slot mixes real tokens only).
    A group of padding only dispatches nothing."""
    logits = jnp.einsum("gsd,dn->gsn", l2_normalize(x.astype(jnp.float32), -1),
                        scale * l2_normalize(phi, 0))
    if mask is None:
        dispatch = jax.nn.softmax(logits, axis=1)
    else:
        real = mask[..., None] != 0                                          # [G, S, 1]
        # finite stand-in for −∞: a group of padding only stays NaN-free (then zeroed)
        dispatch = jax.nn.softmax(jnp.where(real, logits, -1e30), axis=1)
        dispatch = jnp.where(real, dispatch, 0.0)
    return logits, dispatch, jax.nn.softmax(logits, axis=2)


FAMILY = RouterFamily(
    name="soft_moe", route=None, choice="soft", causal=False, active_width=None,
    paper="Puigcerver et al. 2023, From Sparse to Soft Mixtures of Experts")
