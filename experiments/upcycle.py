r"""Sparse Upcycling (Komatsuzaki et al. 2022): an MoE run that starts from a dense checkpoint.

    python -m experiments.train --config=configs/dense.py:tiny --workdir=/tmp/up/dense \
        --config.train.num_steps=300
    python -m experiments.upcycle --dense_workdir=/tmp/up/dense \
        --config=configs/switch.py:tiny --workdir=/tmp/up/switch --config.train.num_steps=400

Reads the dense run's checkpoint (--step, default its latest; its stored config gives the dense
model), checks that --config is that model with some FFNs made sparse (same depth, widths,
activation; the same data and optimizer), then writes WORKDIR/checkpoints/<dense step>: every
expert of every MoE layer a copy of that layer's dense FFN, fresh routers, everything else
copied, the optimizer state carried over (--optimizer_state=carry: the experts' moments are
the dense FFN's; reset: fresh moments; the step counters are carried either way, so the
learning-rate schedule continues), and the dense run's data iterator state. Then it trains
WORKDIR to --config.train.num_steps like experiments.train (--notrain stops after writing).
With gates that sum to one per token and nothing dropped (top-1 or top-2 with
--config.moe.renormalize_gates=True and a large eval capacity factor, or dropless dispatch)
the first evaluation equals the dense model's.

Every error is one line on stderr (`error: ...`, exit status 1), before anything big is built.
"""

import sys

from absl import flags, logging
from ml_collections import config_flags

from experiments import cli, distributed_flags
from moejax.checkpoints import upcycle_workdir
from moejax.checkpoints.store import CheckpointWriteFailed
from moejax.checkpoints.upcycle import OPTIMIZER_STATE_MODES
from moejax.errors import ConfigError
from moejax.train.trainer import TrainingDiverged, train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<family>.py:<size> of the "
                                          "MoE model", lock_config=True)
_DENSE_WORKDIR = flags.DEFINE_string("dense_workdir", None,
                                     "Workdir of the dense run (its checkpoints/<step>).")
_WORKDIR = flags.DEFINE_string("workdir", None, "New workdir for the MoE run.")
_STEP = flags.DEFINE_integer("step", None, "Dense checkpoint step (default: the latest).")
_OPTIMIZER_STATE = flags.DEFINE_enum(
    "optimizer_state", "carry", list(OPTIMIZER_STATE_MODES),
    "carry: experts start with the dense FFN's optimizer moments; reset: fresh moments.")
_TRAIN = flags.DEFINE_bool("train", True, "Continue training after writing the checkpoint.")
_STEPS = flags.DEFINE_integer("steps", None, "Training steps of the MoE run "
                              "(= --config.train.num_steps).")
flags.mark_flags_as_required(["config", "dense_workdir", "workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.ERROR)     # orbax warns about every item it does not restore
    try:
        cli.apply_steps(_CONFIG.value, _STEPS.value)
        distributed_flags.join_if_asked()
        plan = upcycle_workdir.prepare(
            _CONFIG.value, _DENSE_WORKDIR.value, _WORKDIR.value, step=_STEP.value,
            optimizer_state=_OPTIMIZER_STATE.value, train=_TRAIN.value)
        upcycle_workdir.write(plan)
        if _TRAIN.value:
            train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except (ConfigError, TrainingDiverged, CheckpointWriteFailed) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli.run(main)
