"""Padding-aware routing: pad tokens (mask 0, segment id 0 in the models) take no expert slot,
add no load and are left out of the losses and metrics.

Checked three ways: against a NumPy loop over tokens that skips padding (capacity plan, load,
losses, metrics), against the layer without a mask when nothing is padded, and by changing what
the padding holds, which must not change any real token's output (without the mask, padding
took capacity slots from real tokens).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from moejax import MoeConfig, make_moe_layer
from moejax.errors import ConfigError

D = 8
MASK = np.array([[1, 1, 0, 1, 1, 1, 0, 0, 1, 1, 0, 1],
                 [0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 1, 1]], bool)          # [B=2, L=12]


def softmax(x):
    x = x - x.max(-1, keepdims=True)
    return np.exp(x) / np.exp(x).sum(-1, keepdims=True)


def numpy_top_k(logits, mask, k, capacity):
    """Switch/GShard capacity over real tokens only, first choices before second choices, in
    sequence order. Returns (slots per token [G, S], assignments per expert [E], load-balance
    loss, z-loss, dropped fraction, experts-per-token histogram [5])."""
    g, s, e = logits.shape
    probs = softmax(logits)
    choice = np.argsort(-probs, axis=-1, kind="stable")[..., :k]               # [G, S, k]
    served = np.zeros((g, s), int)
    counts = np.zeros(e)
    balance = []
    for gi in range(g):
        fill = np.zeros(e, int)
        for j in range(k):
            for si in range(s):
                if not mask[gi, si]:
                    continue
                expert = choice[gi, si, j]
                counts[expert] += 1
                if fill[expert] < capacity:
                    fill[expert] += 1
                    served[gi, si] += 1
        real = mask[gi]
        if real.any():
            f = np.array([np.mean([x in choice[gi, si] for si in np.flatnonzero(real)])
                          for x in range(e)])
            p = probs[gi][real].mean(0)
            balance.append(e * np.sum(f * p))
    z = np.mean([np.log(np.exp(logits[gi, si]).sum()) ** 2
                 for gi in range(g) for si in range(s) if mask[gi, si]])
    dropped = np.mean(served[mask] == 0)
    histogram = np.bincount(np.minimum(served[mask], 4), minlength=5) / mask.sum()
    return served, counts, np.mean(balance), z, dropped, histogram


def layer_and_logits(cfg, x, mask, train=False):
    layer = make_moe_layer(cfg, D, rngs=nnx.Rngs(0))
    y, stats = nnx.jit(lambda layer, x, m: layer(x, deterministic=not train, mask=m))(
        layer, x, mask)
    if not hasattr(layer, "router"):                               # Soft MoE: no router
        return np.asarray(y), stats, None
    logits = np.einsum("bld,de->ble", np.asarray(x), np.asarray(layer.router.w[...]))
    return np.asarray(y), stats, logits


@pytest.mark.parametrize("k", [1, 2])
def test_capacity_routing_skips_padding_like_a_numpy_loop(k):
    """Capacity 3 (k=1) or 5 (k=2) per expert for 12 positions, 8 and 7 of them real: some
    real tokens are dropped, and without the mask the pads would take slots too."""
    cfg = MoeConfig(num_experts=4, num_selected_experts=k, hidden_dim=6, min_capacity=1,
                    eval_capacity_factor=0.7)
    x = jax.random.normal(jax.random.key(0), (2, 12, D))
    y, stats, logits = layer_and_logits(cfg, x, jnp.asarray(MASK))
    capacity = make_moe_layer(cfg, D, rngs=nnx.Rngs(0)).capacity(12, train=False)
    assert capacity == (3 if k == 1 else 5)                      # ⌈12·k·0.7/4⌉
    served, counts, balance, z, dropped, histogram = numpy_top_k(logits, MASK, k, capacity)
    np.testing.assert_array_equal(np.asarray(stats["expert_counts"]), counts)
    np.testing.assert_allclose(stats["load_balance_loss"], balance, rtol=1e-5)
    np.testing.assert_allclose(stats["router_z_loss"], z, rtol=1e-5)
    np.testing.assert_allclose(stats["router_z"], z, rtol=1e-5)
    np.testing.assert_allclose(stats["dropped_fraction"], dropped, rtol=1e-6)
    np.testing.assert_allclose(stats["experts_per_token"], histogram, rtol=1e-6)
    assert np.all(y[~MASK] == 0)                                  # padding gets no expert
    assert np.all((np.abs(y).sum(-1) > 0) == (served > 0))        # real tokens: served or not


@pytest.mark.parametrize("case", [
    dict(router="top_k", num_selected_experts=2, eval_capacity_factor=1.0),
    dict(router="top_k", num_selected_experts=2, dispatch="dropless"),
    dict(router="expert_choice", eval_capacity_factor=1.0),
    dict(router="deepseek_v3", num_selected_experts=2, renormalize_gates=True,
         eval_capacity_factor=1.0),
    dict(router="soft_moe", slots_per_expert=2),
    dict(router="balanced", num_selected_experts=1, capacity_factor=1.0, train=True),
], ids=lambda c: f"{c['router']}-{c.get('dispatch', 'capacity')}")
def test_what_padding_holds_never_changes_a_real_token(case):
    """Real tokens' outputs and every statistic are the same whatever the padded positions
    hold; without the mask they differ (padding competes for slots or shifts the losses).
    BASE is checked in training, where its balanced assignment runs."""
    case = dict(case)
    train = case.pop("train", False)
    cfg = MoeConfig(num_experts=4, hidden_dim=6, min_capacity=1, **case)
    x = jax.random.normal(jax.random.key(1), (2, 12, D))
    other = jnp.where(MASK[..., None], x, 5.0 * jax.random.normal(jax.random.key(2), x.shape))
    mask = jnp.asarray(MASK)
    y1, s1, _ = layer_and_logits(cfg, x, mask, train)
    y2, s2, _ = layer_and_logits(cfg, other, mask, train)
    np.testing.assert_allclose(y1[MASK], y2[MASK], rtol=1e-5, atol=1e-6)
    for name in s1:
        np.testing.assert_allclose(s1[name], s2[name], rtol=1e-5, atol=1e-6, err_msg=name)
    n1, t1, _ = layer_and_logits(cfg, x, None, train)
    n2, t2, _ = layer_and_logits(cfg, other, None, train)
    assert (not np.allclose(n1[MASK], n2[MASK], rtol=1e-5, atol=1e-6)
            or not all(np.allclose(t1[n], t2[n], rtol=1e-5) for n in t1)), "test cannot fail"


def test_expert_choice_picks_only_real_tokens():
    """With 9 slots per expert and 8 and 7 real tokens in the two groups, each expert takes every
    real token and no pad: 15 tokens per expert (18 without the mask), the other slots empty and
    not counted as dropped assignments; padding gets no output."""
    cfg = MoeConfig(router="expert_choice", num_experts=4, hidden_dim=6,
                    eval_capacity_factor=3.0)                              # C = 12·3/4 = 9
    x = jax.random.normal(jax.random.key(3), (2, 12, D))
    y, stats, _ = layer_and_logits(cfg, x, jnp.asarray(MASK))
    np.testing.assert_array_equal(np.asarray(stats["expert_counts"]), [15.0] * 4)
    np.testing.assert_allclose(stats["dropped_assignment_fraction"], 0.0)
    np.testing.assert_allclose(stats["experts_per_token"], [0, 0, 0, 0, 1.0])   # 4 experts each
    assert np.all(y[~MASK] == 0) and np.all(np.abs(y[MASK]).sum(-1) > 0)
    _, unmasked, _ = layer_and_logits(cfg, x, None)
    np.testing.assert_array_equal(np.asarray(unmasked["expert_counts"]), [18.0] * 4)


@pytest.mark.parametrize("router", ["top_k", "deepseek_v3", "noisy_top_k", "balanced"])
def test_an_all_ones_mask_changes_nothing(router):
    extra = {"renormalize_gates": True} if router == "deepseek_v3" else {}
    cfg = MoeConfig(router=router, num_experts=4, num_selected_experts=1 if router ==
                    "balanced" else 2, hidden_dim=6, **extra)
    x = jax.random.normal(jax.random.key(4), (2, 12, D))
    y1, s1, _ = layer_and_logits(cfg, x, jnp.ones((2, 12), bool))
    y0, s0, _ = layer_and_logits(cfg, x, None)
    np.testing.assert_allclose(y1, y0, rtol=1e-6, atol=1e-7)
    for name in s0:
        np.testing.assert_allclose(s1[name], s0[name], rtol=1e-5, atol=1e-7, err_msg=name)


def test_a_mask_of_the_wrong_shape_is_one_line():
    layer = make_moe_layer(MoeConfig(num_experts=4, hidden_dim=6), D, rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match=r"mask has shape \(2, 11\); expected .* \(2, 12\)"):
        layer(jnp.ones((2, 12, D)), mask=jnp.ones((2, 11), bool))


def test_models_route_no_padding():
    """In the decoder, the MoE layers' load counts real tokens only (segment id != 0)."""
    from moejax.models import DecoderLM, ModelConfig
    cfg = ModelConfig(arch="decoder", vocab_size=50, num_layers=2, d_model=D, num_heads=2,
                      head_dim=4, d_ff=16, moe_layout="every", moe_every=1,
                      moe=MoeConfig(num_experts=4, num_selected_experts=2, hidden_dim=6,
                                    dispatch="dropless", causal=True))
    model = DecoderLM(cfg, rngs=nnx.Rngs(0))
    tokens = jnp.ones((2, 12), jnp.int32)
    _, stats = model(tokens, segment_ids=jnp.asarray(MASK, jnp.int32), deterministic=True)
    counts = np.asarray(stats["expert_counts"]).reshape(-1, 4)            # per MoE layer
    np.testing.assert_array_equal(counts.sum(-1), 2 * MASK.sum())


def test_base_layers_balance_real_tokens_only():
    """BASE in training over groups of 8 and 7 real tokens: every real token gets one expert,
    no expert more than ⌈R/E⌉ = 2 per group, so 15 assignments at most 4 per expert."""
    cfg = MoeConfig(router="balanced", num_experts=4, num_selected_experts=1, hidden_dim=6,
                    capacity_factor=1.0, min_capacity=1)
    x = jax.random.normal(jax.random.key(5), (2, 12, D))
    _, stats, _ = layer_and_logits(cfg, x, jnp.asarray(MASK), train=True)
    counts = np.asarray(stats["expert_counts"])
    assert counts.sum() == 15 and counts.max() <= 4, counts
