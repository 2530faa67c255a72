"""top_k along the last axis, without jax.lax.top_k.

jax.lax.top_k lowers to a 2-D TopK that flattens the leading axes, which makes the SPMD
partitioner gather router logits split over the batch (groups) axis. Reductions and sorts along
the last axis partition along every other axis, so routing stays on each device's own groups:
for small k (token-choice routers: k experts of E) k rounds of max + first index, which costs
O(k·E) per token instead of a sort's O(E log E); for large k (expert choice takes its top C of
S tokens) a stable descending sort. Either way ties go to the lower index, as with
jax.lax.top_k, -inf entries are returned like any other value, and NaN ranks below -inf
(a router that produced NaN has diverged; its indices still differ).
"""

from __future__ import annotations

from typing import Tuple

import jax
import jax.numpy as jnp

SORT_ABOVE_K = 4           # k rounds of max up to this k; a sort beyond


def top_k(x: jax.Array, k: int) -> Tuple[jax.Array, jax.Array]:
    """x [..., N] -> (values [..., k], indices [..., k] int32), largest first."""
    if k > SORT_ABOVE_K:
        index = jnp.argsort(-x, axis=-1, stable=True)[..., :k].astype(jnp.int32)
    else:
        score = jax.lax.stop_gradient(x)
        index = _rounds_of_max(jnp.where(jnp.isnan(score), -jnp.inf, score), k)
    return jnp.take_along_axis(x, index, axis=-1), index


def _rounds_of_max(x: jax.Array, k: int) -> jax.Array:
    """Indices of the k largest entries: each round takes the lowest index among the largest
    entries not yet taken (so -inf entries tie correctly with each other, never with taken
    ones)."""
    positions = jnp.arange(x.shape[-1], dtype=jnp.int32)
    taken = jnp.zeros(x.shape, bool)
    chosen = []
    for _ in range(k):
        best = jnp.max(jnp.where(taken, -jnp.inf, x), axis=-1, keepdims=True)      # [..., 1]
        candidate = ~taken & (x == best)
        index = jnp.argmax(candidate, axis=-1).astype(jnp.int32)                   # [...]
        taken = taken | (positions == index[..., None])
        chosen.append(index)
    return jnp.stack(chosen, axis=-1)
