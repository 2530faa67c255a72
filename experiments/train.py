r"""Train any moejax model family: the main job.

    python -m experiments.train --config=configs/switch.py:tiny --workdir=/tmp/switch_tiny

Every config field can be overridden, e.g. --config.moe.num_experts=16
--config.train.num_steps=2000. Re-running with the same --workdir resumes from its latest
checkpoint. Writes checkpoints, metrics.jsonl, TensorBoard events and PNG plots to --workdir.

Several devices: --config.mesh.{data,fsdp,expert,model} (default: data-parallel over all).
Several hosts (TPU pod, SLURM, or any cluster): run the same command on every host with
--distributed (auto-detects TPU pods and SLURM), or with --coordinator_address=HOST:PORT
--num_processes=N --process_id=I. See docs/LAUNCH.md.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import distributed_flags
from moejax.errors import ConfigError
from moejax.train.trainer import TrainingDiverged, train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<family>.py:<size>",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and plots.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)     # orbax logs every file it writes at INFO
    try:
        distributed_flags.join_if_asked()
        train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except (ConfigError, TrainingDiverged) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
