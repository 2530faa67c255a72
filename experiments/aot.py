r"""Compile a config's whole training step for a Cloud TPU slice, from this machine, and size it.

    python -m experiments.aot --config=configs/switch.py:base --topology=v5p-64 \
        [--config.mesh.expert=8 ...] [--json=PATH]

No TPU is needed: XLA's TPU compiler comes with the libtpu wheel (`pip install
"jax[tpu]==<jax's version>"`), and jax.experimental.topologies describes the slice's chips.
The step compiled is the trainer's (forward, backward, optimizer update, expert parallelism as
the mesh shards it, DeepSeek's bias update where used) on abstract arrays: nothing is allocated.
Choices a config leaves to the backend ('auto') are made as on a TPU: dropless layers compile
with jax.lax.ragged_dot and the real ragged_all_to_all (benchmarks/aot.py: TPU_CHOICES).

Prints, per chip: parameter and optimizer-state bytes (from the shardings), the compiler's
argument / output / temporary / total memory against the chip's HBM and a FITS or DOES NOT
FIT line (exit status 1 if it does not fit); FLOPs per step; every collective in the compiled
program by kind, with its bytes (a scanned layer's once per layer: XLA:TPU's loops are counted
by their conditions, experiments/benchmarks/collectives.py); the all-to-all elements beside the
minimum the capacity plan needs (dropless: the exact rows; experiments/benchmarks/comm.py); and
a roofline PREDICTION of step time and MFU: compute at the
chip's bf16 peak, the compiler's bytes accessed at its HBM bandwidth, collective bytes at its
ICI bandwidth (moejax/parallel/tpu_chips.py, with sources). The prediction assumes compute and
HBM traffic overlap and collectives do not; it is a bound for planning, not a measurement.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from absl import flags
from ml_collections import config_flags

from experiments import cli
from experiments.benchmarks.aot import analyse, report

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<family>.py:<size>",
                                          lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", None, "<chip>-<chips>: v4, v5e, v5p or v6e, e.g. "
                                                  "v5p-64 (64 chips).")
_JSON = flags.DEFINE_string("json", None, "Also write the figures to this JSON file.")
flags.mark_flags_as_required(["config", "topology"])


def main(argv):
    del argv
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")          # no metadata server here
    from absl import logging
    logging.set_verbosity(logging.ERROR)
    from moejax.errors import ConfigError
    if importlib.util.find_spec("libtpu") is None:
        print('error: compiling for TPU needs libtpu: pip install "jax[tpu]==<jax version>" '
              "(about 700 MB)", file=sys.stderr)
        sys.exit(1)
    try:
        figures = analyse(_CONFIG.value, _TOPOLOGY.value,
                          log=lambda s: print(s, file=sys.stderr, flush=True))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    print(report(figures))
    cli.write_json(_JSON.value, figures)
    if not figures["fits"]:
        sys.exit(1)


if __name__ == "__main__":
    cli.run(main)
