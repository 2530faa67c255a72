"""Soft MoE's routing weights (Puigcerver et al. 2023): slots mix tokens, tokens mix slots.

Soft MoE makes no discrete choice, so it is its own layer (moejax.SoftMoeLayer); its family row
says so, and that it is not causal (every slot mixes all tokens of its group).
"""

from __future__ import annotations

from typing import Tuple

import jax
import jax.numpy as jnp

from moejax.routing.family import RouterFamily


def l2_normalize(x: jax.Array, axis: int, eps: float = 1e-6) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True) + eps)


def soft_moe_weights(x: jax.Array, phi: jax.Array, scale: jax.Array
                     ) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """x [G, S, D], phi [D, E·p], scale [] -> (logits, dispatch, combine), each [G, S, E·p]."""
    logits = jnp.einsum("gsd,dn->gsn", l2_normalize(x.astype(jnp.float32), -1),
                        scale * l2_normalize(phi, 0))
    return logits, jax.nn.softmax(logits, axis=1), jax.nn.softmax(logits, axis=2)


FAMILY = RouterFamily(
    name="soft_moe", route=None, choice="soft", causal=False, active_width=None,
    paper="Puigcerver et al. 2023, From Sparse to Soft Mixtures of Experts")
