"""Soft MoE (Puigcerver et al. 2023, "From Sparse to Soft Mixtures of Experts").

Every expert has p slots; each slot's input is a softmax-over-tokens mix of the group's tokens,
and each token's output a softmax-over-slots mix of the slot outputs:

    logits = normalize(X) · (scale · normalize(Φ))       [G, S, E·p]   (L2 over D)
    D = softmax over tokens (axis S),  C = softmax over slots (axis E·p)
    X̃ = Dᵀ X  [G, E·p, D]  ->  experts  ->  Ỹ  ->  Y = C Ỹ  [G, S, D]

Nothing is dropped and there is no auxiliary loss. Every slot mixes all tokens of its group,
so, like expert choice, it is not causal. With a padding mask, slots mix real tokens only
(padding's dispatch logits are −∞) and padding is left out of the metrics.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import jax
import jax.numpy as jnp
from flax import nnx

from moejax import losses
from moejax import metrics as metrics_lib
from moejax.config import MoeConfig
from moejax.experts import Experts
from moejax.inputs import check_layer_args, group_mask, honest_stats, is_training, to_groups
from moejax.routing.soft_moe import soft_moe_weights


class SoftMoeLayer(nnx.Module):
    """Soft MoE layer with the same (y, stats) interface as MoeLayer."""

    def __init__(self, cfg: MoeConfig, model_dim: int, *, rngs: nnx.Rngs):
        check_layer_args(cfg, model_dim)
        self.cfg = cfg
        self.model_dim = model_dim
        self.deterministic = False
        self.rngs = rngs.fork()  # its own keys (per layer under nnx.vmap)
        num_slots = cfg.num_experts * cfg.slots_per_expert
        init = jax.nn.initializers.normal(model_dim ** -0.5)
        self.phi = nnx.Param(init(rngs.params(), (model_dim, num_slots), jnp.float32),
                             logical_axes=("embed", "slots"))
        self.scale = nnx.Param(jnp.ones((), jnp.float32))
        self.experts = Experts.from_config(cfg, model_dim, rngs=rngs)

    def __call__(self, x: jax.Array, *, deterministic: Optional[bool] = None,
                 mask: Optional[jax.Array] = None) -> Tuple[jax.Array, Dict[str, jax.Array]]:
        cfg = self.cfg
        train = is_training(self, deterministic)
        groups = to_groups(x, cfg, self.model_dim)                          # [G, S, D]
        real = group_mask(mask, x, groups)                                  # [G, S] or None
        g, s, d = groups.shape
        e, p = cfg.num_experts, cfg.slots_per_expert
        logits, dispatch, combine = soft_moe_weights(groups, self.phi[...], self.scale[...],
                                                     real)
        slots_in = jnp.einsum("gsn,gsd->gnd", dispatch, groups.astype(jnp.float32))  # [G, E·p, D]
        expert_in = jnp.swapaxes(slots_in.reshape(g, e, p, d), 0, 1).reshape(e, g * p, d)
        key = self.rngs.dropout() if train and cfg.expert_dropout > 0 else None
        expert_out = self.experts(expert_in, key)                           # [E, G·p, D]
        slots_out = jnp.swapaxes(expert_out.reshape(e, g, p, d), 0, 1).reshape(g, e * p, d)
        y = jnp.einsum("gsn,gnd->gsd", combine, slots_out.astype(jnp.float32))

        per_expert = jnp.sum(combine.reshape(g, s, e, p), axis=-1)         # [G, S, E]
        counts = jnp.full((e,), float(g * p), jnp.float32)
        stats = {
            "aux_loss": jnp.zeros((), jnp.float32),
            "expert_counts": counts,
            "tokens_per_expert": counts / jnp.sum(counts),
            "max_violation": jnp.zeros((), jnp.float32),
            "router_entropy": metrics_lib.router_entropy(per_expert, real),
            "router_z": losses.router_z_loss(logits, real),
            "dropped_fraction": jnp.zeros((), jnp.float32),
            "dropped_assignment_fraction": jnp.zeros((), jnp.float32),
        }
        return y.astype(x.dtype).reshape(x.shape), honest_stats(stats, x)
