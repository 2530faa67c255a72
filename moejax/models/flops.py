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

Encoder-decoders (T5) apply the same count per stack: encoder parameters multiply each of the
T_e encoder tokens, decoder parameters each of the T_d decoder tokens, except the
cross-attention keys and values, which project the T_e encoder outputs once. Attention adds
12·H·Q per layer and per (query, key) position pair: T_e² per encoder layer, T_d² (self) and
T_d·T_e (cross) per decoder layer. Relative position bias tables are lookups. With query/key
and value widths that differ (multi-head latent attention: Q_k = 192, Q_v = 128 for
DeepSeek-V3) the 12·H·Q is 6·H·(Q_k + Q_v): 2·Q_k for each score, 2·Q_v for each weighted
value, forward and backward.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

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
    per_stack = active_params_by_input(model, cfg)
    return None if per_stack is None else sum(per_stack.values())


def active_params_by_input(model: nnx.Module, cfg: ModelConfig) -> Optional[Dict[str, float]]:
    """{'encoder': N_e, 'decoder': N_d}: active parameters that multiply each encoder token
    (encoder weights, cross-attention keys and values) and each decoder token (the rest);
    decoder-only models have only 'decoder'. None where N is undefined (Soft MoE)."""
    fraction = expert_fraction(cfg) if cfg.has_moe else 1.0
    if fraction is None:
        return None
    totals = {"decoder": 0.0}
    for path, value in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        names = [str(p) for p in path]
        shape = value.get_value().shape
        if (names[-1] in ("scale", "table")
                or (names[-1] == "embedding" and not cfg.tie_embeddings)):
            continue
        count = math.prod(shape) * (fraction if "experts" in names else 1.0)
        reads_encoder = cfg.arch == "encoder_decoder" and (
            names[0] == "encoder" or ("cross_attn" in names and names[-1] in ("k", "v")))
        stack = "encoder" if reads_encoder else "decoder"
        totals[stack] = totals.get(stack, 0.0) + count
    return totals


def train_flops_per_example(model: nnx.Module, cfg: ModelConfig, lengths: Dict[str, int]
                            ) -> Optional[float]:
    """Training FLOPs of one example (row): lengths {'decoder': T} for decoder-only models,
    {'encoder': T_e, 'decoder': T_d} for encoder-decoders. None where N is undefined."""
    per_stack = active_params_by_input(model, cfg)
    if per_stack is None:
        return None
    qk_dim, v_dim = cfg.attention_head_dims
    attention = 6 * cfg.num_heads * (qk_dim + v_dim)               # per layer, per pair
    t_d = lengths["decoder"]
    if cfg.arch != "encoder_decoder":
        return t_d * (6 * per_stack["decoder"] + attention * cfg.num_layers * t_d)
    t_e = lengths["encoder"]
    depths = cfg.stack_depths()
    return (t_e * (6 * per_stack["encoder"] + attention * depths["encoder"] * t_e)
            + t_d * (6 * per_stack["decoder"] + attention * depths["decoder"] * (t_d + t_e)))


def train_flops_per_token(model: nnx.Module, cfg: ModelConfig, seq_length: int
                          ) -> Optional[float]:
    """6·N + 12·L·H·Q·T (PaLM); decoder-only models only. None where N is undefined."""
    if cfg.arch != "decoder":
        raise ValueError(f"model FLOPs per token are defined here for decoder-only models; "
                         f"model.arch is {cfg.arch!r} (see train_flops_per_example)")
    per_example = train_flops_per_example(model, cfg, {"decoder": seq_length})
    return None if per_example is None else per_example / seq_length


__all__ = ["active_params", "active_params_by_input", "expert_fraction",
           "train_flops_per_example", "train_flops_per_token"]
