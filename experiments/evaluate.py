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
from typing import Any, Mapping

from absl import flags, logging

from experiments import cli
from experiments.checkpoint_eval import evaluate_checkpoint, format_results, split_overrides
from moejax.errors import ConfigError

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir whose checkpoint to evaluate.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_SPLIT = flags.DEFINE_string("split", None, "Data split (default: the config's eval split).")
_FACTORS = flags.DEFINE_list("eval_capacity_factors", None,
                             "Evaluate once per eval capacity factor, e.g. 0.5,1,1.25,2,4.")
_JSON = flags.DEFINE_string("json", None, "Where to write the results (default: "
                                          "WORKDIR/eval/step_<N>.json).")
flags.mark_flags_as_required(["workdir"])

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
