"""Balanced assignment routing (BASE / S-BASE): Sinkhorn against NumPy, exact balance in
training, greedy top-1 at evaluation, and the family in a layer."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from moejax import ConfigError, MoeConfig, make_moe_layer
from moejax.routing import balanced


def numpy_sinkhorn(logits, iterations):
    """exp(logits), then rows to 1 and columns to S/E in turn, in float64 (no log domain)."""
    p = np.exp(logits.astype(np.float64))
    s, e = p.shape[-2:]
    for _ in range(iterations):
        p = p / p.sum(-1, keepdims=True)
        p = p / p.sum(-2, keepdims=True) * (s / e)
    return p


def numpy_greedy(scores):
    """The hard assignment by a plain loop: most certain token first, best expert with room."""
    s, e = scores.shape
    room = np.full(e, -(-s // e))
    expert = np.zeros(s, int)
    for token in sorted(range(s), key=lambda t: (-scores[t].max(), t)):
        row = np.where(room > 0, scores[token], -np.inf)
        expert[token] = int(np.argmax(row))
        room[expert[token]] -= 1
    return expert


LOGITS = np.random.default_rng(0).normal(scale=2.0, size=(3, 16, 4)).astype(np.float32)


def test_sinkhorn_matches_numpy_and_balances_the_plan():
    p = np.exp(np.asarray(balanced.sinkhorn(jnp.asarray(LOGITS), 8)))
    np.testing.assert_allclose(p, numpy_sinkhorn(LOGITS, 8), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(p.sum(-2), 4.0, rtol=1e-5)          # columns: S/E = 16/4


def test_training_gives_every_expert_exactly_s_over_e_tokens():
    routing = balanced.balanced_routing(jnp.asarray(LOGITS), train=True)
    expert = np.asarray(routing.assignment.expert_index[..., 0])    # [G, S]
    for g in range(3):
        assert np.bincount(expert[g], minlength=4).tolist() == [4, 4, 4, 4]
        log_p = np.log(numpy_sinkhorn(LOGITS[g], balanced.SINKHORN_ITERATIONS))
        np.testing.assert_array_equal(expert[g], numpy_greedy(log_p))
    chosen = np.take_along_axis(LOGITS, expert[..., None], -1)
    np.testing.assert_allclose(routing.assignment.gate, 1 / (1 + np.exp(-chosen)), rtol=1e-6)


def test_evaluation_is_greedy_top_1():
    routing = balanced.balanced_routing(jnp.asarray(LOGITS), train=False)
    np.testing.assert_array_equal(routing.assignment.expert_index[..., 0],
                                  LOGITS.argmax(-1))


def test_the_layer_drops_nothing_at_capacity_factor_1_in_training():
    layer = make_moe_layer(MoeConfig(router="balanced", num_experts=4, hidden_dim=8,
                                     capacity_factor=1.0, min_capacity=0), 16,
                           rngs=nnx.Rngs(0))
    x = np.random.default_rng(1).normal(size=(2, 16, 16)).astype(np.float32)
    _, stats = layer(jnp.asarray(x), deterministic=False)
    np.testing.assert_allclose(stats["tokens_per_expert"], 0.25)
    assert float(stats["dropped_fraction"]) == 0.0
    _, stats = layer(jnp.asarray(x), deterministic=True)
    assert np.isfinite(float(stats["router_z"]))


def test_balanced_routing_is_not_causal():
    with pytest.raises(ConfigError, match=r"moe\.router='balanced' looks at future tokens"):
        MoeConfig(router="balanced", causal=True)
    MoeConfig(router="balanced", causal=True, allow_non_causal_routing=True)
