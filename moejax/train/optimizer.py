"""Optimisers and learning-rate schedules of the Google MoE papers (Adafactor) and AdamW.

Adafactor (Shazeer & Stern 2018) factors each weight matrix's second moment into row and column
statistics. optax factors the two largest axes of an array, which for stacked expert weights
[E, D, F] (or scanned layers [L, ...]) can be the expert or layer axis; moejax instead treats the
`layers` and `expert` axes as batch axes, so every expert matrix of every layer gets its own
row/column statistics, as in mesh-tensorflow/t5x for MoE.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, List

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from moejax.errors import check, check_choice

OPTIMIZERS = ("adafactor", "adamw")
SCHEDULES = ("rsqrt", "cosine", "constant")


def validate(cfg) -> None:
    """One ConfigError line for the first invalid optimizer field (before anything is built)."""
    check_choice("optimizer.name", cfg.name, OPTIMIZERS)
    check_choice("optimizer.schedule", cfg.schedule, SCHEDULES)
    for name in ("learning_rate", "warmup_steps", "weight_decay", "grad_clip_norm", "b1", "b2"):
        value = cfg[name]
        check(isinstance(value, (int, float)) and math.isfinite(value) and value >= 0,
              f"optimizer.{name}={value!r} must be a finite number >= 0")
    check(cfg.learning_rate > 0, f"optimizer.learning_rate={cfg.learning_rate!r} must be > 0")
    check(cfg.b1 < 1 and cfg.b2 < 1, f"optimizer.b1={cfg.b1!r} and optimizer.b2={cfg.b2!r} "
                                     "must be < 1")


def learning_rate_schedule(name: str, base: float, warmup_steps: int, total_steps: int
                           ) -> Callable[[jax.Array], jax.Array]:
    """base is the peak learning rate of every schedule.

    rsqrt: T5's inverse square root, base · sqrt(warmup / max(step, warmup)): constant at base
    during warm-up, then ∝ 1/sqrt(step) (T5 writes it 1/sqrt(max(step, 10⁴)), i.e. base 0.01
    with warmup 10⁴); cosine: linear warm-up to base, then cosine decay to 0 at total_steps;
    constant: base."""
    check_choice("optimizer.schedule", name, SCHEDULES)
    if name == "rsqrt":
        warmup = float(max(warmup_steps, 1))
        return lambda step: base * jnp.sqrt(
            warmup / jnp.maximum(step, warmup).astype(jnp.float32))
    if name == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, base, max(warmup_steps, 1),
                                                  max(total_steps, warmup_steps + 1))
    return optax.constant_schedule(base)


def batch_axes(variable: nnx.Variable) -> tuple:
    """Axes of a parameter that index independent matrices: scanned-layer axes and `expert`."""
    value = variable[...]
    names = variable.get_metadata().get("logical_axes") or ()
    extra = value.ndim - len(names)                    # leading axes added by nnx.vmap (layers)
    axes = list(range(extra))
    axes += [extra + i for i, n in enumerate(names) if n == "expert" and value.ndim - extra > 2]
    return tuple(axes)


def per_matrix(inner: optax.GradientTransformation, leaf_axes: List[tuple]
               ) -> optax.GradientTransformation:
    """Applies `inner` to every matrix of every parameter independently.

    leaf_axes: for each parameter leaf (in jax.tree.leaves order) its batch axes, which are
    vmapped over (one vmap per axis, so the state keeps the parameter's leading layer and
    expert axes, and with them its sharding) so that `inner` only sees the remaining matrix.
    """

    def to_batch(x, axes):
        return jnp.moveaxis(x, axes, tuple(range(len(axes))))

    def from_batch(x, axes):
        return jnp.moveaxis(x, tuple(range(len(axes))), axes)

    def batched(fn, axes):
        for _ in axes:
            fn = jax.vmap(fn)
        return fn

    def init(params):
        leaves = jax.tree.leaves(params)
        check(len(leaves) == len(leaf_axes),
              "optimizer: parameter tree changed since it was built")
        return [batched(inner.init, a)(to_batch(p, a)) for p, a in zip(leaves, leaf_axes)]

    def update(updates, state, params=None):
        leaves_u, treedef = jax.tree.flatten(updates)
        leaves_p = jax.tree.leaves(params)
        new_u, new_s = [], []
        for u, s, p, axes in zip(leaves_u, state, leaves_p, leaf_axes):
            bu, bs = batched(inner.update, axes)(to_batch(u, axes), s, to_batch(p, axes))
            new_u.append(from_batch(bu, axes))
            new_s.append(bs)
        return treedef.unflatten(new_u), new_s

    return optax.GradientTransformation(init, update)


def adafactor(learning_rate, leaf_axes: List[tuple], *, decay_rate: float = 0.8,
              clipping_threshold: float = 1.0, min_dim_size_to_factor: int = 128,
              multiply_by_parameter_scale: bool = True) -> optax.GradientTransformation:
    """Adafactor without momentum (β1 = 0), update clipping 1.0, parameter-scaled steps (T5).

    Second moments, update clipping and the parameter scale are all per matrix (per layer and
    expert), as in t5x; the parameter scale multiplies, so it may come before the learning rate.
    """
    per = [optax.scale_by_factored_rms(factored=True, decay_rate=decay_rate,
                                       min_dim_size_to_factor=min_dim_size_to_factor)]
    if clipping_threshold:
        per.append(optax.clip_by_block_rms(clipping_threshold))
    if multiply_by_parameter_scale:
        per.append(optax.scale_by_param_block_rms())
    return optax.chain(per_matrix(optax.chain(*per), leaf_axes),
                       optax.scale_by_learning_rate(learning_rate))


def make_optimizer(cfg, model: nnx.Module, total_steps: int) -> nnx.Optimizer:
    """nnx.Optimizer over the model's Params from the `optimizer` config section.

    cfg fields: name (adafactor/adamw), learning_rate, schedule (rsqrt/cosine/constant),
    warmup_steps, weight_decay (adamw), b1, b2 (adamw), grad_clip_norm (0 = off).
    """
    validate(cfg)
    variables = jax.tree.leaves(nnx.state(model, nnx.Param),
                                is_leaf=lambda x: isinstance(x, nnx.Variable))
    tx = _transformation(cfg.name, float(cfg.learning_rate), cfg.schedule,
                         int(cfg.warmup_steps), int(total_steps), float(cfg.weight_decay),
                         float(cfg.b1), float(cfg.b2), float(cfg.grad_clip_norm),
                         tuple(batch_axes(v) for v in variables))
    return nnx.Optimizer(model, tx, wrt=nnx.Param)


@functools.lru_cache(maxsize=16)
def _transformation(name, learning_rate, schedule, warmup_steps, total_steps, weight_decay, b1,
                    b2, grad_clip_norm, leaf_axes) -> optax.GradientTransformation:
    """One optax transformation per distinct setting: the same object for the same config, so
    a compiled train step (whose cache key includes it) is reused, e.g. by a resumed run."""
    lr = learning_rate_schedule(schedule, learning_rate, warmup_steps, total_steps)
    if name == "adafactor":
        tx = adafactor(lr, list(leaf_axes))
    else:
        tx = optax.adamw(lr, b1=b1, b2=b2, weight_decay=weight_decay)
    if grad_clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(grad_clip_norm), tx)
    return tx
