"""moejax: sparse Mixture-of-Experts in JAX/Flax NNX.

The flow of one MoE layer: router -> routing (moejax.routing, one module per family, a registry
of them) -> capacity plan (moejax.plan) -> dispatch (moejax.dispatch) -> experts
(moejax.experts) -> combine. See MoeLayer.
"""

from moejax.platforms import skip_absent_tpu

skip_absent_tpu()       # libtpu installed for AOT compiles, no TPU here: start on the CPU

from moejax.config import MoeConfig
from moejax.errors import ConfigError
from moejax.layer import MoeLayer
from moejax.layers import make_moe_layer
from moejax.soft_moe import SoftMoeLayer

__version__ = "0.1.0"

__all__ = ["MoeConfig", "ConfigError", "MoeLayer", "SoftMoeLayer", "make_moe_layer"]
