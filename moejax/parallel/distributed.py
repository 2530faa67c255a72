"""The multi-host runtime: jax.distributed and global arrays from per-process batches.

One process per host (a TPU VM worker, a GPU node, or a local process in tests). Every process
runs the same program; jax.distributed connects them through a coordinator (process 0).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import jax
import numpy as np
from jax.sharding import Mesh

from moejax.errors import check
from moejax.parallel.rules import batch_sharding


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None,
               local_device_ids: Optional[Union[int, Sequence[int]]] = None, *,
               cpu_collectives: Optional[str] = None,
               heartbeat_timeout_seconds: int = 30,
               shutdown_timeout_seconds: int = 60,
               initialization_timeout: int = 300) -> None:
    """Connects this process to the others (before any other JAX call touches devices).

    With no arguments JAX detects the cluster itself: Cloud TPU pod VMs (one process per VM),
    SLURM (one process per task; JAX gives each task the GPU numbered SLURM_LOCALID, so run one
    task per GPU), Open MPI, Kubernetes jobs. Otherwise give the coordinator's host:port, the
    number of processes and this process's id (0 runs the coordinator).
    `cpu_collectives="gloo"` makes XLA:CPU devices of different processes talk (used by the
    multi-process tests). When a process stops answering for heartbeat_timeout_seconds (JAX's
    default is 100 s; 30 s here) the coordination service aborts the others instead of letting
    them hang in a collective; shutdown_timeout_seconds bounds the exit barrier.
    """
    explicit = (coordinator_address, num_processes, process_id)
    check(all(v is None for v in explicit) or all(v is not None for v in explicit),
          "distributed: give all of coordinator_address, num_processes and process_id, or "
          "none of them (auto-detection on TPU pods and SLURM)")
    if process_id is not None:
        check(0 <= process_id < num_processes,
              f"distributed: process_id={process_id} must be in [0, {num_processes})")
    if cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               local_device_ids=local_device_ids,
                               heartbeat_timeout_seconds=heartbeat_timeout_seconds,
                               shutdown_timeout_seconds=shutdown_timeout_seconds,
                               initialization_timeout=initialization_timeout)


def global_batch(local_batch: Any, mesh: Mesh) -> Any:
    """Per-process batches (a pytree of [b, ...] arrays) -> global [process_count·b, ...] arrays
    split over the mesh's batch axes (data × fsdp × expert).

    Each process's rows fill the batch shards of its own devices, in mesh order; every process
    must pass the same b (the data pipeline gives every process batch_size / process_count
    examples) and hold whole batch shards (moejax.train.mesh checks it).
    """
    def one(x):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim), x)
    return jax.tree.map(one, local_batch)
