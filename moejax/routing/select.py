"""top_k along the last axis, written as a stable sort.

jax.lax.top_k lowers to a 2-D TopK that flattens the leading axes, which makes the SPMD
partitioner gather router logits split over the batch (groups) axis. A stable descending sort
partitions along every other axis, so routing stays on each device's own groups. Ties go to
the lower index, as with jax.lax.top_k.
"""

from __future__ import annotations

from typing import Tuple

import jax
import jax.numpy as jnp


def top_k(x: jax.Array, k: int) -> Tuple[jax.Array, jax.Array]:
    """x [..., N] -> (values [..., k], indices [..., k] int32), largest first."""
    index = jnp.argsort(-x, axis=-1, stable=True)[..., :k].astype(jnp.int32)
    return jnp.take_along_axis(x, index, axis=-1), index
