"""An optional Weights & Biases writer beside metrics.jsonl and TensorBoard (which stay the
record): `--config.logging.wandb_project=NAME` sends every train and eval record there, with
the run's config; `logging.wandb_mode=offline` writes the run under WORKDIR/wandb for a later
`wandb sync`. wandb is not a dependency: a run that asks for it without it installed stops
with one line before anything is built.
"""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any, Dict, Mapping

import numpy as np

from moejax.errors import check, check_choice

MODES = ("online", "offline")


def validate(logging_config) -> None:
    """One ConfigError line for a bad logging section (before anything is built)."""
    if not logging_config.get("wandb_project"):
        return
    check_choice("logging.wandb_mode", logging_config.get("wandb_mode", "online"), MODES)
    check(importlib.util.find_spec("wandb") is not None,
          f"logging.wandb_project={logging_config.wandb_project!r} needs wandb: "
          "pip install wandb (or leave logging.wandb_project empty)")


def flat(record: Mapping[str, Any], layer_names) -> Dict[str, Any]:
    """A metrics record as W&B scalars: 'train/loss', per-layer MoE values by layer name
    ('train/moe/dropped_fraction/decoder_layer_1'); the per-expert loads as lists."""
    split = record["split"]
    out = {}
    for key, value in record.items():
        if key in ("step", "split"):
            continue
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim == 0:
            out[f"{split}/{key}"] = float(arr)
        else:
            for i, row in enumerate(arr):
                name = layer_names[i] if i < len(layer_names) else f"layer_{i}"
                out[f"{split}/{key}/{name}"] = (float(row) if np.ndim(row) == 0
                                               else np.asarray(row).tolist())
    return out


class WandbWriter:
    """Sends metrics records to one W&B run (process 0 only, as MetricsLog writes)."""

    def __init__(self, workdir: str, logging_config, config_json: str, layer_names=()):
        import wandb                            # optional: validate() checked it is there
        self.wandb = wandb
        self.layer_names = [n.replace(" ", "_") for n in layer_names]
        os.makedirs(workdir, exist_ok=True)
        self.run = wandb.init(project=logging_config.wandb_project,
                              name=os.path.basename(os.path.normpath(workdir)),
                              dir=workdir, mode=logging_config.get("wandb_mode", "online"),
                              config=json.loads(config_json), resume="allow")

    def log(self, record: Mapping[str, Any]) -> None:
        self.run.log(flat(record, self.layer_names), step=int(record["step"]))

    def close(self) -> None:
        self.run.finish()
