"""Optimisers: Adafactor factored per expert matrix, and the learning-rate schedules."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from moejax import ConfigError, MoeConfig
from moejax.models import ModelConfig, build_model
from moejax.train.optimizer import batch_axes, learning_rate_schedule, make_optimizer, per_matrix


def test_per_matrix_equals_one_optimizer_per_expert_matrix():
    """Stacked [L, E, D, F] weights: each (layer, expert) matrix gets its own factored stats,
    exactly as if optax's factored RMS ran on that matrix alone."""
    inner = optax.scale_by_factored_rms(min_dim_size_to_factor=2)
    # more experts than rows: optax alone would factor over the E and F axes
    w = jax.random.normal(jax.random.key(0), (2, 8, 3, 4))                # [L, E, D, F]
    grads = [jax.random.normal(jax.random.key(i), w.shape) for i in (1, 2)]
    tx = per_matrix(inner, [(0, 1)])
    state = tx.init([w])
    separate = {(l, e): inner.init(w[l, e]) for l in range(2) for e in range(8)}
    for g in grads:
        (update,), state = tx.update([g], state, [w])
        for (l, e), s in separate.items():
            expected, separate[(l, e)] = inner.update(g[l, e], s, w[l, e])
            np.testing.assert_allclose(update[l, e], expected, rtol=1e-5, atol=1e-7)
    # and it is not what factoring the whole 4-D array does (optax picks its two largest
    # axes, E and F, and so shares statistics across experts)
    whole_state, mine_state = inner.init(w), tx.init([w])
    for g in grads:
        whole, whole_state = inner.update(g, whole_state, w)
        (mine,), mine_state = tx.update([g], mine_state, [w])
    assert not np.allclose(whole, mine, rtol=1e-3)


def test_batch_axes_are_scanned_layers_and_experts():
    cfg = ModelConfig(num_layers=4, d_model=32, num_heads=2, d_ff=64,
                      moe=MoeConfig(num_experts=4, hidden_dim=16))
    model = build_model(cfg, rngs=nnx.Rngs(0))
    axes = {path: batch_axes(v) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}

    def find(*suffix):
        return next(a for path, a in axes.items() if path[-len(suffix):] == suffix)

    assert find("experts", "wi") == (0, 1)           # [layers, E, D, F]
    assert find("router", "w") == (0,)               # [layers, D, E]: a matrix per layer
    assert find("embed", "embedding") == ()


def test_adafactor_trains_a_model_through_nnx_optimizer():
    cfg = ModelConfig(num_layers=2, d_model=32, num_heads=2, d_ff=64,
                      moe=MoeConfig(num_experts=4, hidden_dim=16))
    model = build_model(cfg, rngs=nnx.Rngs(0))
    opt_cfg = ml_collections.ConfigDict(dict(
        name="adafactor", learning_rate=0.01, schedule="constant", warmup_steps=0,
        weight_decay=0.0, b1=0.9, b2=0.99, grad_clip_norm=1.0))
    optimizer = make_optimizer(opt_cfg, model, 10)
    tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, 256)

    @nnx.jit
    def step(model, optimizer):
        def loss(model):
            logits, _ = model(tokens, deterministic=True)
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, tokens))
        value, grads = nnx.value_and_grad(loss)(model)
        optimizer.update(model, grads)
        return value

    losses = [float(step(model, optimizer)) for _ in range(20)]
    assert losses[-1] < losses[0] - 0.5


def test_schedules():
    rsqrt = learning_rate_schedule("rsqrt", 0.01, 10_000, 100_000)   # T5: 1/sqrt(max(step, 1e4))
    assert float(rsqrt(10)) == pytest.approx(0.01)              # 1/sqrt(10^4), during warm-up
    assert float(rsqrt(40_000)) == pytest.approx(0.005)         # 1/sqrt(40000)
    assert float(learning_rate_schedule("rsqrt", 0.02, 100, 1000)(400)) == pytest.approx(0.01)
    cosine = learning_rate_schedule("cosine", 2.0, 10, 110)
    assert float(cosine(5)) == pytest.approx(1.0)               # half-way through warm-up
    assert float(cosine(60)) == pytest.approx(1.0, abs=1e-6)    # half-way down the cosine
    assert float(cosine(110)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ConfigError, match="optimizer.schedule='linear'"):
        learning_rate_schedule("linear", 1.0, 10, 100)


def test_adafactor_clipping_and_parameter_scale_are_per_layer():
    """Layer 1 holds 100x larger weights than layer 0; layer 0's update must be what Adafactor
    gives layer 0 alone (t5x excludes the layer and expert axes from every statistic)."""
    from moejax.train.optimizer import adafactor
    w = jax.random.normal(jax.random.key(0), (2, 4, 4)) * jnp.array([1.0, 100.0])[:, None, None]
    g = jax.random.normal(jax.random.key(1), w.shape)
    stacked = adafactor(0.1, [(0,)], min_dim_size_to_factor=2)
    alone = adafactor(0.1, [()], min_dim_size_to_factor=2)
    (update,), _ = stacked.update([g], stacked.init([w]), [w])
    for layer in range(2):
        (expected,), _ = alone.update([g[layer]], alone.init([w[layer]]), [w[layer]])
        np.testing.assert_allclose(update[layer], expected, rtol=1e-5, atol=1e-7)
