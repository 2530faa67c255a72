"""What both expert-parallel paths share (moejax/parallel/expert_parallel.py, the capacity
exchange; moejax/parallel/dropless.py, the dropless one): the mesh they run under, how the
routing groups are split over the batch axes, and how the stacked expert weights [E, D, F]
are laid out over the `expert` and `model` axes (E_l experts per device, or r replicas of
each expert when E < |expert|).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import jax
from jax.sharding import AbstractMesh, PartitionSpec as P

from moejax.errors import check
from moejax.parallel.mesh import BATCH_AXES, batch_shards

EXPERT, MODEL = "expert", "model"


def active_mesh() -> Optional[AbstractMesh]:
    """The mesh set with jax.set_mesh if it is a moejax mesh with more than one device."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not set(BATCH_AXES + (MODEL,)) <= set(mesh.axis_names):
        return None
    return mesh if mesh.size > 1 else None


def constrain_groups(groups: jax.Array) -> jax.Array:
    """Under a moejax mesh, splits the groups [G, S, D] over the batch axes, so that routing,
    the capacity plan, dispatch and combine run on each device's own groups."""
    mesh = active_mesh()
    if mesh is None:
        return groups
    check_groups(groups.shape[0], mesh)
    return jax.lax.with_sharding_constraint(groups, batch_spec(mesh, groups.ndim))


def expert_layout(num_experts: int, expert_axis: int) -> Tuple[int, int]:
    """(experts per device E_l, replicas per expert r), with E_l·|expert| = E·r."""
    check(num_experts % expert_axis == 0 or expert_axis % num_experts == 0,
          f"moe.num_experts={num_experts} does not fit mesh.expert={expert_axis}: one must "
          "divide the other")
    return max(1, num_experts // expert_axis), max(1, expert_axis // num_experts)


def batch_spec(mesh, ndim: int) -> P:
    return P(BATCH_AXES, *([None] * (ndim - 1)))


def weight_specs(weights: Dict[str, jax.Array], replicated: bool) -> Dict[str, P]:
    """Expert weights inside the shard_map: E over `expert` (unless replicated), F over
    `model`; their `embed` axis is gathered whole (FSDP gathers it here)."""
    e = None if replicated else EXPERT
    return {name: P(e, MODEL, None) if name == "wo" else P(e, None, MODEL) for name in weights}


def local_experts(w: Dict[str, jax.Array], replicas: int) -> Dict[str, jax.Array]:
    """With replicated experts, the one expert this device serves: index axis_index // r."""
    if replicas == 1:
        return w
    index = jax.lax.axis_index(EXPERT) // replicas
    return {k: jax.lax.dynamic_slice_in_dim(v, index, 1, axis=0) for k, v in w.items()}


def check_groups(num_groups: int, mesh) -> None:
    shards = batch_shards(mesh)
    check(num_groups % shards == 0,
          f"the MoE layer has {num_groups} groups, not divisible by the {shards} batch shards "
          f"of the mesh (data × fsdp × expert); change data.batch_size or moe.group_size")
