"""The multi-host flags of the training entry points (train, upcycle) and joining the run."""

from absl import flags

from moejax.parallel.distributed import initialize

_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Join a multi-host run (jax.distributed.initialize); auto-detects "
    "Cloud TPU pods and SLURM unless --coordinator_address is given.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0 (implies --distributed).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, from 0.")
_CPU_COLLECTIVES = flags.DEFINE_enum("cpu_collectives", None, ["gloo", "mpi"],
                                     "Collectives between CPU devices of different processes.")


def join_if_asked() -> None:
    """jax.distributed.initialize when --distributed or --coordinator_address is given."""
    if _DISTRIBUTED.value or _COORDINATOR.value:
        initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                   cpu_collectives=_CPU_COLLECTIVES.value)
