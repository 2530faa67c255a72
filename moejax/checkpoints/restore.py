"""A trained model from a workdir's checkpoint, for evaluation or sampling (no training)."""

from __future__ import annotations

from flax import nnx

from moejax.checkpoints.store import Checkpointer
from moejax.models import init_model
from moejax.parallel import shard_model, shard_optimizer
from moejax.train.optimizer import make_optimizer


def restore_model(workdir: str, step: int, config, model_cfg, mesh) -> nnx.Module:
    """The model of `config` (resolved to model_cfg, placed on mesh) with the weights of
    WORKDIR's checkpoint `step`. The optimizer state is read too (a checkpoint restores
    whole) and then dropped. Call under `jax.set_mesh(mesh)`."""
    model = shard_model(lambda: init_model(model_cfg, config.train.seed), mesh)
    optimizer = shard_optimizer(lambda m: make_optimizer(
        config.optimizer, m, config.train.num_steps), model, mesh)
    with Checkpointer(workdir, config.train.keep_checkpoints) as checkpoints:
        checkpoints.restore(step, model, optimizer)
    del optimizer
    return model
