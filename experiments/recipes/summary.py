"""What a finished run measured, read back from its metrics.jsonl, and its mean over seeds.

Per run (one seed):
  final_loss          validation cross-entropy at the last evaluation
  steps_to_target     first step at which the validation curve reaches the target loss
                      (linear interpolation between evaluations); None if it never does
  tokens_per_second   training throughput between the first and last train records (the
                      first step, which compiles, is not timed by the trainer)
  dropped_fraction    tokens no expert slot took, training capacity factor, mean over the
                      second half of training and over MoE layers
  load_cv             coefficient of variation (std / mean) of the tokens per expert, same
                      averaging
  max_violation       MaxVio = max load / mean load − 1 (Wang et al. 2024) on the validation
                      batches of the last evaluation, mean over MoE layers
  router_z            mean logsumexp² of the router logits (ST-MoE), second half of training
  encoder_information validation cross-entropy with encoders shuffled across the batch minus
                      the plain one, last evaluation (encoder-decoder runs that log it);
                      encoder_curve: (step, that) at every evaluation
  future_information  validation cross-entropy of each row's first half with another row's
                      second half minus with its own, last evaluation (decoder-only runs that
                      log it): what earlier predictions take from later tokens, 0 if causal
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from experiments.recipes.runs import is_diverged
from moejax.errors import check
from moejax.train import run_config
from moejax.train.logs import read_log


@dataclasses.dataclass
class RunResult:
    directory: str
    diverged: bool
    size: Optional[str]                            # the configs' size (tiny, base, ...)
    tokens_per_step: int
    examples_per_step: int
    eval_curve: List[Tuple[int, float]]            # (step, validation cross-entropy)
    train_curve: List[Tuple[int, float, float]]    # (step, train cross-entropy, train_seconds)
    final_loss: Optional[float]
    tokens_per_second: Optional[float]
    dropped_fraction: Optional[float]
    load_cv: Optional[float]
    max_violation: Optional[float]
    router_z: Optional[float]
    router_entropy: Optional[float]                # ÷ ln E: 1 uniform, 0 one-hot; second half
    expert_load: Optional[np.ndarray]              # [MoE layers, E] fraction, second half
    experts_per_token: Optional[np.ndarray]        # [bins] fraction of tokens, last eval
    encoder_information: Optional[float] = None    # nats/target token read from the encoder
    seed: Optional[int] = None                     # train.seed (None: not recorded)
    encoder_decoder: bool = False                  # model.arch, from the stored config
    encoder_curve: List[Tuple[int, float]] = dataclasses.field(default_factory=list)
    future_information: Optional[float] = None     # nats/token earlier predictions take

    @property
    def has_moe(self) -> bool:
        return self.expert_load is not None

    def steps_to(self, target: float) -> Optional[float]:
        return steps_to_target(self.eval_curve, target)

    def loss_at(self, step: float) -> Optional[float]:
        """Validation loss at `step`, linear between evaluations (None without any)."""
        if not self.eval_curve:
            return None
        steps, losses = zip(*self.eval_curve)
        return float(np.interp(step, steps, losses))

    def seconds_at(self, step: float) -> float:
        """Training seconds spent to reach `step` (interpolated between train records),
        counted from the run's first evaluation (step 0, or the step a run continuing another
        one's checkpoint starts from)."""
        first = self.eval_curve[0][0] if self.eval_curve else 0
        steps = [first] + [s for s, _, _ in self.train_curve]
        seconds = [0.0] + [t for _, _, t in self.train_curve]
        return float(np.interp(step, steps, seconds))


def steps_to_target(curve: Sequence[Tuple[int, float]], target: float) -> Optional[float]:
    """First step where the piecewise-linear curve through (step, loss) reaches <= target."""
    for i, (step, loss) in enumerate(curve):
        if loss <= target:
            if i == 0:
                return float(step)
            s0, l0 = curve[i - 1]
            return float(s0 + (step - s0) * (l0 - target) / (l0 - loss))
    return None


def _second_half(rows: List[dict]) -> List[dict]:
    return rows[len(rows) // 2:] if len(rows) > 1 else rows


def _mean_over(rows: List[dict], key: str, reduce) -> Optional[float]:
    values = [reduce(np.asarray(r[key], np.float64)) for r in rows if key in r]
    return float(np.mean(values)) if values else None


def cv(load: np.ndarray) -> float:
    """Mean over layers of std/mean of the per-expert load [layers, E]."""
    load = np.atleast_2d(load)
    return float(np.mean(np.std(load, axis=-1) / np.maximum(np.mean(load, axis=-1), 1e-12)))


def read_run(directory: str) -> RunResult:
    spec = {"tokens_per_step": 0, "examples_per_step": 0, "size": None, "seed": None}
    if os.path.exists(os.path.join(directory, "spec.json")):  # not for an arm that never ran
        with open(os.path.join(directory, "spec.json"), encoding="utf-8") as f:
            spec.update(json.load(f))
    else:
        spec.update(_from_run_config(directory))                # a run of `train` or `upcycle`
    records = read_log(directory) if os.path.exists(
        os.path.join(directory, "metrics.jsonl")) else []
    train = [r for r in records if r["split"] == "train"]
    evals = [r for r in records if r["split"] == "eval"]
    late = _second_half(train)
    timed = [r for r in train if "train_seconds" in r]
    throughput = None
    if len(timed) >= 2 and timed[-1]["train_seconds"] > timed[0]["train_seconds"]:
        throughput = ((timed[-1]["step"] - timed[0]["step"]) * spec["tokens_per_step"]
                      / (timed[-1]["train_seconds"] - timed[0]["train_seconds"]))
    load = [np.asarray(r["moe/tokens_per_expert"]) for r in late if "moe/tokens_per_expert" in r]
    last_eval = evals[-1] if evals else {}
    entropy = _mean_over(late, "moe/router_entropy", np.mean)
    return RunResult(
        directory=directory,
        diverged=is_diverged(directory),
        size=spec["size"],
        tokens_per_step=spec["tokens_per_step"],
        examples_per_step=spec["examples_per_step"],
        eval_curve=[(r["step"], r["cross_entropy"]) for r in evals],
        train_curve=[(r["step"], r["cross_entropy"], r.get("train_seconds", np.nan))
                     for r in train],
        final_loss=last_eval.get("cross_entropy"),
        tokens_per_second=throughput,
        dropped_fraction=_mean_over(late, "moe/dropped_fraction", np.mean),
        load_cv=float(np.mean([cv(x) for x in load])) if load else None,
        max_violation=(float(np.mean(last_eval["moe/max_violation"]))
                       if "moe/max_violation" in last_eval else None),
        router_z=_mean_over(late, "moe/router_z", np.mean),
        router_entropy=(None if entropy is None or not load or load[0].shape[-1] < 2
                        else entropy / np.log(load[0].shape[-1])),
        expert_load=np.mean(load, axis=0) if load else None,
        experts_per_token=(np.mean(np.atleast_2d(last_eval["moe/experts_per_token"]), axis=0)
                           if "moe/experts_per_token" in last_eval else None),
        encoder_information=last_eval.get("encoder_information"),
        encoder_curve=[(r["step"], r["encoder_information"]) for r in evals
                       if "encoder_information" in r],
        future_information=last_eval.get("future_information"),
        seed=spec["seed"],
        encoder_decoder=_arch(spec) == "encoder_decoder",
    )


def _from_run_config(directory: str) -> dict:
    """What spec.json would say, from the W/config.json that every training run writes."""
    record = run_config.read(directory)
    if not record:
        return {}
    data = record["config"].get("data", {})
    return {"tokens_per_step": data.get("batch_size", 0) * data.get("seq_length", 0),
            "examples_per_step": data.get("batch_size", 0),
            "seed": record["config"].get("train", {}).get("seed"),
            "config": json.dumps(record["config"])}


def _arch(spec: dict) -> Optional[str]:
    """model.arch of the config stored in a run's spec.json (None if not stored)."""
    try:
        return json.loads(spec.get("config") or "{}").get("model", {}).get("arch")
    except (TypeError, ValueError, AttributeError):
        return None


@dataclasses.dataclass
class Summary:
    """One arm of a comparison over its seeds (diverged seeds are left out of the means)."""
    label: str
    seeds: List[RunResult]

    @property
    def stable(self) -> List[RunResult]:
        return [r for r in self.seeds if not r.diverged]

    @property
    def has_moe(self) -> bool:
        return any(r.has_moe for r in self.seeds)

    def mean(self, field: str) -> Optional[float]:
        values = [getattr(r, field) for r in self.stable if getattr(r, field) is not None]
        return float(np.mean(values)) if values else None

    def std(self, field: str) -> Optional[float]:
        """Sample standard deviation over the stable seeds (None for fewer than two)."""
        values = [getattr(r, field) for r in self.stable if getattr(r, field) is not None]
        return float(np.std(values, ddof=1)) if len(values) > 1 else None

    def steps_to(self, target: float) -> Optional[float]:
        """Mean over stable seeds; None if any of them never reaches the target."""
        steps = [r.steps_to(target) for r in self.stable]
        return None if not steps or any(s is None for s in steps) else float(np.mean(steps))

    def loss_at(self, step: float) -> Optional[float]:
        """Mean over stable seeds of the validation loss at `step`."""
        losses = [r.loss_at(step) for r in self.stable]
        return None if not losses or None in losses else float(np.mean(losses))

    def seconds_to(self, target: float) -> Optional[float]:
        times = [r.seconds_at(s) for r in self.stable if (s := r.steps_to(target)) is not None]
        return float(np.mean(times)) if self.steps_to(target) is not None else None

    @property
    def tokens_per_step(self) -> int:
        return self.seeds[0].tokens_per_step

    @property
    def examples_per_second(self) -> Optional[float]:
        tps = self.mean("tokens_per_second")
        first = self.seeds[0]
        return None if tps is None else tps * first.examples_per_step / first.tokens_per_step


def summarize(directories: Dict[Tuple[str, int], str], labels: Sequence[str]) -> List[Summary]:
    """Summaries in label order from {(label, seed): run directory}."""
    return [Summary(label, [read_run(d) for (lab, _), d in sorted(directories.items(),
                                                                    key=lambda kv: kv[0][1])
                            if lab == label]) for label in labels]


def default_target(summaries: Sequence[Summary]) -> Optional[float]:
    """The loss every stable run reached: the worst final validation loss of any stable seed
    of any arm."""
    finals = [r.final_loss for s in summaries for r in s.stable if r.final_loss is not None]
    return max(finals) if finals else None


RUN_LOG = "metrics.jsonl"


def find_runs(paths: Sequence[str]) -> List[str]:
    """Every run directory (one with a metrics.jsonl) at or below `paths`, in the order
    given (then sorted below each)."""
    found: List[str] = []
    for path in paths:
        check(os.path.isdir(path), f"{path} is not a directory")
        if os.path.exists(os.path.join(path, RUN_LOG)):
            below = [path]
        else:
            below = sorted(root for root, _, files in os.walk(path) if RUN_LOG in files)
        check(bool(below), f"{path} holds no run (no {RUN_LOG} in it or below it)")
        found += [d for d in below if d not in found]
    return found


def group_runs(directories: Sequence[str]) -> Tuple[Dict[Tuple[str, int], str], List[str]]:
    """({(label, seed): directory}, labels in first-seen order): seeds of one compare or
    reproduce arm share their spec.json label (within one parent directory); other runs are
    labelled by their path."""
    grouped: Dict[Tuple[str, int], str] = {}
    labels: List[str] = []
    for directory in directories:
        label, seed = _arm(directory)
        if (label, seed) in grouped:                     # the same arm name in two comparisons
            label, seed = directory, 0
        grouped[label, seed] = directory
        if label not in labels:
            labels.append(label)
    return grouped, labels


def _arm(directory: str) -> Tuple[str, int]:
    path = os.path.join(directory, "spec.json")
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
        parent = os.path.dirname(os.path.dirname(os.path.normpath(directory)))
        return f"{spec['label']} ({os.path.basename(parent)})", int(spec["seed"])
    except (OSError, ValueError, KeyError, TypeError):
        return directory, 0
