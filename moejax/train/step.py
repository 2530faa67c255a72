"""One training step and one evaluation step for either model architecture.

Gradient accumulation (train.grad_accum_steps = N > 1): the batch's rows are split into N
microbatches (rows i, i+N, i+2N, ... form microbatch i, so each data shard keeps its rows) and
their gradients are summed under a jax.lax.scan before one optimizer update. The objective is
the big batch's: cross-entropy and output z-loss are weighted by each microbatch's share of the
batch's loss weights (the big batch's token mean, exactly), the MoE auxiliary losses (means over
routing groups, which microbatches split evenly) by 1/N; DeepSeek-V3's expert load is summed
over microbatches before the bias update. Routing groups and capacities are per microbatch, as
they are per data shard; random draws (dropout, router noise) differ from one big step's.
"""

from __future__ import annotations

from typing import Dict, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from moejax.layer import MoeLayer
from moejax.routing.router import ExpertLoad
from moejax.train.loss import cross_entropy, token_accuracy, total_loss


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


@nnx.jit(static_argnums=(3, 4))
def train_step(model: nnx.Module, optimizer: nnx.Optimizer, batch, z_loss: float,
               grad_accum_steps: int = 1):
    """Gradient step on the batch (summed over grad_accum_steps microbatches); returns scalar
    losses and per-layer MoE metrics."""
    if grad_accum_steps > 1:
        grads, parts, stats = accumulated_grads(model, batch, z_loss, grad_accum_steps)
    else:
        def loss_fn(model):
            logits, targets, weights, stats = model_outputs(model, batch, deterministic=False)
            loss, parts = total_loss(logits, targets, weights, stats, z_loss)
            return loss, (parts, stats)

        grads, (parts, stats) = nnx.grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    apply_bias_updates(model)
    parts["grad_norm"] = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
    return {**parts, **moe_metrics(stats)}


def microbatches(batch: Mapping[str, jax.Array], n: int) -> Dict[str, jax.Array]:
    """[B, ...] -> [N, B/N, ...]: microbatch i holds rows i, i+N, i+2N, ..."""
    def split(x):
        return jnp.swapaxes(x.reshape(x.shape[0] // n, n, *x.shape[1:]), 0, 1)
    return {k: split(v) for k, v in batch.items()}


def loss_weights(batch: Mapping[str, jax.Array]) -> jax.Array:
    return batch["decoder_loss_weights" if "encoder_input_tokens" in batch else "loss_mask"]


def accumulated_grads(model: nnx.Module, batch, z_loss: float, n: int):
    """(Σ gradients, loss parts, MoE stats averaged) over n microbatches (module docstring);
    the model's state (random streams, expert load) moves through them in turn."""
    total_weight = jnp.maximum(jnp.sum(loss_weights(batch).astype(jnp.float32)), 1.0)
    graphdef, state = nnx.split(model)
    zero_grads = jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param))

    def one(carry, micro):
        grads, load, state = carry
        model = nnx.merge(graphdef, state)

        def loss_fn(model):
            logits, targets, weights, stats = model_outputs(model, micro, deterministic=False)
            share = jnp.sum(weights.astype(jnp.float32)) / total_weight
            ce, z = cross_entropy(logits, targets, weights, z_loss)
            aux = jnp.mean(stats["aux_loss"]) if stats else jnp.zeros((), jnp.float32)
            parts = {"cross_entropy": ce * share, "output_z_loss": z * share,
                     "moe_aux_loss": aux / n}
            return sum(parts.values()), (parts, stats)

        micro_grads, (parts, stats) = nnx.grad(loss_fn, has_aux=True)(model)
        load = jax.tree.map(jnp.add, load, nnx.state(model, ExpertLoad))
        grads = jax.tree.map(jnp.add, grads, micro_grads)
        return (grads, load, nnx.state(model)), (parts, stats)

    zero_load = jax.tree.map(jnp.zeros_like, nnx.state(model, ExpertLoad))
    (grads, load, state), (parts, stats) = jax.lax.scan(
        one, (zero_grads, zero_load, state), microbatches(batch, n))
    nnx.update(model, state)
    nnx.update(model, load)                       # the whole batch's load, for the bias update
    parts = {k: jnp.sum(v) for k, v in parts.items()}
    parts["loss"] = parts["cross_entropy"] + parts["output_z_loss"] + parts["moe_aux_loss"]
    return grads, parts, jax.tree.map(lambda v: jnp.mean(v, axis=0), stats)


ENCODER_FEATURES = ("encoder_input_tokens", "encoder_segment_ids", "encoder_positions")


def shuffle_encoder(batch: Mapping[str, jax.Array]) -> Dict[str, jax.Array]:
    """The batch with every row's encoder inputs (tokens, segments, positions) taken from the
    row before it (a cyclic shift along the batch, so no row keeps its own for B >= 2): each
    decoder then reads the encoder of another example (encoder information, trainer.evaluate)."""
    return {k: jnp.roll(v, 1, axis=0) if k in ENCODER_FEATURES else v for k, v in batch.items()}


# a decoder-only row's inputs: what split_future takes from another row in the second half
FUTURE_FEATURES = ("inputs", "segment_ids", "positions")


def split_future(batch: Mapping[str, jax.Array], shuffled: bool) -> Dict[str, jax.Array]:
    """A decoder-only batch [B, L] whose loss counts each row's first half alone (positions
    < L // 2), its second half's inputs (tokens, segments, positions) kept or, if shuffled,
    taken from the row before it (a cyclic shift along the batch). Targets stay the row's own,
    so both versions score the same tokens from the same earlier inputs: a causal model gives
    them the same loss exactly, and a router that sees the whole sequence (expert choice, Soft
    MoE, BASE) lets later tokens change earlier predictions (future information,
    evaluation.evaluate)."""
    length = batch["inputs"].shape[1]
    later = jnp.arange(length) >= length // 2                                 # [L]
    out = dict(batch)
    out["loss_mask"] = jnp.where(later, jnp.zeros_like(batch["loss_mask"]), batch["loss_mask"])
    if shuffled:
        for key in FUTURE_FEATURES:
            out[key] = jnp.where(later, jnp.roll(batch[key], 1, axis=0), batch[key])
    return out


PLAIN, SHUFFLED_ENCODER = "plain", "shuffled_encoder"
FIRST_HALF, SHUFFLED_FUTURE = "first_half", "shuffled_future"
VARIANTS = {PLAIN: lambda b: b, SHUFFLED_ENCODER: shuffle_encoder,
            FIRST_HALF: lambda b: split_future(b, shuffled=False),
            SHUFFLED_FUTURE: lambda b: split_future(b, shuffled=True)}


@nnx.jit(static_argnums=(2, 3))
def eval_step(model: nnx.Module, batch, z_loss: float, variant: str = PLAIN):
    """A batch with the eval capacity factor and no dropout/noise: ({cross_entropy, accuracy}
    as the batch's token means, the batch's loss weight, MoE metrics).

    variant: PLAIN; SHUFFLED_ENCODER, each row's decoder reads another row's encoder
    (`shuffle_encoder`); FIRST_HALF and SHUFFLED_FUTURE, a decoder-only model's loss on each
    row's first half with its own second half and with another row's (`split_future`).
    """
    batch = VARIANTS[variant](batch)
    logits, targets, weights, stats = model_outputs(model, batch, deterministic=True)
    _, parts = total_loss(logits, targets, weights, stats, z_loss)
    means = {"cross_entropy": parts["cross_entropy"],
             "accuracy": token_accuracy(logits, targets, weights)}
    return means, jnp.sum(weights.astype(jnp.float32)), moe_metrics(stats)
