"""The validity gate: can a regime (backbone, size, data, budget) show an FFN-capacity effect?

An MoE adds FFN parameters; if extra FFN capacity buys nothing in a regime, no MoE can beat
dense there, and a quality tie says nothing about a paper's claim. Before a recipe judges any
quality claim it measures, at its own backbone and budget (the recipe's common overrides),
with the recipe's first seed and common random numbers:

  width gain            final validation loss of the standard dense model minus that of the
                        same model with WIDTH_FACTOR× wider FFNs. Passing: >= MIN_WIDTH_GAIN.
  encoder information   (encoder-decoder backbones) the standard dense model's validation loss
                        with encoders shuffled across the batch minus its plain loss. Passing:
                        >= MIN_ENCODER_INFORMATION already at the evaluation nearest half the
                        budget, and at the last. A model that does not read its encoder is a
                        language model over the targets alone, where the FFN capacity the paper
                        measured cannot matter; and when it starts to read it varies by seed
                        and arm (at 64 × 32 SentencePiece tokens and 1000 steps, from step ~600
                        to after 1000), so a regime where the dense model starts late measures
                        when arms start, not what their FFNs add.

Both runs live in a cache keyed by the standard run's whole config (backbone, size, data,
budget, seed): recipes that share a regime train them once. The cache is
$MOEJAX_GATE_CACHE, else ~/.cache/moejax/gate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Dict, Mapping, Optional, Tuple

from experiments.recipes import runs as runs_lib
from experiments.recipes import summary as summary_lib
from experiments.recipes.runs import Run

WIDTH_FACTOR = 8
MIN_WIDTH_GAIN = 0.05            # nats per token
MIN_ENCODER_INFORMATION = 0.3    # nats per target token


def default_cache() -> str:
    return os.environ.get("MOEJAX_GATE_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "moejax", "gate")


@dataclasses.dataclass(frozen=True)
class Gate:
    """The gate's figures at one regime (None: not measured, e.g. a run diverged)."""
    backbone: str                                 # spec of the standard dense model
    width_gain: Optional[float]
    encoder_information: Optional[float]          # last evaluation; None for decoder-only
    encoder_decoder: bool
    directory: str = ""                           # where its runs are
    encoder_information_midway: Optional[float] = None   # at the evaluation nearest half-way

    @property
    def width_passed(self) -> bool:
        return self.width_gain is not None and self.width_gain >= MIN_WIDTH_GAIN

    @property
    def encoder_passed(self) -> bool:
        return not self.encoder_decoder or all(
            x is not None and x >= MIN_ENCODER_INFORMATION
            for x in (self.encoder_information, self.encoder_information_midway))

    @property
    def passed(self) -> bool:
        return self.width_passed and self.encoder_passed

    def text(self) -> str:
        """'width gain (8× d_ff) 0.012 nats (needs >= 0.05), encoder information 0.036 nats at
        the end and 0.020 half-way (needs >= 0.3 at both)': the figures against thresholds."""
        def shown(value):
            return "not measured" if value is None else f"{value:.3f} nats"
        parts = [f"width gain ({WIDTH_FACTOR}× d_ff) {shown(self.width_gain)} (needs >= "
                 f"{MIN_WIDTH_GAIN})"]
        if self.encoder_decoder:
            parts.append(f"encoder information {shown(self.encoder_information)} at the end "
                         f"and {shown(self.encoder_information_midway)} half-way (needs >= "
                         f"{MIN_ENCODER_INFORMATION} at both)")
        return ", ".join(parts)

    def to_json(self) -> Dict[str, Any]:
        return {**dataclasses.asdict(self), "passed": self.passed,
                "min_width_gain": MIN_WIDTH_GAIN,
                "min_encoder_information": MIN_ENCODER_INFORMATION}


STANDARD, WIDE = "standard", f"d_ff x{WIDTH_FACTOR}"


def gate_runs(backbone: str, size: str, common: Mapping[str, Any]) -> Dict[str, Run]:
    """The standard dense run and the one with WIDTH_FACTOR× its d_ff, both logging encoder
    information if they are encoder-decoders. Their overrides apply after `common` (e.g. a
    smoke run's micro sizes): the wide run is always WIDTH_FACTOR× the standard one."""
    config = runs_lib.load_config(backbone, size, common)
    extra = (("train.eval_encoder_information", True),) if (
        config.model.arch == "encoder_decoder") else ()
    wide = (("model.d_ff", WIDTH_FACTOR * config.model.d_ff),)
    return {STANDARD: Run(STANDARD, backbone, overrides=extra),
            WIDE: Run(WIDE, backbone, overrides=extra + wide)}


# Config fields added since gate caches were first written: at these defaults they stay out of
# the key, so a regime's cached runs still match after moejax gained the option.
ADDED_FIELDS = {("model", "remat"): "none", ("train", "grad_accum_steps"): 1,
                ("train", "profile_steps"): "", ("train", "restore_step"): None, ("logging", "wandb_project"): "",
                ("logging", "wandb_mode"): "online",
                # the open models' architecture pieces (issue 19)
                ("model", "num_kv_heads"): None, ("model", "attention"): "mha",
                ("model", "q_lora_rank"): 0, ("model", "kv_lora_rank"): 512,
                ("model", "qk_nope_head_dim"): 128, ("model", "qk_rope_head_dim"): 64,
                ("model", "v_head_dim"): 128, ("model", "qkv_bias"): False,
                ("model", "qk_norm"): "none", ("model", "norm_eps"): 1e-6,
                ("model", "dense_moe_hybrid"): False, ("moe", "shared_expert_gate"): False}
ADDED_SECTIONS = ("logging",)          # dropped from the key too once all their fields are


def regime_key(config_json: str) -> str:
    """A short stable name for a regime: the hash of the standard run's config (without the
    ADDED_FIELDS that hold their defaults)."""
    config = json.loads(config_json)
    for (section, field), default in ADDED_FIELDS.items():
        if config.get(section, {}).get(field, default) == default:
            config.get(section, {}).pop(field, None)
    for section in ADDED_SECTIONS:
        if config.get(section, None) == {}:
            config.pop(section)
    canonical = json.dumps(config, sort_keys=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class GatePlan:
    """The gate's two training tasks at one regime, and how to read its figures after."""
    backbone: str
    directory: str
    tasks: Tuple[runs_lib.Task, ...]
    encoder_decoder: bool

    def read(self) -> Gate:
        wide, standard = (summary_lib.read_run(t.run_dir) for t in self.tasks)
        return from_runs(self.backbone, standard, wide, self.encoder_decoder, self.directory)


def plan(backbone: str, *, size: str, seed: int, common: Mapping[str, Any],
         cache: Optional[str] = None) -> GatePlan:
    """The gate's runs for a regime (validated; trained by runs.execute, once per regime: a
    finished run in the cache is not trained again)."""
    specs = gate_runs(backbone, size, common)
    configs = {}
    for label, run in specs.items():         # the gate's overrides after the common ones
        configs.update(runs_lib.build_configs([Run(label, backbone)], size=size, seeds=[seed],
                                              common={**common, **dict(run.overrides)}))
    standard_config = configs[STANDARD, seed]
    directory = os.path.join(cache or default_cache(),
                             regime_key(standard_config.to_json_best_effort(sort_keys=True)))
    # the wide run first: it takes longest
    tasks = tuple(runs_lib.Task(specs[label], configs[label, seed],
                                runs_lib.run_directory(directory, specs[label], seed), size,
                                seed, "[gate] ") for label in (WIDE, STANDARD))
    return GatePlan(backbone, directory, tasks,
                    standard_config.model.arch == "encoder_decoder")


def from_runs(backbone: str, standard: summary_lib.RunResult, wide: summary_lib.RunResult,
              encoder_decoder: bool, directory: str = "") -> Gate:
    """The gate's figures from its two finished runs (a diverged run measures nothing)."""
    ok = lambda r: not r.diverged and r.final_loss is not None
    width_gain = (standard.final_loss - wide.final_loss) if ok(standard) and ok(wide) else None
    information = standard.encoder_information if ok(standard) and encoder_decoder else None
    midway = None
    if information is not None and standard.encoder_curve:
        half = standard.encoder_curve[-1][0] / 2
        midway = min(standard.encoder_curve, key=lambda point: abs(point[0] - half))[1]
    return Gate(backbone, width_gain, information, encoder_decoder, directory, midway)
