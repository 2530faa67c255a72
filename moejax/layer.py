"""MoeLayer: router -> routing -> dispatch -> experts -> combine, as one Flax NNX module.

    x [B, L, D] -> groups [G, S, D] --router--> logits [G, S, E] (float32; moe.router_dtype)
      --routing--> plan (or sorted assignments) + aux losses + metrics
      --dispatch--> expert inputs [E, G·C, D] (or rows sorted by expert, dropless)
      --experts--> [E, G·C, D] --combine--> y [G, S, D] (+ shared experts) -> [B, L, D]

Returns (y, stats): stats holds 'aux_loss' (Σ coefficient · loss), every unweighted loss of the
router, and the metrics of moejax/metrics.py.

Padding: with mask [B, L] (nonzero for a real token; the models pass their segment ids), pad
tokens take no expert slot or dropless row, add no load and are left out of the losses and
metrics; their routed output is zero (shared experts still run on them).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import jax
import jax.numpy as jnp
from flax import nnx

from moejax import dispatch as dispatch_lib
from moejax import metrics as metrics_lib
from moejax.config import MoeConfig
from moejax.errors import ConfigError
from moejax.experts import Experts
from moejax.inputs import check_layer_args, group_mask, honest_stats, is_training, to_groups
from moejax.parallel.dropless import expert_parallel_dropless
from moejax.parallel.expert_parallel import expert_parallel_ffn
from moejax.parallel.expert_shards import active_mesh, constrain_groups
from moejax.plan import expert_capacity
from moejax.routing import family, route, routing_k, update_selection_bias
from moejax.routing.router import Router


def weighted_aux_loss(cfg: MoeConfig, losses: Dict[str, jax.Array]) -> jax.Array:
    """Σ over the router's losses of the MoeConfig coefficient with the same name."""
    total = jnp.zeros((), jnp.float32)
    for name, value in losses.items():
        total = total + getattr(cfg, name) * value
    return total


def shared_gate(cfg: MoeConfig, model_dim: int, rngs: nnx.Rngs) -> Optional[nnx.Param]:
    """w_s [D] of the shared experts' sigmoid gate (moe.shared_expert_gate), N(0,
    router_init_std²) like the router; None without it."""
    if not cfg.shared_expert_gate:
        return None
    init = jax.nn.initializers.normal(cfg.router_init_std)
    return nnx.Param(init(rngs.params(), (model_dim,), jnp.float32), logical_axes=("embed",))


class MoeLayer(nnx.Module):
    """A sparse MoE feed-forward layer for any capacity-based or dropless router.

    Call with x [B, L, D] and optionally mask [B, L] (padding 0); `deterministic` (default: the
    module's attribute, set by `.eval()`/`.train()`) switches between the train and eval
    capacity factors, turns off jitter, router noise and expert dropout.
    """

    def __init__(self, cfg: MoeConfig, model_dim: int, *, rngs: nnx.Rngs):
        check_layer_args(cfg, model_dim)
        if family(cfg).choice == "soft":
            raise ConfigError(f"moe.router={cfg.router!r} is its own layer: use "
                              f"moejax.make_moe_layer or moejax.SoftMoeLayer")
        self.cfg = cfg
        self.model_dim = model_dim
        self.deterministic = False
        self.rngs = rngs.fork()  # its own keys (per layer under nnx.vmap)
        self.router = Router(cfg, model_dim, rngs=rngs)
        self.experts = Experts.from_config(cfg, model_dim, rngs=rngs)
        shared = None
        if cfg.num_shared_experts:
            # n shared experts of width F_s are one FFN of width n·F_s (their outputs add up).
            width = cfg.num_shared_experts * (cfg.shared_hidden_dim or cfg.hidden_dim)
            shared = Experts.from_config(cfg, model_dim, rngs=rngs, num_experts=1,
                                         hidden_dim=width)
        self.shared_experts = nnx.data(shared)
        self.shared_gate = nnx.data(shared_gate(cfg, model_dim, rngs))

    def capacity(self, group_size: int, train: bool) -> Optional[int]:
        """Slots per expert per group, or None for dropless dispatch."""
        cfg = self.cfg
        if not cfg.uses_capacity:
            return None
        if family(cfg).full_capacity:
            return group_size
        factor = cfg.capacity_factor if train else cfg.eval_capacity_factor
        return expert_capacity(group_size, cfg.num_experts, routing_k(cfg), factor,
                               cfg.min_capacity)

    def __call__(self, x: jax.Array, *, deterministic: Optional[bool] = None,
                 mask: Optional[jax.Array] = None) -> Tuple[jax.Array, Dict[str, jax.Array]]:
        cfg = self.cfg
        train = is_training(self, deterministic)
        groups = constrain_groups(to_groups(x, cfg, self.model_dim))     # [G, S, D]
        real = group_mask(mask, x, groups)                               # [G, S] or None
        g, s, d = groups.shape
        capacity = self.capacity(s, train)

        jitter_key = self.rngs.routing() if train and cfg.jitter_eps > 0 else None
        logits, extra_logits = self.router(groups, jitter_key)          # [G, S, E]
        key, fam = None, family(cfg)
        if train and fam.random_in_training:
            key = self.rngs.routing()
        elif not train and fam.random_at_eval:
            # evaluation: fixed draws, so evaluating never moves the training random stream
            key = jax.random.key(0)
        routing = route(cfg, logits, capacity=capacity, train=train, key=key,
                        extra_logits=extra_logits, bias=self.router.bias, mask=real)
        dropout_key = self.rngs.dropout() if train and cfg.expert_dropout > 0 else None

        if routing.plan is None:
            y = self._dropless(groups, routing, dropout_key)             # [G, S, D]
        else:
            y = self._with_capacity(groups, routing, dropout_key)        # [G, S, D]
        if self.shared_experts is not None:
            shared_key = None if dropout_key is None else jax.random.fold_in(dropout_key, 1)
            y_shared = self.shared_experts(groups.reshape(1, g * s, d), shared_key).reshape(g, s, d)
            if self.shared_gate is not None:                             # Qwen-MoE
                y_shared = y_shared * jax.nn.sigmoid(jnp.einsum(
                    "gsd,d->gs", groups, self.shared_gate[...].astype(groups.dtype)))[..., None]
            y = y + y_shared

        stats = dict(routing.losses)
        stats["aux_loss"] = weighted_aux_loss(cfg, routing.losses)
        stats.update(metrics_lib.routing_metrics(routing, logits, s, real))
        if train and self.router.tracks_load:
            self.router.expert_load[...] = jax.lax.stop_gradient(stats["expert_counts"])
        return y.astype(x.dtype).reshape(x.shape), honest_stats(stats, x)

    def update_selection_bias(self) -> None:
        """DeepSeek-V3 loss-free balancing: shift the selection bias against the last
        training pass's expert load (no-op unless moe.bias_update_rate > 0)."""
        if self.cfg.bias_update_rate > 0:
            self.router.selection_bias[...] = update_selection_bias(
                self.router.selection_bias[...], self.router.expert_load[...],
                self.cfg.bias_update_rate)

    def _with_capacity(self, groups, routing, dropout_key) -> jax.Array:
        g, s, d = groups.shape
        plan = routing.plan
        e, c = plan.slot_token.shape[1:]
        if self.cfg.dispatch == "einsum":
            dispatch, combine = dispatch_lib.dispatch_einsum, dispatch_lib.combine_einsum
        else:
            dispatch, combine = dispatch_lib.dispatch_index, dispatch_lib.combine_index
        expert_in = dispatch(groups, plan)                                # [G, E, C, D]
        mesh = active_mesh()
        if mesh is not None:                                             # expert parallelism
            experts = self.experts
            expert_out = expert_parallel_ffn(
                expert_in, experts.weights(), activation=experts.activation,
                dtype=experts.dtype, mesh=mesh, dropout_rate=experts.dropout_rate,
                key=dropout_key)                                         # [G, E, C, D]
        else:
            expert_in = jnp.swapaxes(expert_in, 0, 1).reshape(e, g * c, d)   # [E, G·C, D]
            expert_out = self.experts(expert_in, dropout_key)                # [E, G·C, D]
            expert_out = jnp.swapaxes(expert_out.reshape(e, g, c, d), 0, 1)  # [G, E, C, D]
        return combine(expert_out, plan, s)                              # [G, S, D]

    def _dropless(self, groups, routing, dropout_key) -> jax.Array:
        g, s, d = groups.shape
        a = routing.assignment
        k = a.expert_index.shape[-1]
        mesh = active_mesh()
        if mesh is not None:                                             # expert parallelism
            cfg, experts = self.cfg, self.experts
            y = expert_parallel_dropless(
                groups.reshape(g * s, d), a.expert_index.reshape(g * s, k),
                a.gate.reshape(g * s, k), a.valid.reshape(g * s, k), experts.weights(),
                activation=experts.activation, dtype=experts.dtype, mesh=mesh,
                impl=cfg.grouped_matmul, exchange=cfg.dropless_all_to_all,
                block_size=cfg.block_size,
                dropout_rate=experts.dropout_rate, key=dropout_key)      # [G·S, D]
            return y.reshape(g, s, d)
        rows = dispatch_lib.sort_assignments(
            a.expert_index.reshape(g * s, k), a.gate.reshape(g * s, k),
            a.valid.reshape(g * s, k), self.cfg.num_experts)
        x_sorted = groups.reshape(g * s, d)[rows.token]                  # [T·k, D]
        y_sorted = self.experts.grouped(x_sorted, rows.group_sizes,
                                        impl=self.cfg.grouped_matmul,
                                        block_size=self.cfg.block_size, key=dropout_key)
        return dispatch_lib.combine_sorted(y_sorted, rows, g * s).reshape(g, s, d)
