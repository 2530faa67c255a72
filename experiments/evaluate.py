r"""Evaluate any checkpoint without training: cross-entropy, accuracy and every MoE metric.

    python -m experiments.evaluate --workdir=W [--step=N] [--split=validation]
        [--eval_capacity_factors=0.5,1,1.25,2,4] [--config.moe.dispatch=einsum ...]

Restores W's checkpoint (default: the latest) with the config it was written with, applies any
--config.<field>=<value> overrides (fields that do not change a parameter's shape: dispatch,
capacity factors, eval_batches, the data split ...), and evaluates train.eval_batches batches
of the split exactly as the trainer does at its evaluations: the same numbers for the same
step. Prints a table and writes it all as JSON (default W/eval/step_<N>.json): token-weighted
cross-entropy and next-token accuracy, encoder information for encoder-decoders, and each MoE
layer's metrics by name ('decoder layer 1', as inspect_checkpoint names them).

--eval_capacity_factors evaluates the same weights once per factor (moe.eval_capacity_factor;
Switch Transformer, Fedus et al. 2021, Table 1: quality rises with the eval capacity factor
while fewer tokens are dropped). It needs a router whose dispatch uses capacity.

Errors are one line (`error: ...`, exit 1), before anything is compiled.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from absl import flags, logging

from experiments import cli, config_files
from experiments.recipes.runs import parse_value
from moejax.errors import ConfigError, check

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir whose checkpoint to evaluate.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_SPLIT = flags.DEFINE_string("split", None, "Data split (default: the config's eval split).")
_FACTORS = flags.DEFINE_list("eval_capacity_factors", None,
                             "Evaluate once per eval capacity factor, e.g. 0.5,1,1.25,2,4.")
_JSON = flags.DEFINE_string("json", None, "Where to write the results (default: "
                                          "WORKDIR/eval/step_<N>.json).")
flags.mark_flags_as_required(["workdir"])

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
    """{'step', 'split', 'overrides', 'evaluations': [{'eval_capacity_factor'?, metrics}]}.

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
            logging.info("evaluated %s", label or "as stored")
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


def main(argv, overrides: Mapping[str, Any] = ()):
    del argv
    logging.set_verbosity(logging.WARNING)     # orbax logs every file it reads at INFO
    try:
        factors = [float(f) for f in _FACTORS.value] if _FACTORS.value else None
    except ValueError:
        _exit(f"error: --eval_capacity_factors={','.join(_FACTORS.value)}: not numbers")
    try:
        results = evaluate_checkpoint(_WORKDIR.value, _STEP.value, overrides, _SPLIT.value,
                                      factors)
    except ConfigError as err:
        _exit(f"error: {err}")
    print(format_results(results))
    path = _JSON.value or os.path.join(_WORKDIR.value, "eval", f"step_{results['step']}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    cli.write_json(path, results)
    print(f"wrote {path}")


def _exit(message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
    try:
        _argv, _overrides = split_overrides(sys.argv)
    except ConfigError as _err:
        _exit(f"error: {_err}")
    sys.argv = _argv
    cli.run(lambda argv: main(argv, _overrides))
