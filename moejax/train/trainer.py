"""The training loop: resume, train, evaluate, log, checkpoint, plot.

    workdir/checkpoints/<step>/   orbax: model, optimizer, RNG streams, data iterator, config
    workdir/config.json           the resolved config and command line of the latest start
    workdir/metrics.jsonl         one record per log/eval step (train and eval splits); train
                                  records carry train_seconds: time in train steps so far,
                                  without the first step of each process (compilation)
    workdir/tensorboard/          TensorBoard event files
    workdir/plots/*.png           loss curves and expert load per MoE layer (at the end)
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Dict

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils

from moejax.checkpoints.store import Checkpointer, set_aside_after
from moejax.data import make_pipeline, make_tokenizer
from moejax.data.sources import open_source
from moejax.errors import ConfigError, check
from moejax.models import count_params, init_model
from moejax.models.config import moe_layer_names
from moejax.models.flops import active_params, train_flops_per_example
from moejax.parallel import global_batch, shard_model, shard_optimizer
from moejax.train import plots, run_config
from moejax.train.config import resolve
from moejax.train.evaluation import evaluate
from moejax.train.logs import MetricsLog, NoLog, Progress, is_remote
from moejax.train.mesh import describe, training_mesh
from moejax.train.optimizer import learning_rate_schedule, make_optimizer
from moejax.train.profile import StepProfiler
from moejax.train.step import train_step
from moejax.train.stop import STOP
from moejax.train.throughput import StepTimer, peak_flops, rates
from moejax.train.wandb_log import WandbWriter
from moejax.train.workdir_lock import WorkdirLock


class TrainingDiverged(RuntimeError):
    """The loss, gradients or state became NaN or Inf; the last good checkpoint is kept."""


@jax.jit
def all_finite(tree) -> jax.Array:
    """Whether every floating-point leaf of tree is finite (a scalar bool)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def train_and_evaluate(config, workdir: str) -> Dict[str, Any]:
    """Trains config in workdir (resuming from its latest checkpoint); returns the last eval."""
    tokenizer = make_tokenizer(config.data)
    model_cfg = resolve(config, tokenizer.vocab_size)       # every config error before compiling
    mesh = training_mesh(config, model_cfg)
    for split in {config.data.train_split, config.data.eval_split}:
        open_source(config.data, split)           # a missing dataset or split fails here
    _make_workdir(workdir)
    lock = WorkdirLock(workdir, enabled=jax.process_index() == 0 and not is_remote(workdir))
    with STOP, lock:
        if lock.stale:
            Progress.show(f"took over the lock of process {lock.stale.get('pid')}, which is "
                          f"no longer running")
        if config.train.restore_step and jax.process_index() == 0:
            moved = set_aside_after(workdir, config.train.restore_step)
            if moved:
                Progress.show(f"moved checkpoints {', '.join(map(str, moved))} to "
                              f"{workdir}/checkpoints_set_aside; resuming from step "
                              f"{config.train.restore_step}")
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("restore_step")
        with jax.set_mesh(mesh), \
                Checkpointer(workdir, config.train.keep_checkpoints) as checkpoints:
            return _train(config, workdir, model_cfg, mesh, checkpoints)


def _model_flops(model, model_cfg, batch) -> float:
    """Model FLOPs of one training step on this batch's shapes (moejax.models.flops; 0 where
    they are undefined, e.g. Soft MoE)."""
    if "encoder_input_tokens" in batch:
        rows = batch["encoder_input_tokens"].shape[0]
        lengths = {"encoder": batch["encoder_input_tokens"].shape[1],
                   "decoder": batch["decoder_target_tokens"].shape[1]}
    else:
        rows, lengths = batch["inputs"].shape[0], {"decoder": batch["inputs"].shape[1]}
    per_example = train_flops_per_example(model, model_cfg, lengths)
    return rows * per_example if per_example else 0.0


def _make_workdir(workdir: str) -> None:
    """Creates workdir, or one ConfigError line saying why it cannot be written."""
    path = epath.Path(workdir)
    check(not path.exists() or path.is_dir(), f"--workdir {workdir} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not is_remote(workdir):
            probe = path / f".write_test_{os.getpid()}"
            probe.write_text("")
            probe.unlink()
    except OSError as err:
        raise ConfigError(f"--workdir {workdir} cannot be written: {err.strerror or err}"
                          ) from None


def _train(config, workdir: str, model_cfg, mesh, checkpoints: Checkpointer) -> Dict[str, Any]:
    t = config.train
    seed = t.seed
    model = shard_model(lambda: init_model(model_cfg, seed), mesh)
    optimizer = shard_optimizer(
        lambda model: make_optimizer(config.optimizer, model, t.num_steps), model, mesh)
    train_data = make_pipeline(config.data, split=config.data.train_split, seed=seed,
                               process_index=jax.process_index(),
                               process_count=jax.process_count())
    latest = checkpoints.latest_step()       # 0: a checkpoint imported (experiments.import_hf)
    step = latest or 0
    # a workdir restored from another run's checkpoint (upcycling, continued training) has no
    # log yet: it is evaluated at its first step too, which is where its curve starts
    fresh_log = not (epath.Path(workdir) / "metrics.jsonl").exists()
    if jax.process_count() > 1:
        fresh_log = bool(multihost_utils.broadcast_one_to_all(np.array(fresh_log)))
    if latest is not None:
        data_state, _ = checkpoints.restore(step, model, optimizer)
        if data_state:                        # an import has no data position: the start
            train_data.set_state(data_state)
        Progress.show(f"resumed from {checkpoints.directory}/{step}")
    log = NoLog()
    if jax.process_index() == 0:
        names = moe_layer_names(model_cfg)
        wandb = (WandbWriter(workdir, config.logging, config.to_json_best_effort(), names)
                 if config.get("logging", {}).get("wandb_project") else None)
        log = MetricsLog(workdir, resume_step=step, layer_names=names, extra=wandb)
        run_config.write(workdir, config)
    batch_tokens = config.data.batch_size * config.data.seq_length
    ffn = (f"router={model_cfg.moe.router}, E={model_cfg.moe.num_experts}" if model_cfg.has_moe
           else "dense FFNs" + (" (moe_as_dense baseline)" if model_cfg.moe_as_dense else ""))
    active = active_params(model, model_cfg)
    header = (f"{model_cfg.arch} model, {count_params(model) / 1e6:.2f}M parameters"
              + (f" ({active / 1e6:.2f}M active per token)" if active else "")
              + f", {ffn}, {t.num_steps} steps of {batch_tokens} tokens -> {workdir}")
    Progress.show(header)
    log.text("run", f"{header}\n\n    " + config.to_json_best_effort(indent=1).replace(
        "\n", "\n    "))
    if mesh.size > 1:
        Progress.show(f"mesh: {describe(mesh)}")
    progress = Progress(t.num_steps, batch_tokens)
    timer = StepTimer()
    schedule = learning_rate_schedule(config.optimizer.schedule,
                                      float(config.optimizer.learning_rate),
                                      int(config.optimizer.warmup_steps), t.num_steps)
    flops_per_step, peak = None, peak_flops(jax.devices()[0])
    config_json = config.to_json_best_effort()
    last_eval: Dict[str, Any] = {}

    saved = {"step": step}

    def save(step):
        if saved["step"] == step:
            return
        if not bool(all_finite((nnx.state(model), nnx.state(optimizer)))):
            last = checkpoints.latest_step()
            raise TrainingDiverged(
                f"the parameters or optimizer state are not finite after step {step}; not "
                f"saved. The last good checkpoint is {'step ' + str(last) if last else 'none'} "
                f"in {checkpoints.directory}; lower optimizer.learning_rate")
        checkpoints.save(step, model, optimizer, train_data.get_state(), config_json)
        saved["step"] = step

    if STOP.agreed():
        Progress.show(f"{STOP.signal_name} during start-up: stopped before training; "
                      f"{'step ' + str(step) if step else 'nothing'} saved in "
                      f"{checkpoints.directory}")
        log.close()
        return last_eval
    if step == 0 or fresh_log:                               # the starting value, for reference
        last_eval = evaluate(model, config, float(t.z_loss), mesh)
        log.write(step, "eval", last_eval)
        Progress.show(f"eval at step {step}: cross-entropy {last_eval['cross_entropy']:.4f}")
    train_seconds = log.last("train_seconds", 0.0)
    first = True
    profiler = StepProfiler(t.get("profile_steps", ""), workdir, Progress.show)
    try:
        while step < t.num_steps:
            batch = global_batch(next(train_data), mesh)
            if flops_per_step is None:
                flops_per_step = _model_flops(model, model_cfg, batch)
            profiler.before(step + 1)
            start = time.perf_counter()
            metrics = train_step(model, optimizer, batch, float(t.z_loss),
                                 int(t.get("grad_accum_steps", 1)))
            step += 1
            loss = float(metrics["loss"])                   # waits for the step to finish
            grad_norm = float(metrics["grad_norm"])
            profiler.after(step)
            if not first:
                seconds = time.perf_counter() - start
                train_seconds += seconds
                timer.add(seconds)
            first = False
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                last = checkpoints.latest_step()
                raise TrainingDiverged(
                    f"loss is {loss} (gradient norm {grad_norm}) at step {step}; stopped "
                    f"without saving. The last good "
                    f"checkpoint is {'step ' + str(last) if last else 'none'} in "
                    f"{checkpoints.directory}; lower optimizer.learning_rate or add "
                    f"moe.router_z_loss")
            if step % t.log_every == 0 or step == t.num_steps:
                log.write(step, "train", {
                    **metrics, "train_seconds": train_seconds,
                    "learning_rate": float(schedule(step - 1)),      # the rate of this update
                    **rates(timer.seconds, batch_tokens, flops_per_step,
                            jax.device_count(), peak)})
                Progress.show(progress.line(step, loss, timer.seconds))
            if step % t.eval_every == 0 or step == t.num_steps:
                last_eval = evaluate(model, config, float(t.z_loss), mesh)
                log.write(step, "eval", last_eval)
                Progress.show(f"eval at step {step}: cross-entropy "
                              f"{last_eval['cross_entropy']:.4f}")
            if step % t.checkpoint_every == 0 or step == t.num_steps:
                save(step)
            if STOP.agreed():
                save(step)
                Progress.show(f"{STOP.signal_name}: saved step {step} to "
                              f"{checkpoints.directory}; exiting")
                break
    finally:
        profiler.close()                  # a run stopped inside the traced steps
    log.close()
    if jax.process_index() == 0:                   # also after a stop request: plots so far
        written = plots.plot_run(workdir, moe_layer_names(model_cfg))
        Progress.show("plots: " + ", ".join(written))
    return last_eval
