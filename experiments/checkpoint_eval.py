"""Evaluation of a checkpoint without training, and the --config.<field>=<value> overrides of
experiments/evaluate.py (the command's library: importing it defines no flags)."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from experiments import config_files
from experiments.recipes.runs import parse_value
from moejax.errors import check

CONFIG_PREFIX = "--config."


def split_overrides(argv: Sequence[str]) -> Tuple[List[str], Dict[str, Any]]:
    """(argv without its --config.<field>=<value> arguments, {field: parsed value})."""
    rest, overrides = [], {}
    for arg in argv:
        if arg.startswith(CONFIG_PREFIX):
            key, eq, value = arg[len(CONFIG_PREFIX):].partition("=")
            check(bool(eq) and bool(key), f"{arg}: write --config.<field>=<value>")
            overrides[key] = parse_value(value)
        else:
            rest.append(arg)
    return rest, overrides


def evaluate_checkpoint(workdir: str, step: Optional[int] = None,
                        overrides: Mapping[str, Any] = (), split: Optional[str] = None,
                        capacity_factors: Optional[Sequence[float]] = None) -> Dict[str, Any]:
    """Evaluates WORKDIR's checkpoint `step` (default: the latest) with the config it was
    written with and `overrides`; once per eval capacity factor if given.

    Returns {'step', 'split', 'overrides', 'evaluations': [{'eval_capacity_factor'?, metrics}]}.

    Every configuration problem is a ConfigError before the model is built or compiled."""
    import jax
    from flax import nnx

    from moejax.checkpoints import info
    from moejax.checkpoints.restore import restore_model
    from moejax.data import make_tokenizer
    from moejax.data.sources import open_source
    from moejax.models import init_model
    from moejax.models.config import moe_layer_names
    from moejax.train.config import resolve
    from moejax.train.evaluation import by_layer, evaluate
    from moejax.train.mesh import training_mesh

    step = info.choose_step(workdir, step)
    config = info.read_config(workdir, step)
    where = f"{workdir} step {step}"
    for key, value in dict(overrides).items():
        config_files.set_field(config, key, value, where)
    split = split or config.data.eval_split
    model_cfg = resolve(config, make_tokenizer(config.data).vocab_size)
    if capacity_factors:
        check(model_cfg.has_moe and model_cfg.moe.uses_capacity,
              f"--eval_capacity_factors: {where} has "
              + ("no MoE layers" if not model_cfg.has_moe else
                 f"moe.dispatch={model_cfg.moe.dispatch!r}, which has no capacity"))
        check(all(f > 0 for f in capacity_factors),
              f"--eval_capacity_factors={capacity_factors}: each must be > 0")
    open_source(config.data, split)                 # a missing dataset or split fails here
    mesh = training_mesh(config, model_cfg)
    names = moe_layer_names(model_cfg)
    evaluations = []
    with jax.set_mesh(mesh):
        model = restore_model(workdir, step, config, model_cfg, mesh)
        weights = nnx.state(model)
        for factor in capacity_factors or [None]:
            evaluated, label = model, {}
            if factor is not None:
                config.moe.eval_capacity_factor = float(factor)
                cfg = resolve(config, model_cfg.vocab_size)
                shape = nnx.eval_shape(lambda: init_model(cfg, config.train.seed))
                evaluated = nnx.merge(nnx.graphdef(shape), weights)
                label = {"eval_capacity_factor": float(factor)}
            result = evaluate(evaluated, config, float(config.train.z_loss), mesh, split)
            evaluations.append({**label, **by_layer(result, names)})
    return {"workdir": workdir, "step": step, "split": split,
            "eval_batches": config.train.eval_batches, "overrides": dict(overrides),
            "moe_layers": names, "evaluations": evaluations}


def format_results(results: Dict[str, Any]) -> str:
    """One row per evaluation: cross-entropy, accuracy, encoder information, and the dropped
    fraction averaged over MoE layers."""
    rows = results["evaluations"]
    sweep = "eval_capacity_factor" in rows[0]
    head = (["eval capacity factor"] if sweep else []) + ["cross-entropy", "accuracy"]
    has_encoder = "encoder_information" in rows[0]
    has_drops = "moe/dropped_fraction" in rows[0]
    head += (["encoder information"] if has_encoder else []) + (
        ["dropped (mean over layers)"] if has_drops else [])
    lines = [f"{results['workdir']} step {results['step']}, split {results['split']}, "
             f"{results['eval_batches']} batches",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = ([f"{row['eval_capacity_factor']:g}"] if sweep else []) + [
            f"{row['cross_entropy']:.4f}", f"{row['accuracy']:.4f}"]
        if has_encoder:
            cells.append(f"{row['encoder_information']:.4f}")
        if has_drops:
            drops = list(row["moe/dropped_fraction"].values())
            cells.append(f"{sum(drops) / len(drops):.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
