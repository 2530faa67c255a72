"""The experiment config: model, moe, data, optimizer and train sections of one ConfigDict.

`base_config()` holds every field with its default, so any of them can be overridden on the
command line (`--config.moe.num_experts=32`). `resolve(config)` validates all sections and
returns the typed model config, failing with one ConfigError line before anything compiles.
"""

from __future__ import annotations

import dataclasses
import typing

import ml_collections

from moejax.config import MoeConfig
from moejax.data import config as data_config
from moejax.errors import check
from moejax.models.config import ModelConfig, ffn_pattern
from moejax.parallel.mesh import MeshConfig
from moejax.train import optimizer
from moejax.train import wandb_log
from moejax.train.profile import parse_steps

ARCH_OBJECTIVES = {"decoder": "causal_lm", "encoder_decoder": "span_corruption"}


def _section(cls, skip=()) -> ml_collections.ConfigDict:
    """A ConfigDict of a config dataclass's defaults (None fields become typed placeholders)."""
    section = ml_collections.ConfigDict()
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        default = (field.default_factory() if field.default is dataclasses.MISSING
                   else field.default)
        if default is None:
            inner = [a for a in typing.get_args(hints[field.name]) if a is not type(None)]
            default = ml_collections.config_dict.placeholder(inner[0] if inner else object)
        section[field.name] = default
    return section


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = _section(ModelConfig, skip=("moe",))
    config.model.vocab_size = ml_collections.config_dict.placeholder(int)  # None: tokenizer's
    config.moe = _section(MoeConfig)
    config.data = data_config.default_data_config()
    config.mesh = ml_collections.ConfigDict(dataclasses.asdict(MeshConfig()))
    config.optimizer = ml_collections.ConfigDict(dict(
        name="adafactor", learning_rate=0.01, schedule="rsqrt", warmup_steps=100,
        weight_decay=0.0, b1=0.9, b2=0.99, grad_clip_norm=0.0))
    config.train = ml_collections.ConfigDict(dict(
        num_steps=1000, log_every=50, eval_every=250, eval_batches=8, checkpoint_every=250,
        keep_checkpoints=3, seed=0, z_loss=1e-4,
        # microbatches per optimizer update: data.batch_size rows split in N, gradients summed
        # (moejax/train/step.py); the batch the papers train on, at 1/N of the activations
        grad_accum_steps=1,
        # resume from this saved step instead of the latest (e.g. when the latest is damaged)
        restore_step=ml_collections.config_dict.placeholder(int),
        # encoder-decoder: evaluate also with encoders shuffled across the batch and log
        # encoder_information (nats per target token read from the encoder); doubles eval time
        eval_encoder_information=False,
        # decoder-only: evaluate each row's first half also with another row's second half and
        # log future_information (nats per token earlier predictions take from later tokens:
        # 0 for a causal model; routing that sees the whole sequence can leak); triples eval
        eval_future_information=False,
        # "START:END": a jax.profiler trace of those steps in WORKDIR/profile (train/profile.py)
        profile_steps=""))
    # an optional Weights & Biases writer beside metrics.jsonl and TensorBoard (wandb_log.py)
    config.logging = ml_collections.ConfigDict(dict(wandb_project="", wandb_mode="online"))
    return config


def resolve(config, vocab_size: int) -> ModelConfig:
    """Validates every section; returns the ModelConfig (with the tokenizer's vocab size)."""
    data_config.validate(config.data)
    model = dict(config.model.items())
    if model.get("vocab_size") is None:
        model["vocab_size"] = vocab_size
    check(model["vocab_size"] >= vocab_size,
          f"model.vocab_size={model['vocab_size']} is smaller than the tokenizer's {vocab_size}; "
          "raise it or leave it unset")
    model_cfg = ModelConfig.from_dict({**model, "moe": MoeConfig.from_dict(config.moe)})
    check(ARCH_OBJECTIVES[model_cfg.arch] == config.data.objective,
          f"data.objective={config.data.objective!r} does not fit model.arch="
          f"{model_cfg.arch!r}; use {ARCH_OBJECTIVES[model_cfg.arch]!r}")
    t = config.train
    for name in ("num_steps", "log_every", "eval_every", "eval_batches", "checkpoint_every",
                 "keep_checkpoints"):
        check(isinstance(t[name], int) and t[name] >= 1, f"train.{name}={t[name]!r} must be an integer >= 1")
    parse_steps(t.get("profile_steps", ""))
    wandb_log.validate(config.get("logging", {}))
    check(t.z_loss >= 0, f"train.z_loss={t.z_loss!r} must be >= 0")
    n = t.get("grad_accum_steps", 1)
    check(isinstance(n, int) and not isinstance(n, bool) and n >= 1
          and config.data.batch_size % n == 0,
          f"train.grad_accum_steps={n!r} must be an integer >= 1 that divides "
          f"data.batch_size={config.data.batch_size}")
    check(t.restore_step is None or (isinstance(t.restore_step, int) and t.restore_step >= 1),
          f"train.restore_step={t.restore_step!r} must be None (the latest) or a saved step")
    optimizer.validate(config.optimizer)
    MeshConfig.from_dict(dict(config.mesh))
    _check_groups(config, model_cfg)
    return model_cfg


def _check_groups(config, model_cfg: ModelConfig) -> None:
    """moe.group_size must divide the tokens of every stack with MoE layers (else the layer
    fails only when traced)."""
    size = model_cfg.moe.group_size
    if not (size and model_cfg.has_moe):
        return
    lengths = {"decoder": config.data.seq_length}
    if model_cfg.arch == "encoder_decoder":
        lengths = {"encoder": config.data.seq_length,
                   "decoder": data_config.span_corruption_shapes(config.data)[2]}
    rows = config.data.batch_size // config.train.get("grad_accum_steps", 1)   # per microbatch
    for stack, depth in model_cfg.stack_depths().items():
        tokens = rows * lengths[stack]
        check("moe" not in ffn_pattern(model_cfg, depth, stack) or tokens % size == 0,
              f"moe.group_size={size} must divide the {stack}'s tokens per (micro)batch, "
              f"rows·length = {rows}·{lengths[stack]} = {tokens}")
