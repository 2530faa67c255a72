"""Per-device memory of a training config's parameters and optimizer state on its mesh.

Shapes only (nnx.eval_shape), so a laptop can size a pod run; see moejax/parallel/shard_bytes.py.
"""

from __future__ import annotations

from typing import Any, Dict

from flax import nnx

from moejax.models import build_model
from moejax.parallel.mesh import MeshConfig, check_moe_fits
from moejax.parallel.shard_bytes import abstract_mesh, optimizer_memory, parameter_memory
from moejax.train.config import resolve
from moejax.train.optimizer import make_optimizer

T5_VOCAB = 32128            # the T5 SentencePiece vocabulary, padded as in T5 (32000 + 100 + pad)


def vocab_size(config) -> int:
    """The model's vocabulary without reading a tokenizer file on GCS (T5's is assumed there);
    a shipped or local tokenizer is read."""
    if config.model.vocab_size:
        return config.model.vocab_size
    if config.data.tokenizer == "sentencepiece" and str(
            config.data.spm_model_path).startswith("gs://"):
        return T5_VOCAB
    from moejax.data import make_tokenizer
    return make_tokenizer(config.data).vocab_size


def gib(nbytes: float) -> str:
    return f"{nbytes / 2 ** 30:9.3f} GiB"


def state_memory(config, devices: int) -> Dict[str, Any]:
    """{"mesh": axis sizes, "parameters": {"experts"?, "other"?, "all": {"total",
    "per_device"}}, "optimizer": {"total", "per_device"}} in bytes, from shapes alone."""
    model_cfg = resolve(config, vocab_size(config))
    sizes = MeshConfig.from_dict(dict(config.mesh)).axis_sizes(devices)
    mesh = abstract_mesh(sizes)
    if model_cfg.has_moe:
        check_moe_fits(model_cfg.moe, mesh)

    def make():
        model = build_model(model_cfg, rngs=nnx.Rngs(0))
        return model, make_optimizer(config.optimizer, model, config.train.num_steps)

    model, optimizer = nnx.eval_shape(make)                  # shapes only, nothing allocated
    return {"mesh": sizes, "parameters": parameter_memory(model, mesh),
            "optimizer": optimizer_memory(optimizer, model, mesh)}


def report(config, devices: int) -> str:
    """A table: parameters (experts, the rest) and optimizer state, total and per device."""
    memory = state_memory(config, devices)
    sizes, params, opt = memory["mesh"], memory["parameters"], memory["optimizer"]
    rows = [("parameters: experts", params.get("experts", {"total": 0, "per_device": 0})),
            ("parameters: other", params.get("other", {"total": 0, "per_device": 0})),
            ("parameters: all", params["all"]),
            (f"optimizer ({config.optimizer.name})", opt)]
    mesh_line = " × ".join(f"{k}={v}" for k, v in sizes.items())
    lines = [f"mesh {mesh_line} ({devices} devices)",
             f"{'':26s}{'total':>13s}{'per device':>14s}"]
    lines += [f"{name:26s}{gib(m['total'])}  {gib(m['per_device'])}" for name, m in rows]
    lines.append(f"{'parameters + optimizer':26s}{gib(params['all']['total'] + opt['total'])}  "
                 f"{gib(params['all']['per_device'] + opt['per_device'])}")
    lines.append("activations not included (batch, sequence length, remat)")
    return "\n".join(lines)
