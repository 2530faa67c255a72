"""make_moe_layer: the layer class a config's router family needs."""

from __future__ import annotations

from flax import nnx

from moejax.config import MoeConfig
from moejax.inputs import check_layer_args
from moejax.layer import MoeLayer
from moejax.routing.registry import family
from moejax.soft_moe import SoftMoeLayer


def make_moe_layer(cfg: MoeConfig, model_dim: int, *, rngs: nnx.Rngs):
    """SoftMoeLayer for families without a discrete choice (Soft MoE), MoeLayer for the rest."""
    check_layer_args(cfg, model_dim)
    layer_cls = SoftMoeLayer if family(cfg).choice == "soft" else MoeLayer
    return layer_cls(cfg, model_dim, rngs=rngs)
