"""Expert parallelism: the experts of an MoE layer spread over the mesh's `expert` axis.

GShard (Lepikhin et al. 2021) layout: the batch, and so the routing groups, is split over
data × fsdp × expert; every device routes its own groups, then

    expert inputs [G_l, E, C, D] --all_to_all(expert)--> [E_l, |expert|·G_l·C, D]
      --local experts (hidden width split over `model`, psum)--> --all_to_all back--> combine

with E_l = E / |expert| experts per device. When E < |expert| each expert is replicated on
r = |expert| / E devices (its weights are then replicated over the expert axis) and the slots
of an expert are split between its replicas. The communication is written out with shard_map:
one all_to_all out and one back in the forward pass (and their two transposes in the
backward), each moving a device's share of the capacity plan's expert buffers. Dropless expert
parallelism is in moejax/parallel/dropless.py.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import jax
import jax.numpy as jnp
from jax.sharding import AbstractMesh, PartitionSpec as P

from moejax.errors import check
from moejax.experts import expert_ffn
from moejax.parallel.mesh import BATCH_AXES, MESH_AXES, batch_shards

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
    _check_groups(groups.shape[0], mesh)
    return jax.lax.with_sharding_constraint(groups, _batch_spec(mesh, groups.ndim))


def expert_layout(num_experts: int, expert_axis: int) -> Tuple[int, int]:
    """(experts per device E_l, replicas per expert r), with E_l·|expert| = E·r."""
    check(num_experts % expert_axis == 0 or expert_axis % num_experts == 0,
          f"moe.num_experts={num_experts} does not fit mesh.expert={expert_axis}: one must "
          "divide the other")
    return max(1, num_experts // expert_axis), max(1, expert_axis // num_experts)


def _batch_spec(mesh, ndim: int) -> P:
    return P(BATCH_AXES, *([None] * (ndim - 1)))


def _weight_specs(weights: Dict[str, jax.Array], replicated: bool) -> Dict[str, P]:
    """Expert weights inside the shard_map: E over `expert` (unless replicated), F over
    `model`; their `embed` axis is gathered whole (FSDP gathers it here)."""
    e = None if replicated else EXPERT
    return {name: P(e, MODEL, None) if name == "wo" else P(e, None, MODEL) for name in weights}


def _local_experts(w: Dict[str, jax.Array], replicas: int) -> Dict[str, jax.Array]:
    """With replicated experts, the one expert this device serves: index axis_index // r."""
    if replicas == 1:
        return w
    index = jax.lax.axis_index(EXPERT) // replicas
    return {k: jax.lax.dynamic_slice_in_dim(v, index, 1, axis=0) for k, v in w.items()}


def _check_groups(num_groups: int, mesh) -> None:
    shards = batch_shards(mesh)
    check(num_groups % shards == 0,
          f"the MoE layer has {num_groups} groups, not divisible by the {shards} batch shards "
          f"of the mesh (data × fsdp × expert); change data.batch_size or moe.group_size")


def expert_parallel_ffn(expert_in: jax.Array, weights: Dict[str, jax.Array], *,
                        activation: str, dtype, mesh, dropout_rate: float = 0.0,
                        key: Optional[jax.Array] = None) -> jax.Array:
    """Expert inputs [G, E, C, D] (G split over the batch axes) -> expert outputs [G, E, C, D].

    weights: stacked expert weights wi [E, D, F], (wi_gate), wo [E, F, D].
    """
    g, e, c, d = expert_in.shape
    x_size = mesh.shape[EXPERT]
    e_local, r = expert_layout(e, x_size)
    _check_groups(g, mesh)

    def body(x, w, key):                                    # x [G_l, E, C, D]
        g_l = x.shape[0]
        n = g_l * c
        x = jnp.swapaxes(x, 0, 1).reshape(e, n, d)          # [E, N, D]
        pad = (-n) % r
        x = jnp.pad(x, ((0, 0), (0, pad), (0, 0))).reshape(e * r, (n + pad) // r, d)
        if x_size > 1:                                      # [E·r, N/r, D] -> [E_l, |x|·N/r, D]
            x = jax.lax.all_to_all(x, EXPERT, 0, 1, tiled=True)
        if key is not None:
            key = jax.random.fold_in(key, jax.lax.axis_index(MESH_AXES))
        y = expert_ffn(_local_experts(w, r), x, activation, dtype, dropout_rate, key)
        y = jax.lax.psum(y, MODEL)                          # hidden width split over `model`
        if x_size > 1:                                      # back: [E·r, N/r, D]
            y = jax.lax.all_to_all(y, EXPERT, 1, 0, tiled=True)
        y = y.reshape(e, n + pad, d)[:, :n]
        return jnp.swapaxes(y.reshape(e, g_l, c, d), 0, 1)  # [G_l, E, C, D]

    return jax.shard_map(
        body, mesh=mesh,
        in_specs=(_batch_spec(mesh, 4), _weight_specs(weights, r > 1), P()),
        out_specs=_batch_spec(mesh, 4))(expert_in, weights, key)
