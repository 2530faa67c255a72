"""The training objective: cross-entropy + output z-loss + the MoE layers' auxiliary losses."""

from __future__ import annotations

from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, targets: jax.Array, weights: jax.Array, z_loss: float
                  ) -> Tuple[jax.Array, jax.Array]:
    """Mean token cross-entropy and output z-loss (z_loss · logsumexp², T5/PaLM) over weights.

    logits: [B, L, V] float32; targets, weights: [B, L].
    """
    weights = weights.astype(jnp.float32)
    denom = jnp.maximum(jnp.sum(weights), 1.0)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)          # [B, L]
    lse = jax.nn.logsumexp(logits, axis=-1)                                         # [B, L]
    return jnp.sum(ce * weights) / denom, z_loss * jnp.sum(jnp.square(lse) * weights) / denom


def token_accuracy(logits: jax.Array, targets: jax.Array, weights: jax.Array) -> jax.Array:
    """The weighted share of tokens whose most likely next token (argmax of logits [B, L, V])
    is the target."""
    weights = weights.astype(jnp.float32)
    hits = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)             # [B, L]
    return jnp.sum(hits * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def total_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array,
               moe_stats: Dict[str, jax.Array], z_loss: float
               ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
    """L = CE + z_out + mean over MoE layers of Σ coefficient · aux loss (α·L_B + c_z·L_z ...)."""
    ce, z = cross_entropy(logits, targets, weights, z_loss)
    aux = jnp.mean(moe_stats["aux_loss"]) if moe_stats else jnp.zeros((), jnp.float32)
    loss = ce + z + aux
    return loss, {"loss": loss, "cross_entropy": ce, "output_z_loss": z, "moe_aux_loss": aux}
