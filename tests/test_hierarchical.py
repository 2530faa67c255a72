"""Hierarchical mixtures of experts (Jordan & Jacobs 1994): the dense form against a NumPy
two-level mixture, the sparse form's choices and weights, and the family's config checks."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from moejax import ConfigError, MoeConfig, make_moe_layer
from moejax.routing import hierarchical

E, GROUPS, D, F = 6, 2, 8, 5


def softmax(z):
    z = z - z.max(-1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(-1, keepdims=True)


def numpy_hme(x, w_g, w_groups, wi, wo):
    """y = Σ_i g_i Σ_j g_j|i f_ij(x), one token and one expert at a time (ReLU experts)."""
    per_group = E // GROUPS
    y = np.zeros_like(x, dtype=np.float64)
    for t in np.ndindex(*x.shape[:-1]):
        v = x[t].astype(np.float64)
        top = softmax(v @ w_groups)
        for i in range(GROUPS):
            experts = range(i * per_group, (i + 1) * per_group)
            within = softmax(np.array([v @ w_g[:, j] for j in experts]))
            for weight, j in zip(within, experts):
                y[t] += top[i] * weight * (np.maximum(v @ wi[j], 0.0) @ wo[j])
    return y


def layer(router, **cfg):
    return make_moe_layer(MoeConfig(router=router, num_experts=E, num_expert_groups=GROUPS,
                                    hidden_dim=F, activation="relu", **cfg), D,
                          rngs=nnx.Rngs(0))


X = np.random.default_rng(0).normal(size=(2, 3, D)).astype(np.float32)


def test_the_dense_form_is_the_papers_two_level_mixture():
    hme = layer("hierarchical_dense")
    y, stats = hme(jnp.asarray(X), deterministic=True)
    w = [np.asarray(v, np.float64) for v in (hme.router.w[...], hme.router.w_groups[...],
                                             hme.experts.wi[...], hme.experts.wo[...])]
    np.testing.assert_allclose(y, numpy_hme(X, *w), rtol=2e-4, atol=1e-5)
    assert float(stats["dropped_fraction"]) == 0.0


def test_the_sparse_form_takes_the_top_group_and_its_top_k_with_product_weights():
    rng = np.random.default_rng(1)
    logits, group_logits = rng.normal(size=(2, 5, E)), rng.normal(size=(2, 5, GROUPS))
    routing = hierarchical.hierarchical_routing(jnp.asarray(logits, jnp.float32),
                                                jnp.asarray(group_logits, jnp.float32), 2,
                                                dense=False)
    index = np.asarray(routing.assignment.expert_index)
    gate = np.asarray(routing.assignment.gate)
    per_group = E // GROUPS
    for t in np.ndindex(2, 5):
        group = int(np.argmax(group_logits[t]))
        within = softmax(logits[t][group * per_group:(group + 1) * per_group])
        best = np.argsort(-within, kind="stable")[:2]
        np.testing.assert_array_equal(index[t], group * per_group + best)
        np.testing.assert_allclose(gate[t], softmax(group_logits[t])[group] * within[best],
                                   rtol=1e-5)
    np.testing.assert_allclose(np.asarray(routing.probs).sum(-1), 1.0, rtol=1e-5)


def test_the_sparse_layer_runs_with_capacity_and_dropless():
    for dispatch in ("index", "dropless"):
        y, stats = layer("hierarchical", num_selected_experts=2, dispatch=dispatch)(
            jnp.asarray(X))
        assert y.shape == X.shape and np.all(np.isfinite(y))
        np.testing.assert_allclose(np.sum(stats["tokens_per_expert"]), 1.0, rtol=1e-5)


@pytest.mark.parametrize("cfg, message", [
    (dict(num_expert_groups=4), r"moe\.num_expert_groups=4 must be >= 2 and divide"),
    (dict(num_expert_groups=1), r"moe\.num_expert_groups=1 must be >= 2"),
    (dict(num_selected_experts=4), r"moe\.num_selected_experts=4 must be <= the 3 experts"),
])
def test_bad_hierarchies_give_one_line(cfg, message):
    with pytest.raises(ConfigError, match=message):
        MoeConfig(**{**dict(router="hierarchical", num_experts=E, num_expert_groups=GROUPS),
                     **cfg})
