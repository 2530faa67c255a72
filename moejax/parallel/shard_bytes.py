"""Per-device memory of a model's parameters and optimizer state on any mesh, without devices.

The model is built abstractly (nnx.eval_shape: shapes only), each parameter is placed with the
logical-axis rules on an AbstractMesh of the requested sizes, and its bytes are divided by the
number of shards. This answers "does config X fit on a pod of N chips with this mesh?" from a
laptop. Activations are not included: they depend on batch, sequence length and remat; compile
on the real devices (jax's compiled memory_analysis) for those.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Dict

import jax
import numpy as np
from flax import nnx
from jax.sharding import AbstractMesh

from moejax.parallel.mesh import MESH_AXES
from moejax.parallel.rules import LOGICAL_AXIS_RULES, logical_to_spec


def abstract_mesh(sizes: Dict[str, int]) -> AbstractMesh:
    return AbstractMesh(tuple(sizes[a] for a in MESH_AXES), MESH_AXES)


def _shards(spec, mesh: AbstractMesh) -> int:
    count = 1
    for entry in spec:
        for axis in (entry if isinstance(entry, tuple) else (entry,)):
            if axis is not None:
                count *= mesh.shape[axis]
    return count


def _nbytes(x) -> int:
    return math.prod(x.shape) * np.dtype(x.dtype).itemsize


def _parameters(abstract_model: nnx.Module, mesh: AbstractMesh, rules):
    """(value, logical axis names, shards) of every parameter placed by the rules."""
    for variable in jax.tree.leaves(nnx.state(abstract_model, nnx.Param),
                                    is_leaf=lambda x: isinstance(x, nnx.Variable)):
        value = variable.get_value()
        names = variable.get_metadata().get("logical_axes") or ()
        yield value, names, _shards(logical_to_spec(names, value.shape, mesh, rules), mesh)


def parameter_memory(abstract_model: nnx.Module, mesh: AbstractMesh,
                     rules=LOGICAL_AXIS_RULES) -> Dict[str, Dict[str, float]]:
    """{kind: {"total": bytes, "per_device": bytes}} for kinds 'experts' (stacked expert
    weights), 'other' (everything else) and 'all'."""
    memory: Dict[str, Dict[str, float]] = defaultdict(lambda: {"total": 0.0, "per_device": 0.0})
    for value, names, shards in _parameters(abstract_model, mesh, rules):
        for kind in ("experts" if "expert" in names else "other", "all"):
            memory[kind]["total"] += _nbytes(value)
            memory[kind]["per_device"] += _nbytes(value) / shards
    return dict(memory)


def optimizer_memory(abstract_optimizer: nnx.Module, abstract_model: nnx.Module,
                     mesh: AbstractMesh, rules=LOGICAL_AXIS_RULES) -> Dict[str, float]:
    """{"total": bytes, "per_device": bytes} of the optimizer state, placed as the trainer
    places it (moejax.parallel.rules.like_parameters: shaped like a parameter -> split like
    it; anything else replicated)."""
    shards_by_shape: Dict[tuple, int] = {}
    for value, _, shards in _parameters(abstract_model, mesh, rules):
        shards_by_shape.setdefault(tuple(value.shape), shards)
    memory = {"total": 0.0, "per_device": 0.0}
    for x in jax.tree.leaves(nnx.state(abstract_optimizer)):
        if hasattr(x, "shape"):
            memory["total"] += _nbytes(x)
            memory["per_device"] += _nbytes(x) / shards_by_shape.get(tuple(x.shape), 1)
    return memory
