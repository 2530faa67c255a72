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
parallelism is in moejax/parallel/dropless.py; what both share, in expert_shards.py.
"""

from __future__ import annotations

from typing import Dict, Optional

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from moejax.experts import expert_ffn
from moejax.parallel.expert_shards import (EXPERT, MODEL, batch_spec, check_groups, expert_layout,
                                           local_experts, weight_specs)
from moejax.parallel.mesh import MESH_AXES

def expert_parallel_ffn(expert_in: jax.Array, weights: Dict[str, jax.Array], *,
                        activation: str, dtype, mesh, dropout_rate: float = 0.0,
                        key: Optional[jax.Array] = None) -> jax.Array:
    """Expert inputs [G, E, C, D] (G split over the batch axes) -> expert outputs [G, E, C, D].

    weights: stacked expert weights wi [E, D, F], (wi_gate), wo [E, F, D].
    """
    g, e, c, d = expert_in.shape
    x_size = mesh.shape[EXPERT]
    e_local, r = expert_layout(e, x_size)
    check_groups(g, mesh)

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
        y = expert_ffn(local_experts(w, r), x, activation, dtype, dropout_rate, key)
        y = jax.lax.psum(y, MODEL)                          # hidden width split over `model`
        if x_size > 1:                                      # back: [E·r, N/r, D]
            y = jax.lax.all_to_all(y, EXPERT, 1, 0, tiled=True)
        y = y.reshape(e, n + pad, d)[:, :n]
        return jnp.swapaxes(y.reshape(e, g_l, c, d), 0, 1)  # [G_l, E, C, D]

    return jax.shard_map(
        body, mesh=mesh,
        in_specs=(batch_spec(mesh, 4), weight_specs(weights, r > 1), P()),
        out_specs=batch_spec(mesh, 4))(expert_in, weights, key)
