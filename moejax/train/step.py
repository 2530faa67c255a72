"""One training step and one evaluation step for either model architecture."""

from __future__ import annotations

from typing import Dict, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from moejax.layer import MoeLayer
from moejax.train.loss import total_loss


def model_outputs(model: nnx.Module, batch: Mapping[str, jax.Array], deterministic: bool):
    """(logits, targets, loss weights, MoE stats) for a decoder-only or T5-style batch."""
    if "encoder_input_tokens" in batch:
        logits, stats = model(batch["encoder_input_tokens"], batch["decoder_input_tokens"],
                              encoder_segment_ids=batch["encoder_segment_ids"],
                              decoder_segment_ids=batch["decoder_segment_ids"],
                              deterministic=deterministic)
        return logits, batch["decoder_target_tokens"], batch["decoder_loss_weights"], stats
    logits, stats = model(batch["inputs"], segment_ids=batch["segment_ids"],
                          positions=batch["positions"], deterministic=deterministic)
    return logits, batch["targets"], batch["loss_mask"], stats


def apply_bias_updates(model: nnx.Module) -> None:
    """DeepSeek-V3 auxiliary-loss-free balancing for every MoE layer (after the optimizer)."""
    for _, node in nnx.iter_graph(model):
        if isinstance(node, MoeLayer):
            node.update_selection_bias()


def moe_metrics(stats: Dict[str, jax.Array]) -> Dict[str, jax.Array]:
    """Per-MoE-layer diagnostics worth logging ([num_moe_layers, ...] each)."""
    keys = ("tokens_per_expert", "dropped_fraction", "router_entropy", "max_violation",
            "router_z", "experts_per_token")
    return {f"moe/{k}": stats[k] for k in keys if k in stats}


@nnx.jit(static_argnums=3)
def train_step(model: nnx.Module, optimizer: nnx.Optimizer, batch, z_loss: float):
    """Gradient step on the batch; returns scalar losses and per-layer MoE metrics."""

    def loss_fn(model):
        logits, targets, weights, stats = model_outputs(model, batch, deterministic=False)
        loss, parts = total_loss(logits, targets, weights, stats, z_loss)
        return loss, (parts, stats)

    grads, (parts, stats) = nnx.grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    apply_bias_updates(model)
    parts["grad_norm"] = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
    return {**parts, **moe_metrics(stats)}


ENCODER_FEATURES = ("encoder_input_tokens", "encoder_segment_ids", "encoder_positions")


def shuffle_encoder(batch: Mapping[str, jax.Array]) -> Dict[str, jax.Array]:
    """The batch with every row's encoder inputs (tokens, segments, positions) taken from the
    row before it (a cyclic shift along the batch, so no row keeps its own for B >= 2): each
    decoder then reads the encoder of another example (encoder information, trainer.evaluate)."""
    return {k: jnp.roll(v, 1, axis=0) if k in ENCODER_FEATURES else v for k, v in batch.items()}


@nnx.jit(static_argnums=(2, 3))
def eval_step(model: nnx.Module, batch, z_loss: float, shuffled_encoder: bool = False):
    """Loss on a batch with the eval capacity factor and no dropout/noise; (sums, weight).

    shuffled_encoder: each row's decoder reads another row's encoder (`shuffle_encoder`).
    """
    if shuffled_encoder:
        batch = shuffle_encoder(batch)
    logits, targets, weights, stats = model_outputs(model, batch, deterministic=True)
    _, parts = total_loss(logits, targets, weights, stats, z_loss)
    return parts["cross_entropy"], jnp.sum(weights.astype(jnp.float32)), moe_metrics(stats)
