"""Hugging Face model directories in and out: read one into a trainer workdir, write one back.

    hf = read_hf_dir(DIR)                 # config.json + safetensors (sharded or not), lazily
    write_workdir(config, model_cfg, hf, W)   # W/checkpoints/0: the weights, a fresh optimizer
    export_hf_dir(W, step, OUT)           # OUT/config.json + OUT/model.safetensors

The imported checkpoint is an ordinary trainer checkpoint at step 0 (model and optimizer
state; no data position, so training starts at the beginning of its data), which train,
evaluate, sample and inspect_checkpoint read. Tensors are read with
the safetensors package (the format's reference reader; it maps the files and reads each
tensor when asked). Nothing is downloaded: users bring the directory.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Any, Callable, Dict, List

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from moejax.checkpoints import hf_config, hf_weights
from moejax.checkpoints.store import Checkpointer
from moejax.errors import ConfigError, check
from moejax.models import count_params, init_model
from moejax.models.config import ModelConfig
from moejax.routing.router import SelectionBias
from moejax.train import run_config
from moejax.train.logs import Progress
from moejax.train.optimizer import make_optimizer

# tensors in Hugging Face checkpoints that hold no parameter moejax needs
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclasses.dataclass
class HfModel:
    """A model directory: its config.json, the names of its tensors and a reader for them."""
    directory: str
    config: Dict[str, Any]
    names: List[str]
    get: Callable[[str], np.ndarray]


def read_hf_dir(directory: str) -> HfModel:
    """config.json and every *.safetensors file of `directory` (one ConfigError line if one
    is missing or unreadable)."""
    from safetensors import safe_open
    config_path = os.path.join(directory, "config.json")
    check(os.path.exists(config_path), f"import: {config_path} does not exist (a Hugging Face "
                                       "model directory has config.json and *.safetensors)")
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"import: {config_path} cannot be read ({err})") from None
    files = sorted(glob.glob(os.path.join(directory, "*.safetensors")))
    check(bool(files), f"import: no *.safetensors files in {directory} (.bin checkpoints are "
                       "not read: convert them with transformers' save_pretrained)")
    where: Dict[str, str] = {}
    for path in files:
        try:
            with safe_open(path, framework="flax") as f:
                where.update({name: path for name in f.keys()})
        except Exception as err:            # noqa: BLE001 -- safetensors raises several types
            raise ConfigError(f"import: {path} cannot be read ({err})") from None

    def get(name: str) -> np.ndarray:
        check(name in where, f"import: the checkpoint has no tensor {name}")
        with safe_open(where[name], framework="flax") as f:
            return np.asarray(f.get_tensor(name), np.float32)

    return HfModel(directory, config, sorted(where), get)


def mtp_layer(name: str, num_layers: int) -> bool:
    """DeepSeek-V3's multi-token-prediction module: layers after the last (not modelled)."""
    parts = name.split(".")
    return (len(parts) > 2 and parts[:2] == ["model", "layers"] and parts[2].isdigit()
            and int(parts[2]) >= num_layers)


def state_shapes(model_cfg: ModelConfig) -> Dict[tuple, tuple]:
    model = nnx.eval_shape(lambda: init_model(model_cfg, 0))
    return {tuple(path): tuple(v.get_value().shape)
            for path, v in nnx.to_flat_state(nnx.state(model))}


def imported_state(model_cfg: ModelConfig, hf: HfModel) -> Dict[tuple, np.ndarray]:
    """The moejax state of every parameter (and DeepSeek-V3's selection bias); one line
    naming the first tensor of the checkpoint that no parameter reads, if any."""
    model_type = hf.config["model_type"]
    relevant = [n for n in hf.names if not n.endswith(IGNORED_SUFFIXES)
                and not mtp_layer(n, model_cfg.num_layers)]
    left = hf_weights.unmapped(relevant, model_cfg, model_type)
    if left:
        raise ConfigError(f"import: {len(left)} tensors of {hf.directory} map to no moejax "
                          f"parameter of this config, the first {left[0]}")
    return hf_weights.import_state(model_cfg, model_type, hf.get, state_shapes(model_cfg))


def write_workdir(config, model_cfg: ModelConfig, hf: HfModel, workdir: str) -> str:
    """Writes WORKDIR/checkpoints/0 and WORKDIR/config.json; returns the checkpoint path."""
    with Checkpointer(workdir, config.train.keep_checkpoints) as checkpoints:
        present = checkpoints.latest_step()
        check(present is None, f"import: {checkpoints.directory} already has checkpoints "
                               f"(step {present}); import into a new --workdir")
        values = imported_state(model_cfg, hf)
        model = init_model(model_cfg, config.train.seed)
        state = nnx.state(model)
        flat = dict(nnx.to_flat_state(state))
        for path, value in values.items():
            variable = flat[path]
            variable.set_value(jnp.asarray(value, variable.get_value().dtype))
        nnx.update(model, state)
        optimizer = make_optimizer(config.optimizer, model, config.train.num_steps)
        checkpoints.save(0, model, optimizer, {}, config.to_json_best_effort())
        Progress.show(f"import: {hf.config['model_type']} model, "
                      f"{count_params(model) / 1e6:.2f}M parameters, from {hf.directory}")
    if jax.process_index() == 0:
        run_config.write(workdir, config, imported_from={"hf_dir": hf.directory})
    return os.path.join(checkpoints.directory, "0")


def weights_of(model: nnx.Module) -> Dict[tuple, np.ndarray]:
    """{state path: float32 array} of the parameters and DeepSeek's selection biases."""
    state = nnx.state(model, nnx.Any(nnx.Param, SelectionBias))
    return {tuple(path): np.asarray(v.get_value(), np.float32)
            for path, v in nnx.to_flat_state(state)}


def export_hf_dir(module: nnx.Module, model_cfg: ModelConfig, config, out_dir: str
                  ) -> Dict[str, Any]:
    """Writes OUT/config.json and OUT/model.safetensors of a restored model; returns the
    config.json fields."""
    from safetensors.numpy import save_file
    model = {**dict(config.model.items()), "vocab_size": model_cfg.vocab_size}   # resolved
    hf = hf_config.to_hf(model, dict(config.moe.items()))
    tensors = hf_weights.export_state(model_cfg, hf["model_type"], weights_of(module))
    os.makedirs(out_dir, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
              os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(hf, f, indent=2)
    return hf


__all__ = ["HfModel", "export_hf_dir", "imported_state", "read_hf_dir", "weights_of",
           "write_workdir"]
