"""One table maps logical axis names to mesh axes; every parameter is placed from it.

Parameters name their axes (`nnx.Param(..., logical_axes=("expert", "embed", "mlp"))`); axes
that nnx.vmap adds in front (the scanned `layers` axis) are not split. Changing parallelism is
a change of mesh sizes, never of model code.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence, Tuple

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from moejax.parallel.mesh import BATCH_AXES

# logical axis -> mesh axes it is split over (in order; a mesh axis is used once per array)
LOGICAL_AXIS_RULES: Dict[Optional[str], Tuple[str, ...]] = {
    "batch": BATCH_AXES,         # activations: examples, MoE groups, tokens
    "expert": ("expert",),       # stacked expert weights, router columns
    "embed": ("fsdp",),          # model width of parameters (FSDP); activations keep it whole
    "mlp": ("model",),           # FFN and expert hidden width
    "heads": ("model",),
    "vocab": ("model",),
    "expert_scores": (),         # router columns: tiny, every device routes its own tokens
    "slots": (),                 # Soft MoE slot parameters
    "kv": (),
    "latent": ("fsdp",),         # MLA's low-rank q and kv latents (DeepSeek): FSDP splits them
    "layers": (),
    None: (),
}


def logical_to_spec(logical_axes: Sequence[Optional[str]], shape: Sequence[int], mesh: Mesh,
                    rules: Dict[Optional[str], Tuple[str, ...]] = LOGICAL_AXIS_RULES) -> P:
    """PartitionSpec of an array of `shape` whose trailing axes are named `logical_axes`.

    Leading axes beyond the names (nnx.vmap's layer axis) stay whole. A mesh axis that does not
    divide its dimension, has size 1 (or is absent) or is already used is skipped, so every
    spec is valid for every mesh (small vocabularies, a single shared expert).
    """
    names = (None,) * (len(shape) - len(logical_axes)) + tuple(logical_axes)
    used, spec = set(), []
    for dim, name in zip(shape, names):
        axes = []
        for axis in rules.get(name, ()):
            size = mesh.shape.get(axis, 1)
            if axis in used or size == 1:
                continue
            if dim % (math.prod(mesh.shape[a] for a in axes) * size) == 0:
                axes.append(axis)
        used.update(axes)
        spec.append(tuple(axes) if len(axes) > 1 else (axes[0] if axes else None))
    return P(*spec)


def _variable_sharding(variable, mesh: Mesh, rules) -> NamedSharding:
    value = variable.get_value() if hasattr(variable, "get_value") else variable[...]
    shape = getattr(value, "shape", ())
    names = variable.get_metadata().get("logical_axes") or ()
    return NamedSharding(mesh, logical_to_spec(names, shape, mesh, rules))


def state_shardings(state, mesh: Mesh, rules=LOGICAL_AXIS_RULES):
    """The NamedSharding of every variable of an nnx State (abstract or concrete)."""
    return jax.tree.map(lambda v: _variable_sharding(v, mesh, rules), state,
                        is_leaf=lambda x: isinstance(x, nnx.Variable))


def shard_model(make_model: Callable[[], nnx.Module], mesh: Mesh, rules=LOGICAL_AXIS_RULES
                ) -> nnx.Module:
    """Builds the model with every variable created directly in its sharded place.

    make_model() is traced once abstractly (no memory) for the shapes and logical axes, then
    run under jit with those output shardings, so no device ever holds the whole model.
    """
    abstract = nnx.eval_shape(make_model)
    graphdef, abstract_state = nnx.split(abstract)
    shardings = state_shardings(abstract_state, mesh, rules)

    def init():
        return nnx.split(make_model())[1]

    state = jax.jit(init, out_shardings=shardings)()
    return nnx.merge(graphdef, state)


def like_parameters(abstract_state, model: nnx.Module, mesh: Mesh, rules=LOGICAL_AXIS_RULES):
    """Shardings for optimizer state: an array shaped like a parameter is placed like it (Adam
    moments, unfactored second moments); anything else (factored statistics, counts, scalars)
    is small and replicated."""
    by_shape = {}
    params = jax.tree.leaves(nnx.state(model, nnx.Param),
                             is_leaf=lambda x: isinstance(x, nnx.Variable))
    for variable in params:
        sharding = _variable_sharding(variable, mesh, rules)
        by_shape.setdefault(tuple(variable.get_value().shape), sharding)
    replicated = NamedSharding(mesh, P())

    def one(variable):
        shape = tuple(getattr(variable.get_value(), "shape", ()))
        return by_shape.get(shape, replicated)
    return jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def shard_optimizer(make_optimizer: Callable[[nnx.Module], nnx.Module], model: nnx.Module,
                    mesh: Mesh, rules=LOGICAL_AXIS_RULES) -> nnx.Module:
    """make_optimizer(model) with its state created in place (see like_parameters)."""
    abstract = nnx.eval_shape(make_optimizer, model)
    graphdef, abstract_state = nnx.split(abstract)
    shardings = like_parameters(abstract_state, model, mesh, rules)
    model_def, model_state = nnx.split(model)

    def init(model_state):
        return nnx.split(make_optimizer(nnx.merge(model_def, model_state)))[1]

    state = jax.jit(init, out_shardings=shardings)(model_state)
    return nnx.merge(graphdef, state)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Arrays whose leading axis is the batch: split over data × fsdp × expert."""
    return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))
