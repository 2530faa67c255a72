"""The device mesh of a training run, checked against the model and batch before compiling."""

from __future__ import annotations

import jax
from jax.sharding import Mesh

from moejax.errors import check
from moejax.models.config import ModelConfig
from moejax.parallel.mesh import MeshConfig, batch_shards, check_moe_fits, make_mesh


def training_mesh(config, model_cfg: ModelConfig) -> Mesh:
    """config.mesh as a Mesh; one ConfigError line if it does not suit the model or batch."""
    mesh = make_mesh(MeshConfig.from_dict(dict(config.mesh)))
    if model_cfg.moe_layout != "none":
        check_moe_fits(model_cfg.moe, mesh)
    shards, batch = batch_shards(mesh), config.data.batch_size
    check(batch % shards == 0,
          f"data.batch_size={batch} must be divisible by the mesh's {shards} batch shards "
          f"(mesh.data × mesh.fsdp × mesh.expert)")
    processes = jax.process_count()
    check(batch % processes == 0,
          f"data.batch_size={batch} must be divisible by the {processes} processes")
    return mesh


def describe(mesh: Mesh) -> str:
    """'data=2 fsdp=1 expert=4 model=1 (8 devices, 2 processes)'."""
    axes = " ".join(f"{k}={v}" for k, v in mesh.shape.items())
    return f"{axes} ({mesh.size} devices, {jax.process_count()} processes)"
