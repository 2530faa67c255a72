"""The validity gate: can a regime (backbone, size, data, budget) show an FFN-capacity effect?

An MoE adds FFN parameters; if extra FFN capacity buys nothing in a regime, no MoE can beat
dense there, and a quality tie says nothing about a paper's claim. Before a recipe judges any
quality claim it measures, at its own backbone and budget (the recipe's common overrides),
with the recipe's first seed and common random numbers:

  width gain            final validation loss of the standard dense model minus that of the
                        same model with WIDTH_FACTOR× wider FFNs. Passing: >= MIN_WIDTH_GAIN.
  placement gain        where the recipe's arms put experts in only some FFNs (a placement:
                        every other layer, or the encoder alone), the same with only those
                        FFNs WIDTH_FACTOR× wider: what extra capacity at the experts' places
                        can buy. Then this gain, not the width gain, must reach
                        MIN_WIDTH_GAIN. In the tiny T5 with experts in the encoder's second
                        FFN (one of four), 8× that FFN gains 0.009 nats in 1200 steps against
                        0.051 for all four (docs/RESULTS.md): a regime where widening every
                        FFN helps can still be one where the arms' experts cannot.
  encoder information   (encoder-decoder backbones) the standard dense model's validation loss
                        with encoders shuffled across the batch minus its plain loss. Passing:
                        >= MIN_ENCODER_INFORMATION already at the evaluation nearest half the
                        budget, and at the last. A model that does not read its encoder is a
                        language model over the targets alone, where the FFN capacity the paper
                        measured cannot matter; and when it starts to read it varies by seed
                        and arm (at 64 × 32 SentencePiece tokens and 1000 steps, from step ~600
                        to after 1000), so a regime where the dense model starts late measures
                        when arms start, not what their FFNs add.

The runs live in a cache keyed by the standard run's whole config (backbone, size, data,
budget, seed): recipes that share a regime train them once (the placement's run is named by the
FFNs it widens, so recipes with different placements share the other two). The cache is
$MOEJAX_GATE_CACHE, else ~/.cache/moejax/gate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import ml_collections

from experiments.recipes import runs as runs_lib
from experiments.recipes import summary as summary_lib
from experiments.recipes.runs import Run
from moejax.config import MoeConfig
from moejax.errors import check
from moejax.models.config import ModelConfig, moe_layer_names

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
    placement: str = ""                           # the arms' sparse FFNs ('' : every FFN)
    placement_gain: Optional[float] = None        # 8× only those FFNs

    @property
    def judged_gain(self) -> Optional[float]:
        """The width gain that must pass: at the arms' placement where they have one."""
        return self.placement_gain if self.placement else self.width_gain

    @property
    def width_passed(self) -> bool:
        return self.judged_gain is not None and self.judged_gain >= MIN_WIDTH_GAIN

    @property
    def encoder_passed(self) -> bool:
        return not self.encoder_decoder or all(
            x is not None and x >= MIN_ENCODER_INFORMATION
            for x in (self.encoder_information, self.encoder_information_midway))

    @property
    def passed(self) -> bool:
        return self.width_passed and self.encoder_passed

    def text(self) -> str:
        """'width gain (8× d_ff) 0.051 nats in every FFN and 0.009 nats in the arms' sparse
        FFNs alone (encoder layer 1) (needs >= 0.05 there), encoder information 0.036 nats at
        the end and 0.020 half-way (needs >= 0.3 at both)': the figures against thresholds."""
        def shown(value):
            return "not measured" if value is None else f"{value:.3f} nats"
        width = f"width gain ({WIDTH_FACTOR}× d_ff) {shown(self.width_gain)}"
        if self.placement:
            width += (f" in every FFN and {shown(self.placement_gain)} in the arms' sparse "
                      f"FFNs alone ({self.placement}) (needs >= {MIN_WIDTH_GAIN} there)")
        else:
            width += f" (needs >= {MIN_WIDTH_GAIN})"
        parts = [width]
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
PLACED = f"{WIDE} at "          # + the FFNs it widens: the label of the placement's run
# the model fields that say which FFNs are sparse (models/config.py: ffn_pattern)
LAYOUT_FIELDS = ("moe_layout", "moe_every", "num_moe_layers", "moe_layer_list", "moe_stacks")


def sparse_ffns(config: ml_collections.ConfigDict) -> Tuple[str, ...]:
    """The FFNs a config makes sparse, by name ('encoder layer 1', ...), and () if it makes
    every FFN sparse, as if it had none: then the width gain is already the placement's."""
    model = ModelConfig.from_dict({**dict(config.model.items()), "vocab_size": 256,
                                   "moe_as_dense": False, "moe": MoeConfig.from_dict(config.moe)})
    names = moe_layer_names(model)
    return () if len(names) == sum(model.stack_depths().values()) else tuple(names)


def describe_ffns(names: Sequence[str]) -> str:
    """('decoder layer 1', 'decoder layer 3') -> 'decoder layers 1, 3'."""
    stacks: Dict[str, list] = {}
    for name in names:
        stack, _, index = name.rpartition(" layer ")
        stacks.setdefault(stack, []).append(index)
    return "; ".join(f"{stack} layer{'s' if len(i) > 1 else ''} {', '.join(i)}"
                     for stack, i in stacks.items())


def placement_overrides(standard: ml_collections.ConfigDict,
                        placement: ml_collections.ConfigDict) -> Tuple[Tuple[str, Any], ...]:
    """Overrides that make the standard dense model's FFNs at the placement's sparse places
    WIDTH_FACTOR× wider and leave every other FFN as it is: the placement's layout with
    model.moe_as_dense (each such FFN a dense FFN of the moe section's active width, made like
    the model's own FFNs) and a one-expert top-1 moe section of that width with the model's
    activation. The other weights draw the same random numbers as the standard model's."""
    width = WIDTH_FACTOR * standard.model.d_ff
    one_ffn = dict(dataclasses.asdict(MoeConfig()), router="top_k", num_experts=1,
                   num_selected_experts=1, hidden_dim=width,
                   activation=standard.model.activation)       # every other field its default
    return tuple((f"model.{field}", placement.model[field]) for field in LAYOUT_FIELDS) + (
        ("model.moe_as_dense", True), ("model.extra_dense_ffn_after_moe", False),
        ("model.dense_moe_hybrid", False)) + tuple(
        (f"moe.{key}", one_ffn[key]) for key in standard.moe.keys() if key in one_ffn)


def gate_runs(backbone: str, size: str, common: Mapping[str, Any],
              placement: str = "") -> Dict[str, Run]:
    """The standard dense run and the one with WIDTH_FACTOR× its d_ff, both logging encoder
    information if they are encoder-decoders, and, given a placement (a spec whose layout
    makes sparse the FFNs the arms do) that leaves some FFNs dense, the run with only those
    FFNs WIDTH_FACTOR× wider. Their overrides apply after `common` (e.g. a smoke run's micro
    sizes): the wide runs are always WIDTH_FACTOR× the standard one."""
    config = runs_lib.load_config(backbone, size, common)
    check(config.model.moe_layout == "none",
          f"the validity gate's backbone {backbone!r} must be a dense model "
          f"(model.moe_layout='none', not {config.model.moe_layout!r})")
    extra = (("train.eval_encoder_information", True),) if (
        config.model.arch == "encoder_decoder") else ()
    wide = (("model.d_ff", WIDTH_FACTOR * config.model.d_ff),)
    specs = {STANDARD: Run(STANDARD, backbone, overrides=extra),
             WIDE: Run(WIDE, backbone, overrides=extra + wide)}
    arms = runs_lib.load_config(placement, size, common) if placement else None
    names = sparse_ffns(arms) if arms is not None else ()
    if names:
        label = PLACED + describe_ffns(names)
        specs[label] = Run(label, backbone, overrides=extra + placement_overrides(config, arms))
    return specs


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
                ("model", "dense_moe_hybrid"): False, ("moe", "shared_expert_gate"): False,
                ("train", "eval_future_information"): False}
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
    """The gate's training tasks at one regime, and how to read its figures after."""
    backbone: str
    directory: str
    tasks: Tuple[runs_lib.Task, ...]
    encoder_decoder: bool
    placement: str = ""                   # the FFNs its third run widens ('': no third run)

    def read(self) -> Gate:
        result = {t.run.label: summary_lib.read_run(t.run_dir) for t in self.tasks}
        return from_runs(self.backbone, result[STANDARD], result[WIDE], self.encoder_decoder,
                         self.directory, result.get(PLACED + self.placement), self.placement)


def plan(backbone: str, *, size: str, seed: int, common: Mapping[str, Any],
         cache: Optional[str] = None, placement: str = "") -> GatePlan:
    """The gate's runs for a regime (validated; trained by runs.execute, once per regime: a
    finished run in the cache is not trained again). placement: see gate_runs."""
    specs = gate_runs(backbone, size, common, placement)
    configs = {}
    for label, run in specs.items():         # the gate's overrides after the common ones
        configs.update(runs_lib.build_configs([Run(label, backbone)], size=size, seeds=[seed],
                                              common={**common, **dict(run.overrides)}))
    standard_config = configs[STANDARD, seed]
    directory = os.path.join(cache or default_cache(),
                             regime_key(standard_config.to_json_best_effort(sort_keys=True)))
    # the wide runs first: they take longest
    placed = [label for label in specs if label.startswith(PLACED)]
    order = [WIDE] + placed + [STANDARD]
    tasks = tuple(runs_lib.Task(specs[label], configs[label, seed],
                                runs_lib.run_directory(directory, specs[label], seed), size,
                                seed, "[gate] ") for label in order)
    return GatePlan(backbone, directory, tasks, standard_config.model.arch == "encoder_decoder",
                    placed[0][len(PLACED):] if placed else "")


def from_runs(backbone: str, standard: summary_lib.RunResult, wide: summary_lib.RunResult,
              encoder_decoder: bool, directory: str = "",
              placed: Optional[summary_lib.RunResult] = None, placement: str = "") -> Gate:
    """The gate's figures from its finished runs (a diverged run measures nothing); placed:
    the run with only the FFNs of `placement` wider, if the arms have one."""
    ok = lambda r: r is not None and not r.diverged and r.final_loss is not None
    gain = lambda r: standard.final_loss - r.final_loss if ok(standard) and ok(r) else None
    information = standard.encoder_information if ok(standard) and encoder_decoder else None
    midway = None
    if information is not None and standard.encoder_curve:
        half = standard.encoder_curve[-1][0] / 2
        midway = min(standard.encoder_curve, key=lambda point: abs(point[0] - half))[1]
    return Gate(backbone, gain(wide), information, encoder_decoder, directory, midway,
                placement, gain(placed) if placement else None)
