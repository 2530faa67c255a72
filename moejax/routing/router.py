"""The router: a linear map from token representations to expert logits, float32 by default."""

from __future__ import annotations

from typing import Optional, Tuple

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
    router_params add variables: 'w_noise' (zero-initialised noise weights, as in Shazeer et al.
    2017's noisy top-k) and 'selection_bias' (DeepSeek-V3's bias, with the load it is updated
    from).
    """

    def __init__(self, cfg: MoeConfig, model_dim: int, *, rngs: nnx.Rngs):
        e = cfg.num_experts
        self.jitter_eps = cfg.jitter_eps
        self.dtype = jnp.dtype(cfg.router_dtype)
        init = jax.nn.initializers.normal(cfg.router_init_std)
        self.w = nnx.Param(init(rngs.params(), (model_dim, e), jnp.float32),
                           logical_axes=("embed", "expert_scores"))
        params = family(cfg).router_params
        if "w_noise" in params:
            self.w_noise = nnx.Param(jnp.zeros((model_dim, e), jnp.float32),
                                     logical_axes=("embed", "expert_scores"))
        if "selection_bias" in params:
            self.selection_bias = SelectionBias(jnp.zeros((e,), jnp.float32),
                                                logical_axes=("expert_scores",))
            self.expert_load = ExpertLoad(jnp.zeros((e,), jnp.float32),
                                          logical_axes=("expert_scores",))

    def __call__(self, x: jax.Array, jitter_key: Optional[jax.Array] = None
                 ) -> Tuple[jax.Array, Optional[jax.Array]]:
        """x [G, S, D] -> (logits [G, S, E], noise logits [G, S, E] or None), router dtype."""
        x = x.astype(self.dtype)
        if jitter_key is not None and self.jitter_eps > 0.0:
            x = x * jax.random.uniform(jitter_key, x.shape, self.dtype,
                                       1.0 - self.jitter_eps, 1.0 + self.jitter_eps)
        logits = jnp.einsum("gsd,de->gse", x, self.w[...].astype(self.dtype))
        noise_logits = None
        if hasattr(self, "w_noise"):
            noise_logits = jnp.einsum("gsd,de->gse", x, self.w_noise[...].astype(self.dtype))
        return logits, noise_logits

    @property
    def bias(self) -> Optional[jax.Array]:
        return self.selection_bias[...] if self.tracks_load else None

    @property
    def tracks_load(self) -> bool:
        """Whether the router keeps a selection bias updated from its training load."""
        return hasattr(self, "selection_bias")
