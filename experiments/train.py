r"""Train any moejax model family: the main job.

    python -m experiments.train --config=configs/switch.py:tiny --workdir=/tmp/switch_tiny

Every config field can be overridden, e.g. --config.moe.num_experts=16
--config.train.num_steps=2000 (or --steps=2000, as compare and reproduce take it).
Re-running with the same --workdir resumes from its latest checkpoint. Writes checkpoints,
config.json, metrics.jsonl, TensorBoard events and PNG plots to --workdir.

SIGTERM or Ctrl-C saves a checkpoint after the current step and exits 0 (a second Ctrl-C
stops at once); a second run on a workdir in use refuses with one line naming the holder.

Several devices: --config.mesh.{data,fsdp,expert,model} (default: data-parallel over all).
Several hosts (TPU pod, SLURM, or any cluster): run the same command on every host with
--distributed (auto-detects TPU pods and SLURM), or with --coordinator_address=HOST:PORT
--num_processes=N --process_id=I. See docs/LAUNCH.md.
"""

import signal

# Stop requests during start-up (importing JAX takes seconds) are recorded from here on and
# handed to the trainer's handler: the run then exits cleanly before its first step.
_EARLY_STOPS = []
if __name__ == "__main__":                 # not when imported (e.g. by a test runner)
    for _signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(_signum, lambda signum, frame: _EARLY_STOPS.append(signum))

import os  # noqa: E402
import sys  # noqa: E402

from absl import flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from experiments import cli, distributed_flags  # noqa: E402
from moejax.checkpoints.store import CheckpointWriteFailed  # noqa: E402
from moejax.errors import ConfigError  # noqa: E402
from moejax.train.stop import STOP  # noqa: E402
from moejax.train.trainer import TrainingDiverged, train_and_evaluate  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<family>.py:<size>",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and plots.")
_STEPS = flags.DEFINE_integer("steps", None, "Training steps (= --config.train.num_steps).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)     # orbax logs every file it writes at INFO
    STOP.install()
    for signum in _EARLY_STOPS:
        STOP.request(signum)
    try:
        cli.apply_steps(_CONFIG.value, _STEPS.value)
        distributed_flags.join_if_asked()
        train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except (ConfigError, TrainingDiverged, CheckpointWriteFailed) as err:
        _exit(f"error: {err}", 1)
    except KeyboardInterrupt:                  # a second Ctrl-C: no time to save
        _exit("interrupted by a second Ctrl-C: stopped without saving (the last checkpoint "
              "is kept)", 130)


def _exit(message: str, status: int) -> None:
    """Prints message and leaves at once: a failed orbax read or write leaves background
    threads that print tracebacks while the interpreter shuts down. Every file is closed or
    flushed by now (metrics.jsonl and TensorBoard are flushed at each record)."""
    print(message, file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(status)


if __name__ == "__main__":
    cli.run(main)
