"""Evaluation: token-weighted cross-entropy and accuracy over a split, the MoE layers' metrics,
(encoder-decoders) how much the decoder reads its encoder, and (decoder-only models) how much
earlier predictions take from later tokens. Used by the trainer at every
evaluation and by experiments/evaluate.py on any checkpoint.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils

from moejax.data import make_pipeline
from moejax.parallel import global_batch
from moejax.train.step import FIRST_HALF, SHUFFLED_ENCODER, SHUFFLED_FUTURE, eval_step


def evaluate(model, config, z_loss: float, mesh, split: Optional[str] = None
             ) -> Dict[str, Any]:
    """Token-weighted cross-entropy and next-token accuracy over the first train.eval_batches
    batches of `split` (default data.eval_split), and each MoE metric [num_moe_layers, ...]
    averaged over those batches.

    With train.eval_encoder_information (encoder-decoder models), also the cross-entropy with
    every row's decoder reading another row's encoder (`step.shuffle_encoder`), and
    encoder_information = that minus cross_entropy: the nats per target token the model takes
    from its encoder (about 0 for a model that ignores it).

    With train.eval_future_information (decoder-only models), also the cross-entropy of each
    row's first half with its own second half (cross_entropy_first_half) and with another
    row's (`step.split_future`), and future_information = the second minus the first: the nats
    per token that predictions take from later tokens of their row. Exactly 0 for a causal
    model; a router that sees the whole sequence (expert choice, Soft MoE, BASE, run in a
    causal decoder with moe.allow_non_causal_routing) can leak the future into the past, and
    this measures how much a trained model does.

    With several processes all of them run the same steps (each is a collective): a process
    whose share of the split has run out feeds empty batches, which weigh nothing, until every
    process has run out.
    """
    data = config.data.copy_and_resolve_references()
    data.shuffle_buffer_size = 1                     # the same batches every time, fast to start
    pipeline = make_pipeline(data, split=split or data.eval_split, seed=0,
                             process_index=jax.process_index(),
                             process_count=jax.process_count(), num_epochs=1)
    shuffled = bool(config.train.eval_encoder_information
                    and config.model.arch == "encoder_decoder")
    future = bool(config.train.eval_future_information
                  and config.model.arch != "encoder_decoder")
    sums = {"cross_entropy": 0.0, "accuracy": 0.0}
    shuffled_total, weight, moe = 0.0, 0.0, []
    halves = {FIRST_HALF: 0.0, SHUFFLED_FUTURE: 0.0, "weight": 0.0}
    for _ in range(config.train.eval_batches):
        batch = next(pipeline, None)
        have = np.array([batch is not None], np.int32)
        if jax.process_count() > 1:
            have = multihost_utils.process_allgather(have)
        if not np.any(have):
            break
        if batch is None:
            batch = pipeline.empty_batch()
        batch = global_batch(batch, mesh)
        means, w, metrics = eval_step(model, batch, z_loss)
        for key in sums:
            sums[key] += float(means[key]) * float(w)
        weight += float(w)
        moe.append(metrics)
        if shuffled:
            shuffled_ce = eval_step(model, batch, z_loss, SHUFFLED_ENCODER)[0]["cross_entropy"]
            shuffled_total += float(shuffled_ce) * float(w)
        if future:
            for variant in (FIRST_HALF, SHUFFLED_FUTURE):
                means, half_weight, _ = eval_step(model, batch, z_loss, variant)
                halves[variant] += float(means["cross_entropy"]) * float(half_weight)
            halves["weight"] += float(half_weight)
    result = {key: total / max(weight, 1.0) for key, total in sums.items()}
    if shuffled:
        result["cross_entropy_shuffled_encoder"] = shuffled_total / max(weight, 1.0)
        result["encoder_information"] = (result["cross_entropy_shuffled_encoder"]
                                         - result["cross_entropy"])
    if future:
        first, later = (halves[v] / max(halves["weight"], 1.0)
                        for v in (FIRST_HALF, SHUFFLED_FUTURE))
        result.update(cross_entropy_first_half=first, cross_entropy_shuffled_future=later,
                      future_information=later - first)
    if moe and moe[0]:
        result.update({k: np.mean([m[k] for m in moe], axis=0) for k in moe[0]})
    return result


def by_layer(result: Dict[str, Any], layer_names: List[str]) -> Dict[str, Any]:
    """An evaluation with each per-layer MoE metric ('moe/<name>': [num_moe_layers, ...]) as
    {layer name: value} (names from moejax.models.config.moe_layer_names), JSON-ready."""
    out: Dict[str, Any] = {}
    for key, value in result.items():
        value = np.asarray(value)
        if key.startswith("moe/") and value.ndim and len(value) == len(layer_names):
            out[key] = {name: v.tolist() for name, v in zip(layer_names, value)}
        else:
            out[key] = value.tolist()
    return out
