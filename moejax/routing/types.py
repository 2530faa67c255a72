"""What a routing function returns."""

from __future__ import annotations

from typing import Dict, Optional

import jax
from flax import struct

from moejax.plan import CapacityPlan


@struct.dataclass
class Assignment:
    """Token-choice routing decisions, before any capacity is applied.

    expert_index: [G, S, k] int32 chosen experts, best first.
    gate: [G, S, k] float32 combine weights of the chosen experts.
    valid: [G, S, k] bool; False where the router withdrew a choice (GShard random routing).
    priority: [G, S] float32 order in which tokens take capacity (higher first), or None for
      sequence order.
    """
    expert_index: jax.Array
    gate: jax.Array
    valid: jax.Array
    priority: Optional[jax.Array] = None


@struct.dataclass
class Routing:
    """Everything one routing function decides for a batch of groups.

    probs: [G, S, E] float32 the router's distribution over experts, used by metrics (softmax
      scores; for sigmoid routers the affinities normalised over experts).
    losses: unweighted auxiliary losses by name (see moejax/losses.py).
    assignment: token-choice decisions (None for expert choice).
    plan: the capacity plan (None for dropless dispatch).
    """
    probs: jax.Array
    losses: Dict[str, jax.Array]
    assignment: Optional[Assignment] = None
    plan: Optional[CapacityPlan] = None
