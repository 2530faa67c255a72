r"""Per-device memory of a config's parameters and optimizer state on a mesh, from any machine.

    python -m experiments.memory --config=configs/switch.py:base --devices=32 \
        --config.mesh.expert=32

--devices is the size of the target slice or cluster (default: the devices here); the mesh
comes from --config.mesh.* exactly as in training. Nothing is allocated: shapes only. Prints
the parameters (experts and the rest) and the optimizer state, in total and per device, and
the mesh. Activations are not included (see moejax/parallel/shard_bytes.py).
"""

import sys

from absl import flags
from ml_collections import config_flags

from experiments import cli
from moejax.errors import ConfigError, check
from moejax.train.state_memory import report

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<family>.py:<size>",
                                          lock_config=True)
_DEVICES = flags.DEFINE_integer("devices", None, "Devices of the target (default: this host's).")
flags.mark_flags_as_required(["config"])


def main(argv):
    del argv
    try:
        devices = _DEVICES.value
        if devices is None:
            import jax
            devices = jax.device_count()
        check(devices >= 1, f"--devices={devices} must be >= 1")
        print(report(_CONFIG.value, devices))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli.run(main)
