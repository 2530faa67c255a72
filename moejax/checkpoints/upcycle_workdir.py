"""Upcycles a dense run's checkpoint into a new MoE workdir the trainer resumes from.

    plan = prepare(config, dense_workdir, workdir)    # every check, shapes only, one line each
    write(plan)                                       # WORKDIR/checkpoints/<dense step>
    train_and_evaluate(config, workdir)               # continues from the dense step

The written checkpoint is a trainer checkpoint (moejax.checkpoints.store.Checkpointer): the MoE
model and optimizer (moejax.checkpoints.upcycle), the dense run's data iterator state, so training
continues on the data that comes next, and the MoE config. Komatsuzaki et al. 2022, Sparse
Upcycling: Training Mixture-of-Experts from Dense Checkpoints.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
from etils import epath
from flax import nnx

from moejax.checkpoints import info, upcycle
from moejax.checkpoints.store import (Checkpointer, checkpoint_directory, restore_into,
                                      to_saveable)
from moejax.data import make_tokenizer
from moejax.errors import ConfigError, check, check_choice
from moejax.models import build_model, count_params, init_model
from moejax.models.config import ModelConfig
from moejax.parallel import shard_model, shard_optimizer
from moejax.train import run_config
from moejax.train.config import resolve
from moejax.train.logs import Progress
from moejax.train.mesh import training_mesh
from moejax.train.optimizer import make_optimizer

# data fields that only say where files are: they may move between the two runs
DATA_LOCATIONS = ("data_dir", "spm_model_path")


@dataclasses.dataclass
class Plan:
    """Everything write() needs, checked."""
    config: Any                     # the MoE experiment config
    dense_config: Any               # the dense run's stored config
    model_cfg: ModelConfig
    dense_model_cfg: ModelConfig
    dense_workdir: str
    workdir: str
    step: int
    optimizer_state: str
    mesh: Any


def _same_data(config, dense_config) -> None:
    """The dense run's data iterator state resumes only an identically built pipeline."""
    for name in sorted(set(config.data.keys()) | set(dense_config.data.keys())):
        if name in DATA_LOCATIONS:
            continue
        mine, theirs = config.data.get(name), dense_config.data.get(name)
        check(mine == theirs,
              f"upcycle: data.{name}={mine!r} differs from the dense run's {theirs!r}; the "
              "dense run's data iterator resumes only the same data (use its value)")
    check(config.train.seed == dense_config.train.seed,
          f"upcycle: train.seed={config.train.seed} differs from the dense run's "
          f"{dense_config.train.seed}; the dense run's data iterator resumes only the same "
          "shuffling (use its value)")


def _same_optimizer(config, dense_config) -> None:
    """Slots and counters correspond only between the same optimizer settings."""
    mine, theirs = config.optimizer, dense_config.optimizer
    check(mine.name == theirs.name,
          f"upcycle: optimizer.name={mine.name!r} differs from the dense run's "
          f"{theirs.name!r}; its state (step counts, moments) cannot be carried over")
    check(bool(mine.grad_clip_norm) == bool(theirs.grad_clip_norm),
          f"upcycle: optimizer.grad_clip_norm={mine.grad_clip_norm} must be on or off like "
          f"the dense run's ({theirs.grad_clip_norm}): it changes the optimizer state")


def _abstract(model_cfg: ModelConfig, optimizer_cfg, num_steps: int):
    """Shapes of (model dict, optimizer dict, parameter dict); nothing is allocated."""

    def make():
        model = build_model(model_cfg, rngs=nnx.Rngs(0))
        optimizer = make_optimizer(optimizer_cfg, model, num_steps)
        return (to_saveable(nnx.state(model)), to_saveable(nnx.state(optimizer)),
                nnx.to_pure_dict(nnx.state(model, nnx.Param)))

    return jax.eval_shape(make)


def _check_stored_shapes(dense_workdir: str, step: int, dense_model) -> None:
    """The dense checkpoint's stored parameters are the ones its stored config builds."""
    stored = upcycle.flatten(info.array_metadata(dense_workdir, step)["model"])
    built = upcycle.flatten(dense_model)
    for path, leaf in built.items():
        have = stored.get(path)
        check(have is not None and tuple(have.shape) == tuple(leaf.shape),
              f"upcycle: the dense checkpoint's {path} is "
              f"{'missing' if have is None else tuple(have.shape)} but its stored config "
              f"builds {tuple(leaf.shape)}; the checkpoint does not match its config")


def prepare(config, dense_workdir: str, workdir: str, *, step: int | None = None,
            optimizer_state: str = "carry", train: bool = False) -> Plan:
    """Checks everything before anything big is built; one ConfigError line on failure.

    train: the run continues training afterwards (config.train.num_steps must exceed the
    dense step).
    """
    check_choice("--optimizer_state", optimizer_state, upcycle.OPTIMIZER_STATE_MODES)
    present = info.steps(workdir)
    check(not present and not _has_entries(checkpoint_directory(workdir)),
          f"upcycle: {checkpoint_directory(workdir)} is not empty"
          + (f" (steps {', '.join(map(str, present))})" if present else "")
          + "; upcycle into a new --workdir")
    log = epath.Path(workdir) / "metrics.jsonl"
    check(not log.exists(), f"upcycle: {log} exists (another run's log); upcycle into a new "
                            "--workdir")
    try:
        step = info.choose_step(dense_workdir, step)
    except ConfigError as err:
        raise ConfigError(f"upcycle: {err}") from err
    dense_config = info.read_config(dense_workdir, step)
    model_cfg = resolve(config, make_tokenizer(config.data).vocab_size)
    try:
        dense_model_cfg = resolve(dense_config, make_tokenizer(dense_config.data).vocab_size)
    except ConfigError as err:
        raise ConfigError(f"upcycle: the dense run's stored config is invalid here: {err}"
                          ) from err
    upcycle.check_compatible(dense_model_cfg, model_cfg)
    _same_data(config, dense_config)
    _same_optimizer(config, dense_config)
    if train:
        check(config.train.num_steps > step,
              f"upcycle: train.num_steps={config.train.num_steps} must exceed the dense "
              f"checkpoint's step {step} to continue training (or --notrain)")
    mesh = training_mesh(config, model_cfg)
    processes = len(info.read_data_state(dense_workdir, step))
    check(processes == jax.process_count(),
          f"upcycle: the dense checkpoint was written by {processes} processes but "
          f"{jax.process_count()} are running; its data iterators cannot be resumed")
    dense = _abstract(dense_model_cfg, dense_config.optimizer, dense_config.train.num_steps)
    moe = _abstract(model_cfg, config.optimizer, config.train.num_steps)
    _check_stored_shapes(dense_workdir, step, dense[0])
    try:
        jax.eval_shape(lambda d, m: (                   # every shape check, no weights
            upcycle.upcycle_model(d[0], m[0], dense_model_cfg, model_cfg),
            upcycle.upcycle_optimizer(d[1], m[1], d[2], m[2], dense_model_cfg, model_cfg,
                                      optimizer_state)), dense, moe)
    except ConfigError as err:          # jax appends a note on its filtered traceback
        raise ConfigError(str(err).splitlines()[0]) from err
    return Plan(config, dense_config, model_cfg, dense_model_cfg, str(dense_workdir),
                str(workdir), step, optimizer_state, mesh)


def _has_entries(directory: str) -> bool:
    path = epath.Path(directory)
    return path.exists() and any(True for _ in path.iterdir())


def write(plan: Plan) -> str:
    """Restores the dense checkpoint, upcycles it, saves WORKDIR/checkpoints/<step>.

    Returns that directory. Both models are built sharded on the MoE config's mesh, exactly as
    the trainer builds them.
    """
    with jax.set_mesh(plan.mesh):
        return _write(plan)


def _write(plan: Plan) -> str:
    config, dense_config, mesh = plan.config, plan.dense_config, plan.mesh
    dense_seed, seed = dense_config.train.seed, config.train.seed
    dense_model = shard_model(lambda: init_model(plan.dense_model_cfg, dense_seed), mesh)
    dense_optimizer = shard_optimizer(lambda model: make_optimizer(
        dense_config.optimizer, model, dense_config.train.num_steps), dense_model, mesh)
    with Checkpointer(plan.dense_workdir, dense_config.train.keep_checkpoints) as source:
        data_state, _ = source.restore(plan.step, dense_model, dense_optimizer)
    Progress.show(f"upcycle: read the dense {plan.dense_model_cfg.arch} model "
                  f"({count_params(dense_model) / 1e6:.2f}M parameters) from "
                  f"{source.directory}/{plan.step}")

    model = shard_model(lambda: init_model(plan.model_cfg, seed), mesh)
    optimizer = shard_optimizer(lambda model: make_optimizer(
        config.optimizer, model, config.train.num_steps), model, mesh)
    template_model, template_optimizer = (to_saveable(nnx.state(model)),
                                          to_saveable(nnx.state(optimizer)))
    values = upcycle.upcycle_model(to_saveable(nnx.state(dense_model)), template_model,
                                   plan.dense_model_cfg, plan.model_cfg)
    moments = upcycle.upcycle_optimizer(
        to_saveable(nnx.state(dense_optimizer)), template_optimizer,
        nnx.to_pure_dict(nnx.state(dense_model, nnx.Param)),
        nnx.to_pure_dict(nnx.state(model, nnx.Param)),
        plan.dense_model_cfg, plan.model_cfg, plan.optimizer_state)
    del dense_model, dense_optimizer
    _place_into(model, values, template_model)
    _place_into(optimizer, moments, template_optimizer)
    moe = plan.model_cfg.moe
    Progress.show(f"upcycle: {plan.model_cfg.arch} MoE model ({count_params(model) / 1e6:.2f}M "
                  f"parameters, router={moe.router}, E={moe.num_experts}, "
                  f"k={moe.num_selected_experts}): every expert a copy of its layer's dense "
                  f"FFN, fresh routers, optimizer state {plan.optimizer_state}")
    with Checkpointer(plan.workdir, config.train.keep_checkpoints) as target:
        target.save(plan.step, model, optimizer, data_state, config.to_json_best_effort())
    if jax.process_index() == 0:
        run_config.write(plan.workdir, config, upcycled_from={
            "dense_workdir": plan.dense_workdir, "step": plan.step,
            "optimizer_state": plan.optimizer_state})
    Progress.show(f"upcycle: wrote {target.directory}/{plan.step}")
    return f"{target.directory}/{plan.step}"


def _place_into(node, values, template) -> None:
    """Writes upcycled values into a live module, each placed like the template's array."""
    placed = jax.tree.map(lambda v, t: jax.device_put(v, t.sharding)
                          if hasattr(t, "sharding") else v, values, template)
    restore_into(node, placed)
