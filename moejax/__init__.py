"""moejax: sparse Mixture-of-Experts in JAX/Flax NNX.

The flow of one MoE layer: router -> routing (moejax.routing) -> capacity plan (moejax.plan)
-> dispatch (moejax.dispatch) -> experts (moejax.experts) -> combine. See MoeLayer.
"""

from flax import nnx

from moejax.config import MoeConfig
from moejax.errors import ConfigError
from moejax.inputs import check_layer_args
from moejax.layer import MoeLayer
from moejax.soft_moe import SoftMoeLayer

__version__ = "0.1.0"


def make_moe_layer(cfg: MoeConfig, model_dim: int, *, rngs: nnx.Rngs):
    """The layer for cfg.router: SoftMoeLayer for 'soft_moe', MoeLayer for every other router."""
    check_layer_args(cfg, model_dim)
    layer_cls = SoftMoeLayer if cfg.router == "soft_moe" else MoeLayer
    return layer_cls(cfg, model_dim, rngs=rngs)


__all__ = ["MoeConfig", "ConfigError", "MoeLayer", "SoftMoeLayer", "make_moe_layer"]
