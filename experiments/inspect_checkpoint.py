r"""What a workdir's checkpoint holds, read from metadata (no array is restored).

    python -m experiments.inspect_checkpoint --workdir=/tmp/up/switch [--step=N] [--json=PATH]

Prints the steps present, the chosen step (default: the latest), the stored config (architecture,
layers, router, E, k, capacity, optimizer), the parameter tree (path, shape, dtype, sharding,
count; the per-layer parameters grouped by the layers they stack), the parameter count per part
and in total, the optimizer state's size, and, when WORKDIR/metrics.jsonl has them, each MoE
layer's expert load, dropped fraction and max violation from the last train record at or before
the step. --json also writes all of it as JSON. Errors are one line (`error: ...`, exit 1).
"""

import sys

from absl import flags, logging

from experiments import cli
from moejax.checkpoints.report import format_summary, summarize
from moejax.errors import ConfigError

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir whose checkpoints/ to inspect.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_JSON = flags.DEFINE_string("json", None, "Also write the summary to this JSON file.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.ERROR)     # orbax warns about metadata it does not need
    try:
        summary = summarize(_WORKDIR.value, _STEP.value)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    print(format_summary(summary))
    cli.write_json(_JSON.value, summary)


if __name__ == "__main__":
    cli.run(main)
