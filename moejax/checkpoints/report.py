"""What a checkpoint holds, without restoring it: config, parameter tree, optimizer size, load.

    summary = summarize(workdir, step)      # a JSON-able dict
    print(format_summary(summary))

Shapes, dtypes and shardings come from orbax's metadata; which leaves are parameters (nnx.Param,
not RNG streams or router statistics) from the stored config's model built as shapes only;
expert statistics from the last train record of WORKDIR/metrics.jsonl at or before the step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from etils import epath
from flax import nnx

from moejax.checkpoints import info
from moejax.checkpoints.store import checkpoint_directory
from moejax.checkpoints.upcycle import LAYER_PATH, flatten, layer_places
from moejax.errors import ConfigError
from moejax.models import build_model
from moejax.models.config import ModelConfig, moe_layer_names
from moejax.train import run_config
from moejax.train.config import resolve
from moejax.train.logs import read_log
from moejax.train.state_memory import vocab_size

EXPERT_KEYS = ("tokens_per_expert", "dropped_fraction", "max_violation")


def _config_summary(config, cfg: ModelConfig) -> dict[str, Any]:
    out: dict[str, Any] = {
        "arch": cfg.arch, "layers": cfg.stack_depths(), "d_model": cfg.d_model, "d_ff": cfg.d_ff,
        "num_heads": cfg.num_heads, "head_dim": cfg.resolved_head_dim,
        "activation": cfg.activation, "vocab_size": cfg.vocab_size,
        "moe_layers": moe_layer_names(cfg),
        "optimizer": {k: config.optimizer[k] for k in ("name", "learning_rate", "schedule",
                                                       "warmup_steps")},
        "num_steps": config.train.num_steps,
        "batch": {"batch_size": config.data.batch_size, "seq_length": config.data.seq_length},
    }
    if cfg.has_moe:
        moe = cfg.moe
        out["moe"] = {"router": moe.router, "num_experts": moe.num_experts,
                      "num_selected_experts": moe.num_selected_experts,
                      "renormalize_gates": moe.renormalize_gates, "hidden_dim": moe.hidden_dim,
                      "activation": moe.activation, "dispatch": moe.dispatch,
                      "capacity_factor": moe.capacity_factor,
                      "eval_capacity_factor": moe.eval_capacity_factor,
                      "num_shared_experts": moe.num_shared_experts}
    return out


def _param_paths(cfg: ModelConfig) -> set:
    abstract = nnx.eval_shape(lambda: build_model(cfg, rngs=nnx.Rngs(0)))
    return set(flatten(nnx.to_pure_dict(nnx.state(abstract, nnx.Param))))


def _group(path: str, places: dict[str, str]) -> str | None:
    """The layers a stacked per-layer path holds (see _layer_groups); None for the rest."""
    match = LAYER_PATH.match(path)
    if not match or match["prefix"] not in places:
        return None
    return places[match["prefix"]]


def _layer_groups(cfg: ModelConfig) -> dict[str, str]:
    """super-block path -> 'encoder layers 1, 3 (moe FFN), stacked ×2'."""
    by_prefix: dict[str, list] = {}
    for (stack, layer), place in sorted(layer_places(cfg).items(), key=lambda x: x[0][1]):
        by_prefix.setdefault(place.prefix, []).append((stack, layer, place.kind))
    out = {}
    for prefix, layers in by_prefix.items():
        stack, kind = layers[0][0], layers[0][2]
        numbers = ", ".join(str(layer) for _, layer, _ in layers)
        plural = "layers" if len(layers) > 1 else "layer"
        out[prefix] = (f"{stack} {plural} {numbers} ({kind} FFN) at {prefix}/, stacked "
                       f"on axis 0")
    return out


def _expert_stats(workdir: str, step: int, names: list[str]) -> dict[str, Any] | None:
    path = epath.Path(workdir) / "metrics.jsonl"
    if not names or not path.exists():
        return None
    rows = [r for r in read_log(workdir) if r.get("split") == "train" and r["step"] <= step
            and "moe/tokens_per_expert" in r]
    if not rows:
        return None
    last = rows[-1]
    load = np.asarray(last["moe/tokens_per_expert"], np.float64)           # [layers, E]
    layers = []
    for i, row in enumerate(load):
        entry = {"layer": names[i] if i < len(names) else f"MoE layer {i}",
                 "tokens_per_expert": [float(x) for x in row]}
        for key in ("dropped_fraction", "max_violation"):
            values = last.get(f"moe/{key}")
            if values is not None:
                entry[key] = float(np.asarray(values).reshape(-1)[i])
        layers.append(entry)
    return {"step": last["step"], "layers": layers}


def summarize(workdir: str, step: int | None = None) -> dict[str, Any]:
    """Everything the inspector shows, as a JSON-able dict; one ConfigError line on failure."""
    steps = info.steps(workdir)
    step = info.choose_step(workdir, step)
    config = info.read_config(workdir, step)
    try:
        cfg = resolve(config, vocab_size(config))
    except ConfigError as err:
        raise ConfigError(f"the stored config of step {step} is invalid here: {err}") from err
    metadata = info.array_metadata(workdir, step)
    param_paths = _param_paths(cfg)
    groups = _layer_groups(cfg)
    parameters, other, meshes = [], [], set()
    for path, leaf in flatten(metadata["model"]).items():
        shape = tuple(int(d) for d in leaf.shape)
        sharding, mesh = info.describe_sharding(leaf)
        meshes.add(mesh)
        row = {"path": path, "shape": list(shape), "dtype": str(leaf.dtype),
               "sharding": sharding, "count": int(np.prod(shape, dtype=np.int64)),
               "group": _group(path, groups)}
        (parameters if path in param_paths else other).append(row)
    embedding = next((r["shape"][0] for r in parameters if r["path"] == "embed/embedding"),
                     None)
    summary_config = _config_summary(config, cfg)
    if embedding is not None:                    # the checkpoint's, whatever the tokenizer
        summary_config["vocab_size"] = embedding
    counts: dict[str, int] = {}
    for row in parameters:
        top = row["path"].split("/")[0]
        counts[top] = counts.get(top, 0) + row["count"]
    total = sum(counts.values())
    experts = sum(r["count"] for r in parameters if "/ffn/experts/" in r["path"])
    opt_leaves = list(flatten(metadata.get("optimizer", {})).values())
    optimizer = {
        "leaves": len(opt_leaves),
        "elements": int(sum(np.prod(leaf.shape, dtype=np.int64) for leaf in opt_leaves)),
        "bytes": int(sum(np.prod(leaf.shape, dtype=np.int64) * np.dtype(leaf.dtype).itemsize
                         for leaf in opt_leaves))}
    provenance = run_config.read(workdir) or {}
    return {
        "workdir": str(workdir), "checkpoint": f"{checkpoint_directory(workdir)}/{step}",
        **{key: provenance.get(key) for key in run_config.PROVENANCE},
        "steps": steps, "step": step, "config": summary_config,
        "mesh": ", ".join(sorted(m for m in meshes if m)) or None,
        "parameters": parameters, "parameter_counts": counts, "total_parameters": total,
        "expert_parameters": experts, "other_state": other, "optimizer": optimizer,
        "experts": _expert_stats(workdir, step, moe_layer_names(cfg)),
    }


def _millions(n: int) -> str:
    return f"{n:,} ({n / 1e6:.2f}M)"


def format_summary(s: dict[str, Any]) -> str:
    """The summary as text for a terminal."""
    c = s["config"]
    layers = " + ".join(f"{n} {stack}" for stack, n in c["layers"].items())
    lines = [f"checkpoint {s['checkpoint']}",
             f"steps present: {', '.join(map(str, s['steps']))}; showing step {s['step']}",
             *([f"upcycled from {u['dense_workdir']} step {u['step']} (optimizer state "
                f"{u['optimizer_state']})"] if (u := s.get("upcycled_from")) else []),
             *([f"imported from the Hugging Face model {i['hf_dir']}"]
               if (i := s.get("imported_from")) else []),
             (f"model: {c['arch']}, {layers} layers, d_model {c['d_model']}, d_ff "
              f"{c['d_ff']}, {c['num_heads']} heads × {c['head_dim']}, {c['activation']}, "
              f"vocab {c['vocab_size']}")]
    if "moe" in c:
        m = c["moe"]
        lines.append(
            f"MoE: router {m['router']}, E={m['num_experts']}, k={m['num_selected_experts']}"
            f"{' (renormalized)' if m['renormalize_gates'] else ''}, expert width "
            f"{m['hidden_dim']} {m['activation']}, dispatch {m['dispatch']}, capacity factor "
            f"{m['capacity_factor']} train / {m['eval_capacity_factor']} eval"
            + (f", {m['num_shared_experts']} shared" if m["num_shared_experts"] else ""))
        lines.append(f"MoE layers: {', '.join(c['moe_layers'])}")
    else:
        lines.append("MoE: none (dense FFNs)")
    o = c["optimizer"]
    lines.append(f"optimizer: {o['name']}, learning rate {o['learning_rate']} {o['schedule']} "
                 f"(warm-up {o['warmup_steps']}), {c['num_steps']} steps of "
                 f"{c['batch']['batch_size']} × {c['batch']['seq_length']} tokens")
    lines.append("")
    lines.append("parameters" + (f" (sharded on the mesh {s['mesh']})" if s["mesh"] else "")
                 + ":")

    def name(row):
        return "  " + LAYER_PATH.match(row["path"])["rest"] if row["group"] else row["path"]

    width = max((len(name(r)) for r in s["parameters"]), default=0) + 2
    group = object()
    for row in s["parameters"]:
        if row["group"] != group:
            group = row["group"]
            if group:
                lines.append(f"  {group}:")
        lines.append(f"  {name(row):{width}s}{tuple(row['shape'])!s:>18s}  {row['dtype']:9s}"
                     f"{row['count']:>12,}  {row['sharding'] or ''}")
    lines.append("parameter count by part: " + ", ".join(
        f"{k} {v:,}" for k, v in s["parameter_counts"].items()))
    total = s["total_parameters"]
    lines.append(f"total parameters: {_millions(total)}"
                 + (f"; experts {_millions(s['expert_parameters'])}, "
                    f"{100 * s['expert_parameters'] / max(total, 1):.1f}%"
                    if s["expert_parameters"] else ""))
    if s["other_state"]:
        lines.append(f"other model state (RNG streams, router statistics): "
                     f"{len(s['other_state'])} arrays, "
                     f"{sum(r['count'] for r in s['other_state']):,} values")
    opt = s["optimizer"]
    lines.append(f"optimizer state: {opt['leaves']} arrays, {_millions(opt['elements'])} values, "
                 f"{opt['bytes'] / 2 ** 20:.2f} MiB "
                 f"({opt['elements'] / max(total, 1):.2f}× the parameters)")
    lines.append("")
    e = s["experts"]
    if e is None:
        lines.append("expert statistics: none logged (no MoE layers or no train record in "
                     "metrics.jsonl at or before this step)")
        return "\n".join(lines)
    lines.append(f"expert statistics (metrics.jsonl, train step {e['step']}):")
    for layer in e["layers"]:
        load = np.asarray(layer["tokens_per_expert"])
        shown = (" ".join(f"{x:.3f}" for x in load) if load.size <= 16 else
                 f"min {load.min():.4f} max {load.max():.4f}")
        extra = "".join(f", {k.replace('_', ' ')} {layer[k]:.4f}"
                        for k in ("dropped_fraction", "max_violation") if k in layer)
        lines.append(f"  {layer['layer']}: tokens per expert [{shown}]{extra}")
    return "\n".join(lines)
