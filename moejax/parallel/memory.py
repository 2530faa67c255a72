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


def parameter_memory(abstract_model: nnx.Module, mesh: AbstractMesh,
                     rules=LOGICAL_AXIS_RULES) -> Dict[str, Dict[str, float]]:
    """{kind: {"total": bytes, "per_device": bytes}} for kinds 'experts' (stacked expert
    weights), 'other' (everything else) and 'all'."""
    memory: Dict[str, Dict[str, float]] = defaultdict(lambda: {"total": 0.0, "per_device": 0.0})
    params = jax.tree.leaves(nnx.state(abstract_model, nnx.Param),
                             is_leaf=lambda x: isinstance(x, nnx.Variable))
    for variable in params:
        value = variable.get_value()
        names = variable.get_metadata().get("logical_axes") or ()
        nbytes = math.prod(value.shape) * np.dtype(value.dtype).itemsize
        spec = logical_to_spec(names, value.shape, mesh, rules)
        kind = "experts" if "expert" in names else "other"
        for k in (kind, "all"):
            memory[k]["total"] += nbytes
            memory[k]["per_device"] += nbytes / _shards(spec, mesh)
    return dict(memory)


def optimizer_memory(abstract_optimizer: nnx.Module, abstract_model: nnx.Module,
                     mesh: AbstractMesh, rules=LOGICAL_AXIS_RULES) -> Dict[str, float]:
    """{"total": bytes, "per_device": bytes} of the optimizer state, placed as the trainer
    places it (moejax.parallel.rules.like_parameters: shaped like a parameter -> split like
    it; anything else replicated)."""
    shards_by_shape: Dict[tuple, int] = {}
    for variable in jax.tree.leaves(nnx.state(abstract_model, nnx.Param),
                                    is_leaf=lambda x: isinstance(x, nnx.Variable)):
        value = variable.get_value()
        spec = logical_to_spec(variable.get_metadata().get("logical_axes") or (), value.shape,
                               mesh, rules)
        shards_by_shape.setdefault(tuple(value.shape), _shards(spec, mesh))
    memory = {"total": 0.0, "per_device": 0.0}
    for x in jax.tree.leaves(nnx.state(abstract_optimizer)):
        if not hasattr(x, "shape"):
            continue
        nbytes = math.prod(x.shape) * np.dtype(x.dtype).itemsize
        memory["total"] += nbytes
        memory["per_device"] += nbytes / shards_by_shape.get(tuple(x.shape), 1)
    return memory
