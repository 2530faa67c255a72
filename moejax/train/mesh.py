"""The device mesh of a training run, checked against the model and batch before compiling."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh

from moejax.errors import check
from moejax.models.config import ModelConfig
from moejax.parallel.mesh import (MESH_AXES, MeshConfig, batch_shards, check_moe_fits,
                                  make_mesh)


def training_mesh(config, model_cfg: ModelConfig, devices=None) -> Mesh:
    """config.mesh as a Mesh over `devices` (default: every device); one ConfigError line if
    it does not suit the model or batch."""
    mesh = make_mesh(MeshConfig.from_dict(dict(config.mesh)), devices)
    if model_cfg.has_moe:
        check_moe_fits(model_cfg.moe, mesh)
    shards, batch = batch_shards(mesh), config.data.batch_size
    check(batch % shards == 0,
          f"data.batch_size={batch} must be divisible by the mesh's {shards} batch shards "
          f"(mesh.data × mesh.fsdp × mesh.expert)")
    processes = jax.process_count()
    check(batch % processes == 0,
          f"data.batch_size={batch} must be divisible by the {processes} processes")
    _check_batch_shards_per_process(mesh)
    return mesh


def _check_batch_shards_per_process(mesh: Mesh) -> None:
    """Each process feeds its own rows, so the devices holding one batch shard (a row of the
    `model` axis) must all belong to one process."""
    owners = {}
    for index, device in np.ndenumerate(mesh.devices):
        shard = index[:MESH_AXES.index("model")]
        owners.setdefault(shard, set()).add(device.process_index)
    check(all(len(p) == 1 for p in owners.values()),
          f"mesh.model={mesh.shape['model']} spans several processes: a batch shard's devices "
          f"must be on one host; use mesh.model <= {jax.local_device_count()} (devices per "
          f"process) that divides it")


def describe(mesh: Mesh) -> str:
    """'data=2 fsdp=1 expert=4 model=1 (8 devices, 2 processes)'."""
    axes = " ".join(f"{k}={v}" for k, v in mesh.shape.items())
    return f"{axes} ({mesh.size} devices, {jax.process_count()} processes)"
