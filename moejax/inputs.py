"""What every MoE layer checks of its arguments, and how it reports statistics it cannot trust.

Shared by MoeLayer and SoftMoeLayer: the config and model width at construction, the input's
shape and dtype at call time (one ConfigError line each), the [B, L, D] -> [G, S, D] grouping,
and NaN statistics for inputs that are not finite.
"""

from __future__ import annotations

from typing import Dict, Optional

import jax
import jax.numpy as jnp

from moejax.config import MoeConfig
from moejax.errors import ConfigError


def check_layer_args(cfg, model_dim) -> None:
    """One ConfigError line unless cfg is a MoeConfig and model_dim a positive int."""
    if not isinstance(cfg, MoeConfig):
        raise ConfigError(f"cfg must be a moejax.MoeConfig, not {type(cfg).__name__}; build "
                          f"one with MoeConfig(...) or MoeConfig.from_dict(...)")
    if isinstance(model_dim, bool) or not isinstance(model_dim, int) or model_dim < 1:
        raise ConfigError(f"model_dim={model_dim!r} must be a positive int (the width D of "
                          f"the layer's input [batch, length, D])")


def to_groups(x: jax.Array, cfg: MoeConfig, model_dim: int) -> jax.Array:
    """[B, L, D] -> [G, S, D] with S = cfg.group_size (or L); one ConfigError line if it can't."""
    if x.ndim != 3 or x.shape[-1] != model_dim:
        raise ConfigError(f"MoE layer input has shape {tuple(x.shape)}; expected "
                          f"[batch, length, {model_dim}]")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ConfigError(f"MoE layer input has dtype {x.dtype}; expected a floating-point "
                          f"dtype (float32, bfloat16)")
    b, l, d = x.shape
    if b * l == 0:
        raise ConfigError(f"MoE layer input has shape {tuple(x.shape)}: no tokens to route")
    s = cfg.group_size or l
    if (b * l) % s:
        raise ConfigError(f"moe.group_size={s} must divide batch·length={b}·{l}={b * l} tokens")
    return x.reshape(b * l // s, s, d)


def group_mask(mask: Optional[jax.Array], x: jax.Array, groups: jax.Array
               ) -> Optional[jax.Array]:
    """The padding mask [B, L] (nonzero for a real token; the models pass segment ids) of the
    layer input x [B, L, D] grouped like to_groups groups x: [G, S] bool; None stays None."""
    if mask is None:
        return None
    if tuple(mask.shape) != tuple(x.shape[:2]):
        raise ConfigError(f"MoE layer mask has shape {tuple(mask.shape)}; expected the input's "
                          f"[batch, length] = {tuple(x.shape[:2])}")
    return (mask != 0).reshape(groups.shape[:2])


def is_training(layer, deterministic: Optional[bool]) -> bool:
    """`deterministic` if given, else the layer's attribute (set by .eval() / .train())."""
    return not (layer.deterministic if deterministic is None else deterministic)


def honest_stats(stats: Dict[str, jax.Array], x: jax.Array) -> Dict[str, jax.Array]:
    """Every statistic NaN if any input value is NaN or Inf: routing decisions on such tokens
    (argmax of NaN logits) would otherwise give plausible-looking loads and drop rates."""
    finite = jnp.all(jnp.isfinite(x))
    return {k: jnp.where(finite, v, jnp.nan) if jnp.issubdtype(v.dtype, jnp.floating) else v
            for k, v in stats.items()}
