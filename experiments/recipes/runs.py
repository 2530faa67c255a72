"""Run specs and how a set of them is trained: the same data, seeds and steps for each.

A spec names a config family (configs/<family>.py) or file, an optional size and dotted
overrides joined by '+':

    switch                                  configs/switch.py at the default size
    switch:base                             another size
    switch+moe.num_experts=16+moe.capacity_factor=1.0
    configs/st_moe.py:tiny+train.z_loss=0

Each (spec, seed) trains in its own directory of the comparison's workdir with the normal
trainer; a finished run is not trained again, an interrupted one resumes from its checkpoint,
and a run whose loss became NaN/Inf is recorded as diverged (the others go on).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import ml_collections

from experiments import config_files
from moejax.errors import ConfigError, check

DIVERGED = "DIVERGED"         # file written in a run's directory when its loss became NaN/Inf


@dataclasses.dataclass(frozen=True)
class Run:
    """One arm of a comparison: a label for tables and plots, a config spec, and overrides
    applied after the spec's own (recipes compute some, e.g. one family's moe section)."""
    label: str
    spec: str
    overrides: Tuple[Tuple[str, Any], ...] = ()
    seeds: Optional[Tuple[int, ...]] = None      # this arm's seeds instead of the common ones


def parse_value(text: str) -> Any:
    """'16' -> 16, '1e-3' -> 0.001, 'true' -> True, 'none' -> None, anything else a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text.strip()


def parse_spec(spec: str, size: str) -> Tuple[str, str, Dict[str, Any]]:
    """'switch:base+moe.num_experts=16' -> ('configs/switch.py', 'base', {...})."""
    base, *overrides = spec.strip().split("+")
    name, _, spec_size = base.partition(":")
    path = config_files.config_path(name)
    check(os.path.exists(path), f"config {name!r} (in {spec!r}) is not a family in configs/ "
                                f"nor a file: {path} does not exist")
    values = {}
    for item in overrides:
        key, eq, value = item.partition("=")
        check(bool(eq) and bool(key), f"override {item!r} in {spec!r} is not key=value")
        values[key.strip()] = parse_value(value)
    return path, spec_size or size, values


def load_config(spec: str, size: str, common: Mapping[str, Any] = ()
                ) -> ml_collections.ConfigDict:
    """The ConfigDict of a spec, with `common` overrides applied after the spec's own."""
    path, spec_size, overrides = parse_spec(spec, size)
    return config_files.load(path, spec_size, {**overrides, **dict(common)}, where=spec)


def slug(label: str) -> str:
    """A directory name for a label: 'top-1 cf=1.25' -> 'top-1_cf_1.25'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "run"


def budget(steps: int) -> Dict[str, Any]:
    """Train overrides for a comparison of `steps` steps: about 20 evaluations (the curves
    that 'steps to a target loss' interpolates) but none closer than 10 steps, a log record
    every ~1% but none closer than 5 steps, and a checkpoint every ~20% (an interrupted run
    resumes from it). Runs shorter than the spacing evaluate and log at their end."""
    return {"train.num_steps": steps,
            "train.eval_every": min(steps, max(10, steps // 20)),
            "train.log_every": min(steps, max(5, steps // 100)),
            "train.checkpoint_every": max(1, steps // 5), "train.keep_checkpoints": 1}


def tokens_per_step(config: ml_collections.ConfigDict) -> int:
    """Input tokens per training step (the trainer's progress line counts the same)."""
    return config.data.batch_size * config.data.seq_length


def run_directory(workdir: str, run: Run, seed: int) -> str:
    return os.path.join(workdir, slug(run.label), f"seed_{seed}")


def is_diverged(run_dir: str) -> bool:
    return os.path.exists(os.path.join(run_dir, DIVERGED))


def finished(run_dir: str, num_steps: int) -> bool:
    """Whether run_dir holds an eval record at num_steps, or diverged."""
    if is_diverged(run_dir):
        return True
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return False
    from moejax.train.logs import read_log
    return any(r["split"] == "eval" and r["step"] >= num_steps for r in read_log(run_dir))


def build_configs(runs: Sequence[Run], *, size: str, seeds: Sequence[int],
                  common: Mapping[str, Any]) -> Dict[Tuple[str, int], ml_collections.ConfigDict]:
    """The validated config of every (run, seed): a bad spec fails before anything trains."""
    check(len({r.label for r in runs}) == len(runs), "two runs share a label: "
          f"{[r.label for r in runs]}")
    check(len({slug(r.label) for r in runs}) == len(runs),
          f"two labels make the same directory name: {[r.label for r in runs]}")
    configs = {}
    for run in runs:
        for seed in run.seeds or seeds:
            config = load_config(run.spec, size, {**dict(run.overrides), **dict(common),
                                                  "train.seed": seed})
            _validate(config, run.spec)
            configs[run.label, seed] = config
    return configs


def train_one(run: Run, config: ml_collections.ConfigDict, run_dir: str, *, size: str,
              seed: int, log=print, prefix: str = "",
              start: Optional[Callable[[str], None]] = None) -> None:
    """Trains one arm in run_dir (resuming; nothing if finished; DIVERGED on NaN/Inf).

    start(run_dir), if given, seeds a new run_dir before training (e.g. with another run's
    checkpoint); it is not called once run_dir has a checkpoint. A run_dir made with another
    config is refused (one line) rather than mixed into this comparison.
    """
    from moejax.train.trainer import TrainingDiverged, train_and_evaluate

    config_json = check_same_config(run_dir, config)
    spec_path = os.path.join(run_dir, "spec.json")
    if finished(run_dir, config.train.num_steps):
        log(f"{prefix}{run.label} (seed {seed}): done already, in {run_dir}")
        return
    log(f"{prefix}{run.label} (seed {seed}): {run.spec} -> {run_dir}")
    os.makedirs(run_dir, exist_ok=True)
    with open(spec_path, "w", encoding="utf-8") as f:
        json.dump({"label": run.label, "spec": run.spec, "overrides": dict(run.overrides),
                   "size": size, "seed": seed, "tokens_per_step": tokens_per_step(config),
                   "examples_per_step": config.data.batch_size, "config": config_json},
                  f, indent=1)
    if start is not None and not _has_checkpoint(run_dir):
        start(run_dir)
    try:
        train_and_evaluate(config, run_dir)
    except TrainingDiverged as err:
        mark_diverged(run_dir, str(err))
        log(f"{prefix}{run.label} (seed {seed}) diverged: {err}")
    finally:
        release_compiled_programs()


def check_same_config(run_dir: str, config: ml_collections.ConfigDict) -> str:
    """config as JSON, after one ConfigError line if run_dir holds a run of another config
    (checked for every run before the first trains, so none is left half done)."""
    config_json = config.to_json_best_effort(sort_keys=True)
    spec_path = os.path.join(run_dir, "spec.json")
    if os.path.exists(spec_path):
        with open(spec_path, encoding="utf-8") as f:
            before = json.load(f).get("config")
        check(same_config(before, config_json),
              f"{run_dir} holds a run of another config (different overrides or --steps); "
              "use a new --workdir or remove that directory")
    return config_json


def release_compiled_programs() -> None:
    """Drops jax's compiled programs after a run, where one process trains many in turn.

    XLA:CPU maps each compiled module's code separately (about 1,700 memory maps for one micro
    train step, several thousand for a tiny run's steps), and a process that keeps every run's
    programs reaches Linux's default limit of 65,530 maps (vm.max_map_count) within a few dozen
    runs; XLA then segfaults in its next compile. Arms differ in their programs anyway, so
    little is recompiled (and the persistent compilation cache, where enabled, serves it)."""
    import gc

    import jax
    jax.clear_caches()
    gc.collect()


def same_config(before: Optional[str], now: str) -> bool:
    """Whether a run directory's stored config JSON (None: not recorded) is `now`. A field the
    stored config lacks counts as the same if `now` holds its default: options added to
    moejax since the run was made do not orphan finished runs."""
    if before is None:
        return True
    from moejax.train.config import base_config
    defaults = json.loads(base_config().to_json_best_effort())
    return _same_or_added_default(json.loads(before), json.loads(now), defaults)


_ABSENT = object()


def _same_or_added_default(before: Any, now: Any, default: Any) -> bool:
    if not (isinstance(before, dict) and isinstance(now, dict)):
        return before == now
    default = default if isinstance(default, dict) else {}
    if set(before) - set(now):
        return False
    return all(_same_or_added_default(before[k], now[k], default.get(k, _ABSENT))
               if k in before else now[k] == default.get(k, _ABSENT) for k in now)


def mark_diverged(run_dir: str, why: str) -> None:
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, DIVERGED), "w", encoding="utf-8") as f:
        f.write(why + "\n")


def _has_checkpoint(run_dir: str) -> bool:
    from moejax.checkpoints.info import steps
    return bool(os.path.isdir(os.path.join(run_dir, "checkpoints")) and steps(run_dir))


@dataclasses.dataclass(frozen=True)
class Task:
    """One (arm, seed) to train in run_dir with its validated config."""
    run: Run
    config: ml_collections.ConfigDict
    run_dir: str
    size: str
    seed: int
    prefix: str = ""


def plan_runs(runs: Sequence[Run], workdir: str, *, size: str, seeds: Sequence[int],
              common: Mapping[str, Any]) -> Tuple[List[Task], Dict[Tuple[str, int], str]]:
    """The tasks that train every (run, seed) in workdir/<label>/seed_<s>, and those
    directories; nothing is trained."""
    configs = build_configs(runs, size=size, seeds=seeds, common=common)
    by_label = {r.label: r for r in runs}
    tasks, directories = [], {}
    for i, ((label, seed), config) in enumerate(configs.items(), 1):
        run_dir = run_directory(workdir, by_label[label], seed)
        check_same_config(run_dir, config)
        directories[label, seed] = run_dir
        tasks.append(Task(by_label[label], config, run_dir, size, seed,
                          f"[{i}/{len(configs)}] "))
    return tasks, directories


def is_tiny(size: str) -> bool:
    """tiny or tiny_lm: the sizes a 2-core CPU trains (recipes' own step budgets)."""
    return size in ("tiny", "tiny_lm")


def auto_jobs(size: str) -> int:
    """Runs trained at once by default: two at tiny size on a machine with two or more cores
    (XLA:CPU keeps about one core busy with a tiny model: two runs side by side train about
    1.3× as many tokens per second in all), one otherwise (an accelerator runs one at a time)."""
    return min(2, os.cpu_count() or 1) if is_tiny(size) else 1


def execute(tasks: Sequence[Task], *, jobs: int = 1, log=print) -> None:
    """Trains the tasks, `jobs` at a time (each in its own process, its progress in
    run_dir/train.log, when jobs > 1); an error in any stops the rest and is raised here."""
    check(jobs >= 1, f"--jobs={jobs} must be >= 1")
    if jobs == 1 or len(tasks) <= 1:
        for task in tasks:
            train_one(task.run, task.config, task.run_dir, size=task.size, seed=task.seed,
                      log=log, prefix=task.prefix)
        return
    import concurrent.futures
    import multiprocessing
    import time
    log(f"training {len(tasks)} runs, {jobs} at a time; each run's progress is in its "
        f"train.log")
    start = time.perf_counter()
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {pool.submit(_train_logged, task): task for task in tasks}
        for future in concurrent.futures.as_completed(futures):
            task = futures[future]
            outcome = future.result()
            log(f"{task.prefix}{task.run.label} (seed {task.seed}): {outcome} "
                f"[{(time.perf_counter() - start) / 60:.1f} min since the first started] -> "
                f"{task.run_dir}")
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


_WATCHED: List[int] = []          # this worker's parent, once its watcher runs


def _stop_with_parent() -> None:
    """In a worker: SIGTERM to itself once the process that started it has gone (killed, or
    stopped by SIGTERM), so that a stopped comparison leaves no orphaned runs behind. The
    trainer then saves a checkpoint and exits; re-running resumes from it. One watcher per
    worker process, however many runs it trains."""
    import signal
    import threading
    import time
    if _WATCHED:
        return
    parent = os.getppid()
    _WATCHED.append(parent)

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=watch, daemon=True).start()


def _train_logged(task: Task) -> str:
    """train_one in a worker process, its output in run_dir/train.log; returns how it ended
    and its own wall minutes."""
    import contextlib
    import time
    start = time.perf_counter()
    already = finished(task.run_dir, task.config.train.num_steps)
    _stop_with_parent()
    os.makedirs(task.run_dir, exist_ok=True)
    with open(os.path.join(task.run_dir, "train.log"), "a", encoding="utf-8") as f, \
            contextlib.redirect_stderr(f), contextlib.redirect_stdout(f):
        train_one(task.run, task.config, task.run_dir, size=task.size, seed=task.seed,
                  prefix=task.prefix)
    minutes = (", done already" if already else
               f" in {(time.perf_counter() - start) / 60:.1f} min")
    if is_diverged(task.run_dir):
        return "diverged" + minutes
    from moejax.train.logs import read_log
    evals = [r for r in read_log(task.run_dir) if r["split"] == "eval"]
    return (f"final loss {evals[-1]['cross_entropy']:.4f}" if evals else "done") + minutes


def train_runs(runs: Sequence[Run], workdir: str, *, size: str, seeds: Sequence[int],
               common: Mapping[str, Any], jobs: int = 1, log=print
               ) -> Dict[Tuple[str, int], str]:
    """Trains every (run, seed) in workdir/<label>/seed_<s>; returns their directories."""
    tasks, directories = plan_runs(runs, workdir, size=size, seeds=seeds, common=common)
    execute(tasks, jobs=jobs, log=log)
    return directories


def _validate(config: ml_collections.ConfigDict, spec: str) -> None:
    """Every config error of a spec, before anything trains."""
    from moejax.data import make_tokenizer
    from moejax.train.config import resolve
    try:
        resolve(config, make_tokenizer(config.data).vocab_size)
    except ConfigError as err:
        raise ConfigError(f"{spec!r}: {err}") from err


def parse_seeds(values: Sequence[str]) -> List[int]:
    """--seeds=0,1,2 -> [0, 1, 2]; one ConfigError line unless distinct integers."""
    try:
        seeds = [int(s) for s in values]
    except ValueError as err:
        raise ConfigError(f"--seeds={','.join(values)} must be integers") from err
    check(bool(seeds) and len(set(seeds)) == len(seeds),
          f"--seeds={','.join(values)} must be distinct integers")
    return seeds


def parse_runs(specs: Sequence[str], labels: Optional[Sequence[str]] = None) -> List[Run]:
    """Runs labelled by their spec (or by labels, one per spec)."""
    specs = [s for s in specs if s.strip()]
    check(bool(specs), "--configs is empty: give one or more config specs, e.g. switch,dense")
    if labels:
        check(len(labels) == len(specs), f"--labels has {len(labels)} names for "
                                         f"{len(specs)} configs")
    return [Run(label=(labels[i] if labels else spec), spec=spec)
            for i, spec in enumerate(specs)]

