"""A checkpoint restores onto a different mesh with identical values: orbax reads every array
into the sharding of the model being restored (8 virtual devices, see conftest)."""

import jax
import numpy as np
import pytest
from flax import nnx

from moejax import MoeConfig
from moejax.checkpoints.store import Checkpointer
from moejax.models import ModelConfig, build_model
from moejax.parallel import MeshConfig, make_mesh, shard_model, shard_optimizer
from moejax.train.config import base_config
from moejax.train.optimizer import make_optimizer

MODEL = ModelConfig(arch="decoder", vocab_size=64, d_model=32, num_heads=4, d_ff=64,
                    num_layers=2, moe_layout="every", moe_every=1,
                    moe=MoeConfig(num_experts=8, hidden_dim=16))


def build(mesh_cfg: MeshConfig, seed: int):
    """Model and AdamW state created in place on the mesh, after one update (so the moments
    are not all zeros)."""
    optimizer_cfg = base_config().optimizer
    optimizer_cfg.name = "adamw"
    mesh = make_mesh(mesh_cfg)
    with jax.set_mesh(mesh):
        model = shard_model(lambda: build_model(MODEL, rngs=nnx.Rngs(seed)), mesh)
        optimizer = shard_optimizer(lambda m: make_optimizer(optimizer_cfg, m, 10), model, mesh)
        grads = jax.tree.map(lambda p: p * 0.5 + seed, nnx.state(model, nnx.Param))
        optimizer.update(model, grads)
    return mesh, model, optimizer


def arrays(node):
    """Every array of a module's state (PRNG keys as their raw data), in tree order."""
    def raw(x):
        return jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype,
                                                               jax.dtypes.prng_key) else x
    return jax.tree.leaves(jax.tree.map(raw, nnx.state(node)))


@pytest.mark.parametrize("saved,restored", [
    (MeshConfig(data=8), MeshConfig(data=2, expert=4)),
    (MeshConfig(expert=8), MeshConfig(data=2, fsdp=2, expert=2)),
    (MeshConfig(data=2, expert=2, model=2), MeshConfig(num_devices=1)),
])
def test_checkpoint_restores_onto_another_mesh_with_identical_values(saved, restored, tmp_path):
    _, model_a, optimizer_a = build(saved, seed=0)
    with Checkpointer(str(tmp_path), keep=1) as checkpoints:
        checkpoints.save(1, model_a, optimizer_a, {"position": 3}, "{}")

    mesh_b, model_b, optimizer_b = build(restored, seed=1)       # other values, other places
    placed = [x.sharding for x in arrays(model_b) + arrays(optimizer_b)]
    with jax.set_mesh(mesh_b), Checkpointer(str(tmp_path), keep=1) as checkpoints:
        data_state, _ = checkpoints.restore(1, model_b, optimizer_b)
    assert data_state == {"position": 3}
    before, after = arrays(model_a) + arrays(optimizer_a), arrays(model_b) + arrays(optimizer_b)
    assert len(before) == len(after)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # every array now lives where mesh B's rules put it, not where it was saved from
    assert [x.sharding for x in after] == placed
    experts = [x for x in after if x.ndim == 4]                   # [layers, E, D, F] weights
    assert experts and all(x.sharding.mesh.shape == mesh_b.shape for x in experts)
