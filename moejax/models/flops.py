"""Model FLOPs of a decoder-only training step from its parameter shapes (the numerator of MFU).

PaLM (Chowdhery et al. 2022, Appendix B) counts a decoder-only Transformer's training FLOPs
per token as 6·N + 12·L·H·Q·T: N parameters that multiply each token, forward (2·N) and
backward (4·N); L layers, H heads of dimension Q and sequence length T for the attention
scores and weighted values (causal masking not subtracted, as in PaLM). For a sparse model N
is the *active* count: of each MoE layer's E experts only the fraction a token visits
(k/E for top-k; MoeConfig.active_hidden_dim / (E·F) in general), its router and shared
experts in full. The input embedding is a lookup, not a matmul: it counts only when it is
also the output projection (tied). Norm scales are elementwise and left out.

Model FLOPs are the work the model needs, not what a program executes: capacity slack, the
dispatch's own arithmetic and rematerialisation are not in them (XLA's cost analysis counts
those, and on GPU misses most of the rest: benchmarks/gpu.py).
"""

from __future__ import annotations

import math
from typing import Optional

from flax import nnx

from moejax.models.config import ModelConfig
from moejax.routing.registry import family


def expert_fraction(cfg: ModelConfig) -> Optional[float]:
    """Fraction of a MoE layer's routed expert weights one token passes through (k/E for
    top-k); None for families without a per-token width (Soft MoE)."""
    width = family(cfg.moe).active_width
    if width is None:
        return None
    return width(cfg.moe) / (cfg.moe.num_experts * cfg.moe.hidden_dim)


def active_params(model: nnx.Module, cfg: ModelConfig) -> Optional[float]:
    """N of the formula: parameters that multiply each token (see the module docstring)."""
    fraction = expert_fraction(cfg) if cfg.has_moe else 1.0
    if fraction is None:
        return None
    total = 0.0
    for path, value in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        names = [str(p) for p in path]
        shape = value.get_value().shape
        if names[-1] == "scale" or (names[-1] == "embedding" and not cfg.tie_embeddings):
            continue
        total += math.prod(shape) * (fraction if "experts" in names else 1.0)
    return total


def train_flops_per_token(model: nnx.Module, cfg: ModelConfig, seq_length: int
                          ) -> Optional[float]:
    """6·N + 12·L·H·Q·T (PaLM); decoder-only models only. None where N is undefined."""
    if cfg.arch != "decoder":
        raise ValueError(f"model FLOPs are defined here for decoder-only models; "
                         f"model.arch is {cfg.arch!r}")
    n = active_params(model, cfg)
    if n is None:
        return None
    return 6 * n + 12 * cfg.num_layers * cfg.num_heads * cfg.head_dim * seq_length


__all__ = ["active_params", "expert_fraction", "train_flops_per_token"]
