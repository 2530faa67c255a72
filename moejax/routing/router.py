"""The router: a linear map from token representations to expert logits, float32 by default."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import jax
import jax.numpy as jnp
from flax import nnx

from moejax.config import MoeConfig
from moejax.routing.registry import family


class SelectionBias(nnx.Variable):
    """DeepSeek-V3 expert-selection bias: state updated by a rule, not a trainable parameter."""


class ExpertLoad(nnx.Variable):
    """Assignments per expert in the last training forward pass (for the bias update)."""


class Router(nnx.Module):
    """logits = x·W_g [G, S, E] in moe.router_dtype: float32 by default (Switch "selective
    precision", whatever the model's dtype); bfloat16 reproduces Switch Table 2's bfloat16
    router, whose softmax and routing then also run in bfloat16.

    Switch jitter multiplies the router's input (only) by U(1-ε, 1+ε) in training. A family's
    router_weights add weight matrices under their own names (e.g. w_noise, zero-initialised,
    Shazeer et al. 2017), whose logits x·W the router returns by name; a family with
    selection_bias adds DeepSeek-V3's bias and the load it is updated from.
    """

    def __init__(self, cfg: MoeConfig, model_dim: int, *, rngs: nnx.Rngs):
        e = cfg.num_experts
        self.jitter_eps = cfg.jitter_eps
        self.dtype = jnp.dtype(cfg.router_dtype)
        init = jax.nn.initializers.normal(cfg.router_init_std)
        self.w = nnx.Param(init(rngs.params(), (model_dim, e), jnp.float32),
                           logical_axes=("embed", "expert_scores"))
        fam = family(cfg)
        self.extra_names = tuple(weight.name for weight in fam.router_weights)
        for weight in fam.router_weights:
            shape = (model_dim, weight.columns(cfg))
            value = (jnp.zeros(shape, jnp.float32) if weight.init == "zeros" else
                     init(rngs.params(), shape, jnp.float32))
            setattr(self, weight.name, nnx.Param(value, logical_axes=("embed", "expert_scores")))
        if fam.selection_bias:
            self.selection_bias = SelectionBias(jnp.zeros((e,), jnp.float32),
                                                logical_axes=("expert_scores",))
            self.expert_load = ExpertLoad(jnp.zeros((e,), jnp.float32),
                                          logical_axes=("expert_scores",))

    def __call__(self, x: jax.Array, jitter_key: Optional[jax.Array] = None
                 ) -> Tuple[jax.Array, Dict[str, jax.Array]]:
        """x [G, S, D] -> (logits [G, S, E], {name: x·W [G, S, columns]} for the family's
        router_weights), in the router dtype."""
        x = x.astype(self.dtype)
        if jitter_key is not None and self.jitter_eps > 0.0:
            x = x * jax.random.uniform(jitter_key, x.shape, self.dtype,
                                       1.0 - self.jitter_eps, 1.0 + self.jitter_eps)
        logits = jnp.einsum("gsd,de->gse", x, self.w[...].astype(self.dtype))
        extra = {name: jnp.einsum("gsd,de->gse", x, getattr(self, name)[...].astype(self.dtype))
                 for name in self.extra_names}
        return logits, extra

    @property
    def bias(self) -> Optional[jax.Array]:
        return self.selection_bias[...] if self.tracks_load else None

    @property
    def tracks_load(self) -> bool:
        """Whether the router keeps a selection bias updated from its training load."""
        return hasattr(self, "selection_bias")
