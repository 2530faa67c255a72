"""The training step of a paper config, ready to time, compile or inspect (suites step, comm,
compile, memory).

A setup is the config's model and optimizer (built as moejax.train.trainer builds them, placed
on a mesh when one is given) and one synthetic batch: random tokens of the shapes the data
pipeline produces for the config (moejax/data), one segment per row and every target weighted,
so no corpus is read. An abstract setup holds shapes only (lowering and compiling need no
more). The dense baseline of a config is the same config with model.moe_as_dense=True (every
MoE layer a dense FFN of the active width k·F).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, Mapping, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from experiments import config_files
from moejax.data.config import span_corruption_shapes
from moejax.models import ModelConfig, count_params, init_model
from moejax.parallel import MeshConfig, global_batch, shard_model, shard_optimizer
from moejax.parallel.rules import batch_sharding, like_parameters, state_shardings
from moejax.train.config import resolve
from moejax.train.mesh import training_mesh
from moejax.train.optimizer import make_optimizer
from moejax.train.state_memory import vocab_size
from moejax.train.step import train_step

DENSE = {"model.moe_as_dense": True}
# --smoke sizes of the single-device suites (step, memory): the same programs, so a test
# session's compilation cache serves the second suite.
SMOKE_OVERRIDES = (("data.batch_size", 2), ("data.seq_length", 32), ("model.d_model", 32),
                   ("model.num_heads", 2), ("model.head_dim", 16), ("model.d_ff", 64),
                   ("moe.hidden_dim", 64), ("moe.num_experts", 4))


def load_config(family: str, overrides: Mapping[str, Any] = (), size: str = "tiny"
                ) -> ml_collections.ConfigDict:
    """configs/<family>.py:<size> with dotted overrides ({"model.num_layers": 8, ...})."""
    return config_files.load(family, size, overrides)


NAMES = {"switch": "Switch", "st_moe": "ST-MoE", "glam": "GLaM", "mixtral": "Mixtral"}


def describe(family: str, moe) -> str:
    """'Switch tiny (top-1 of E=8)' for a row of a table."""
    return (f"{NAMES.get(family, family)} tiny (top-{moe.num_selected_experts} of "
            f"E={moe.num_experts})")


def batch_lengths(config) -> Dict[str, int]:
    """{"inputs": L_in, "targets": L_tgt} (span corruption) or {"targets": L} (causal LM)."""
    if config.data.objective == "causal_lm":
        return {"targets": config.data.seq_length}
    _, inputs_length, targets_length = span_corruption_shapes(config.data)
    return {"inputs": inputs_length, "targets": targets_length}


def synthetic_batch(config, vocab: int, seed: int = 0) -> Dict[str, np.ndarray]:
    """Random tokens in [1, vocab) with the pipeline's keys, shapes and dtypes; all [B, L]."""
    rng = np.random.default_rng(seed)
    b = config.data.batch_size
    lengths = batch_lengths(config)

    def tokens(n):                                        # [B, n] int32
        return rng.integers(1, vocab, size=(b, n), dtype=np.int32)

    def ones(n, dtype=np.int32):                          # one segment per row
        return np.ones((b, n), dtype)

    def positions(n):                                     # [B, n] 0, 1, ...
        return np.broadcast_to(np.arange(n, dtype=np.int32), (b, n)).copy()

    t = lengths["targets"]
    if "inputs" not in lengths:
        return {"inputs": tokens(t), "targets": tokens(t), "segment_ids": ones(t),
                "positions": positions(t), "loss_mask": ones(t, np.float32)}
    n = lengths["inputs"]
    return {"encoder_input_tokens": tokens(n), "encoder_segment_ids": ones(n),
            "encoder_positions": positions(n), "decoder_input_tokens": tokens(t),
            "decoder_target_tokens": tokens(t), "decoder_segment_ids": ones(t),
            "decoder_positions": positions(t), "decoder_loss_weights": ones(t, np.float32)}


@dataclasses.dataclass
class TrainSetup:
    """A model, its optimizer and a batch (on `mesh`, or on the default device if None)."""
    config: ml_collections.ConfigDict
    model_cfg: ModelConfig
    model: nnx.Module
    optimizer: nnx.Optimizer
    batch: Dict[str, jax.Array]
    mesh: Optional[Mesh]

    @property
    def z_loss(self) -> float:
        return float(self.config.train.z_loss)

    @property
    def grad_accum_steps(self) -> int:
        return int(self.config.train.get("grad_accum_steps", 1))

    @property
    def tokens(self) -> int:
        """Tokens per step: batch · (encoder + decoder length), or batch · length."""
        return self.config.data.batch_size * sum(batch_lengths(self.config).values())

    @property
    def params(self) -> int:
        return count_params(self.model)

    @property
    def param_bytes(self) -> int:
        return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize
                   for x in jax.tree.leaves(nnx.state(self.model, nnx.Param)))

    def step_fn(self) -> Callable[[], Any]:
        """One train_step per call (optimizer update included; the model changes each time)."""
        step = nnx.cached_partial(train_step, self.model, self.optimizer)
        args = (self.batch, self.z_loss, self.grad_accum_steps)
        if self.mesh is None:
            return lambda: step(*args)

        def call():
            with jax.set_mesh(self.mesh):
                return step(*args)
        return call

    def lower(self) -> jax.stages.Lowered:
        """The train step traced and lowered to StableHLO (no XLA compile yet)."""
        args = (self.model, self.optimizer, self.batch, self.z_loss, self.grad_accum_steps)
        if self.mesh is None:
            return train_step.lower(*args)
        with jax.set_mesh(self.mesh):
            return train_step.lower(*args)

    def compile(self) -> jax.stages.Compiled:
        return self.lower().compile()


def build(config, mesh: Optional[MeshConfig] = None, seed: int = 0,
          abstract: bool = False, devices=None) -> TrainSetup:
    """The setup of `config`: single device (mesh None) or sharded over the mesh, with the
    config's data.batch_size split over the mesh's batch axes.

    abstract: shapes only (every array a jax.ShapeDtypeStruct, placed as training places it):
    enough to lower and compile, nothing allocated or initialised; step_fn() cannot run it.
    devices: the mesh's devices (default: every device), e.g. a TPU topology's for compiling
    ahead of time (abstract only).
    """
    model_cfg = resolve(config, vocab_size(config))
    steps = config.train.num_steps

    def make_model():
        return init_model(model_cfg, seed)

    def make_both():
        model = make_model()
        return model, make_optimizer(config.optimizer, model, steps)

    batch = synthetic_batch(config, model_cfg.vocab_size, seed)
    if mesh is None:
        if abstract:
            model, optimizer = nnx.eval_shape(make_both)
            batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
            return TrainSetup(config, model_cfg, model, optimizer, batch, None)
        model, optimizer = make_both()
        return TrainSetup(config, model_cfg, model, optimizer,
                          jax.tree.map(jnp.asarray, batch), None)
    config = config.copy_and_resolve_references()
    config.mesh.update(dataclasses.asdict(mesh))
    jax_mesh = training_mesh(config, model_cfg, devices)  # checks E, batch against the mesh
    with jax.set_mesh(jax_mesh):
        if abstract:
            model, optimizer = nnx.eval_shape(make_both)
            model = _placed(model, state_shardings(nnx.state(model), jax_mesh))
            optimizer = _placed(optimizer, like_parameters(nnx.state(optimizer), model,
                                                           jax_mesh))
            batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype,
                                             sharding=batch_sharding(jax_mesh, v.ndim))
                     for k, v in batch.items()}
            return TrainSetup(config, model_cfg, model, optimizer, batch, jax_mesh)
        model = shard_model(make_model, jax_mesh)
        optimizer = shard_optimizer(lambda m: make_optimizer(config.optimizer, m, steps),
                                    model, jax_mesh)
    return TrainSetup(config, model_cfg, model, optimizer, global_batch(batch, jax_mesh),
                      jax_mesh)


def _placed(module: nnx.Module, shardings) -> nnx.Module:
    """An abstract module whose variables carry `shardings` (a State of NamedShardings)."""
    graphdef, state = nnx.split(module)
    state = jax.tree.map(
        lambda sharding, v: v.replace(jax.ShapeDtypeStruct(v.get_value().shape,
                                                           v.get_value().dtype,
                                                           sharding=sharding)),
        shardings, state)
    return nnx.merge(graphdef, state)


__all__ = ["DENSE", "SMOKE_OVERRIDES", "TrainSetup", "batch_lengths", "build", "describe",
           "load_config", "synthetic_batch"]
