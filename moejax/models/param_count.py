"""Parameters by part of the model, total and active per token, from shapes alone.

Counts follow the model cards' convention (Mixtral's 46.7B / 12.9B, DeepSeek-V3's 671B /
37B): every parameter counts, embeddings and output head included; a token's *active*
parameters are all of them except the routed experts it does not visit, i.e. each MoE
layer's routed expert weights count the fraction k/E (MoeConfig.active_hidden_dim / (E·F) in
general; moejax.models.flops.expert_fraction), shared experts and routers in full. This
differs from the N of model FLOPs (moejax.models.flops), which leaves out lookups (an untied
input embedding) and norms.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

from flax import nnx

from moejax.models.config import ModelConfig
from moejax.models.flops import expert_fraction

PARTS = ("embeddings", "attention", "dense FFN", "routed experts", "shared experts",
         "routers", "norms")


def part_of(path: Sequence[str]) -> str:
    """The part a parameter belongs to, from its path in the model's state."""
    names = set(path)
    leaf = path[-1]
    if leaf == "embedding" or path[0] == "head":
        return "embeddings"
    if "shared_experts" in names or leaf == "shared_gate":
        return "shared experts"
    if "experts" in names:
        return "routed experts"
    if "router" in names or leaf == "phi":          # Soft MoE's slot parameters route too
        return "routers"
    if leaf == "scale":
        return "norms"
    if names & {"attn", "cross_attn"} or leaf == "table":   # T5 relative position biases
        return "attention"
    return "dense FFN"


def count_by_part(abstract_model: nnx.Module, cfg: ModelConfig
                  ) -> Dict[str, Tuple[int, Optional[float]]]:
    """{part: (total, active per token)} for every part in PARTS, plus 'all'; active is None
    for models whose tokens have no per-token expert width (Soft MoE)."""
    fraction = expert_fraction(cfg) if cfg.has_moe else 1.0
    totals = {part: 0 for part in PARTS}
    for path, value in nnx.to_flat_state(nnx.state(abstract_model, nnx.Param)):
        totals[part_of([str(p) for p in path])] += math.prod(value.get_value().shape)
    counts = {}
    for part, total in totals.items():
        share = fraction if part == "routed experts" else 1.0
        counts[part] = (total, None if share is None else total * share)
    active = [a for _, a in counts.values()]
    counts["all"] = (sum(totals.values()),
                     None if any(a is None for a in active) else sum(active))
    return counts


__all__ = ["PARTS", "count_by_part", "part_of"]
