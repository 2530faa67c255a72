"""Dropless expert parallelism: every assignment goes to its expert's device, none is dropped.

DeepSeek-V3 / MegaBlocks layout over the `expert` mesh axis. Inside shard_map each device:
  1. sorts its assignments [T_l·k] by (destination device, local expert);
  2. exchanges the count matrix [|expert|, E_l] (a tiny all_to_all), so every device knows how
     many rows it receives from each source for each of its experts;
  3. moves the rows to the experts' devices into a [|expert|, cap, D] buffer (one block per
     source, cap = T_l·min(k, E_l) rows, the most one source can send);
  4. runs its experts as a grouped matmul (moejax.experts.grouped_ffn) and sends the rows back;
  5. combines Σ_k gate · expert output per token.
Rows move either with jax.lax.ragged_all_to_all (exact sizes on the wire; TPU and GPU) or with
a plain all_to_all of the whole padded buffer (any backend: XLA:CPU has no ragged_all_to_all),
which moves |expert|·min(k, E_l)/k times the bytes of the exact exchange. Either way the
receive buffer is the worst-case |expert|·cap rows: memory, and the elementwise work of the
FFN; the grouped matmul itself visits only the rows received (moejax.grouped on CPU; ragged_dot
on TPU/GPU takes the group sizes).
"""

from __future__ import annotations

from typing import Dict, Optional

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from moejax.experts import grouped_ffn, resolve_grouped_matmul
from moejax.parallel.expert_shards import (EXPERT, MODEL, batch_spec, check_groups, expert_layout,
                                           local_experts, weight_specs)
from moejax.parallel.mesh import MESH_AXES


def resolve_exchange(impl: str) -> str:
    """'auto' -> 'ragged' on TPU/GPU, 'padded' on CPU (XLA:CPU lacks ragged_all_to_all)."""
    if impl != "auto":
        return impl
    return "padded" if jax.default_backend() == "cpu" else "ragged"


def expert_parallel_dropless(x: jax.Array, expert_index: jax.Array, gate: jax.Array,
                             valid: jax.Array, weights: Dict[str, jax.Array], *,
                             activation: str, dtype, mesh, impl: str = "auto",
                             exchange: str = "auto", block_size: int = 128,
                             dropout_rate: float = 0.0,
                             key: Optional[jax.Array] = None) -> jax.Array:
    """Tokens x [T, D] (T split over the batch axes) with token-choice assignments
    expert_index / gate / valid [T, k] -> Σ_k gate · expert(x) [T, D] float32.

    impl: the grouped matmul (see grouped_ffn); exchange: 'ragged', 'padded' or 'auto'.
    Replicated experts (E < |expert|): token t's rows go to replica t mod r.
    """
    t, d = x.shape
    e = weights["wi"].shape[0]
    x_size = mesh.shape[EXPERT]
    e_local, r = expert_layout(e, x_size)
    check_groups(t, mesh)
    ragged = resolve_exchange(exchange) == "ragged"

    def body(x, expert_index, gate, valid, w, key):
        t_l, k = expert_index.shape
        n, cap, slots = t_l * k, t_l * min(k, e_local), x_size * e_local
        tok = jnp.arange(n, dtype=jnp.int32) // k
        eid = expert_index.reshape(n)
        if r == 1:
            dest, local = eid // e_local, eid % e_local
        else:
            dest, local = eid * r + tok % r, jnp.zeros_like(eid)
        # 1. sort by (destination, local expert); withdrawn choices last
        sort_key = jnp.where(valid.reshape(n), dest * e_local + local, slots)       # [n]
        order = jnp.argsort(sort_key, stable=True)                                 # [n]
        counts = jnp.bincount(sort_key, length=slots + 1)[:slots].reshape(
            x_size, e_local).astype(jnp.int32)                                     # [|x|, E_l]
        per_dest = counts.sum(axis=1)                                              # [|x|]
        dest_start = jnp.cumsum(per_dest) - per_dest                               # [|x|]
        x_sorted = x[tok[order]]                                                   # [n, D]
        # 2. how many rows arrive from each source for each local expert
        recv_counts = _all_to_all(counts, x_size)                                  # [|x|, E_l]
        recv_sizes = recv_counts.sum(axis=1)                                       # [|x|]
        # 3. rows to the experts' devices: [|x|·cap, D], source i's rows at i·cap
        if ragged:
            me = jax.lax.axis_index(EXPERT)
            recv = jax.lax.ragged_all_to_all(
                x_sorted, jnp.zeros((x_size * cap, d), x.dtype), dest_start, per_dest,
                jnp.full((x_size,), me * cap, jnp.int32), recv_sizes, axis_name=EXPERT)
        else:
            sorted_key = sort_key[order]
            sorted_dest = jnp.minimum(sorted_key // e_local, x_size - 1)
            rank = jnp.arange(n, dtype=jnp.int32) - dest_start[sorted_dest]
            slot = jnp.where(sorted_key < slots, sorted_dest * cap + rank, x_size * cap)
            send = jnp.zeros((x_size * cap, d), x.dtype).at[slot].set(x_sorted, mode="drop")
            recv = _all_to_all(send.reshape(x_size, cap, d), x_size).reshape(-1, d)
        # 4. group by local expert (rows past a source's count: E_l, outside every group)
        bounds = jnp.cumsum(recv_counts, axis=1)                                   # [|x|, E_l]
        row = jnp.arange(cap, dtype=jnp.int32)
        row_local = jax.vmap(lambda b: jnp.searchsorted(b, row, side="right"))(bounds)
        flat_local = row_local.reshape(-1)                                         # [|x|·cap]
        by_expert = jnp.argsort(flat_local, stable=True)
        sizes = jnp.bincount(flat_local, length=e_local + 1)[:e_local].astype(jnp.int32)
        if key is not None:
            key = jax.random.fold_in(key, jax.lax.axis_index(MESH_AXES))
        y_sorted = grouped_ffn(local_experts(w, r), recv[by_expert], sizes, activation, dtype,
                               impl=impl, block_size=block_size, dropout_rate=dropout_rate,
                               key=key)
        y = jnp.zeros_like(y_sorted).at[by_expert].set(y_sorted)
        y = jax.lax.psum(y, MODEL)                                   # hidden split over `model`
        # back to the sources, in their sorted order
        if ragged:
            src_start = _all_to_all(dest_start, x_size)     # where my rows sit at each source
            rows = jax.lax.ragged_all_to_all(
                y, jnp.zeros((n, d), y.dtype), jnp.arange(x_size, dtype=jnp.int32) * cap,
                recv_sizes, src_start, per_dest, axis_name=EXPERT)                 # [n, D]
        else:
            back = _all_to_all(y.reshape(x_size, cap, d), x_size).reshape(-1, d)
            rows = jnp.take(back, slot, axis=0, mode="fill", fill_value=0)         # [n, D]
        # 5. combine
        gate_sorted = jnp.where(valid, gate, 0.0).reshape(n)[order]
        weighted = rows.astype(jnp.float32) * gate_sorted[:, None]
        return jnp.zeros((t_l, d), jnp.float32).at[tok[order]].add(weighted)

    token_spec = batch_spec(mesh, 2)
    # The megablox kernel's pallas_call declares no mesh-axis variance for its output, which
    # shard_map's variance check refuses; without the check, shard_map's transpose sums the
    # cotangents of inputs not split over an axis over that axis (correct, as with it).
    return jax.shard_map(
        body, mesh=mesh,
        in_specs=(token_spec, token_spec, token_spec, token_spec,
                  weight_specs(weights, r > 1), P()),
        out_specs=token_spec, check_vma=resolve_grouped_matmul(impl) != "megablox",
    )(x, expert_index, gate, valid, weights, key)


def _all_to_all(x: jax.Array, x_size: int) -> jax.Array:
    """Block i of x's leading axis to device i of the expert axis (identity for one device)."""
    return jax.lax.all_to_all(x, EXPERT, 0, 0, tiled=True) if x_size > 1 else x
