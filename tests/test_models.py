"""Transformer models: layer layouts, scan against unrolled layers, masks and positions."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from moejax import ConfigError, MoeConfig
from moejax.models import ModelConfig, build_model, ffn_pattern
from moejax.models.attention import relative_position_bucket, rotary
from moejax.models.stack import segments

MOE = MoeConfig(num_experts=4, num_selected_experts=2, hidden_dim=16, eval_capacity_factor=1.0,
                min_capacity=1)


def tiny(**kw):
    base = dict(vocab_size=64, d_model=32, num_heads=4, d_ff=32, num_layers=4,
                num_encoder_layers=4, num_decoder_layers=2, moe=MOE)
    return ModelConfig(**{**base, **kw})


@pytest.mark.parametrize("kw,expected", [
    (dict(moe_layout="every", moe_every=2), "DMDMDM"),
    (dict(moe_layout="every", moe_every=3), "DDMDDM"),
    (dict(moe_layout="every", moe_every=1), "MMMMMM"),
    (dict(moe_layout="top", num_moe_layers=2), "DDDDMM"),
    (dict(moe_layout="bottom", num_moe_layers=2), "MMDDDD"),
    (dict(moe_layout="list", moe_layer_list=(0, 5)), "MDDDDM"),
    (dict(moe_layout="none"), "DDDDDD"),
])
def test_ffn_pattern(kw, expected):
    pattern = ffn_pattern(tiny(num_layers=6, **kw), 6)
    assert "".join(k[0].upper() for k in pattern) == expected


def test_segments_cut_periods_and_runs():
    assert segments(("dense", "moe") * 3) == [(("dense", "moe"), 3)]
    assert segments(("moe",) * 4) == [(("moe",), 4)]
    assert segments(("dense",) * 4 + ("moe",) * 2) == [(("dense",), 4), (("moe",), 2)]
    assert segments(("moe", "dense", "dense", "dense", "dense", "moe")) == [
        (("moe",), 1), (("dense",), 4), (("moe",), 1)]
    assert segments(("moe",)) == [(("moe",), 1)]


def test_bad_layouts_fail_with_one_line():
    with pytest.raises(ConfigError, match=r"model\.moe_layer_list"):
        tiny(moe_layout="list", moe_layer_list=(7,))
    with pytest.raises(ConfigError, match=r"model\.num_moe_layers"):
        tiny(moe_layout="top", num_moe_layers=9)
    with pytest.raises(ConfigError, match=r"model\.d_model=30 must be divisible"):
        tiny(d_model=30)
    with pytest.raises(ConfigError, match=r"^moe\.num_selected_experts=3 must be <= moe\.num"):
        ModelConfig(moe={"num_experts": 2, "num_selected_experts": 3})


def test_expert_choice_is_refused_in_the_causal_decoder():
    cfg = tiny(moe=MOE.replace(router="expert_choice", num_selected_experts=1))
    with pytest.raises(ConfigError, match="causal decoder"):
        build_model(cfg, rngs=nnx.Rngs(0))


def forward(model, arch, tokens, deterministic=True):
    if arch == "decoder":
        return model(tokens, deterministic=deterministic)
    return model(tokens, tokens[:, :6], deterministic=deterministic)


_forward = nnx.jit(forward, static_argnums=(1, 3))


@pytest.mark.parametrize("arch,layout", [
    ("decoder", dict(moe_layout="every", moe_every=2)),
    ("decoder", dict(moe_layout="top", num_moe_layers=3)),
    ("encoder_decoder", dict(moe_layout="every", moe_every=2, extra_dense_ffn_after_moe=True)),
])
def test_scan_and_unrolled_layers_agree(arch, layout):
    """Same stacked parameters, run under nnx.scan and as a Python loop: same logits, stats, grads."""
    tokens = jax.random.randint(jax.random.key(0), (2, 12), 0, 64)
    results = []
    for scan in (True, False):
        model = build_model(tiny(arch=arch, scan_layers=scan, **layout), rngs=nnx.Rngs(0))

        def loss(model):
            logits, stats = forward(model, arch, tokens)
            return jnp.mean(logits ** 2) + jnp.sum(stats["aux_loss"]), (logits, stats)

        grads, (logits, stats) = nnx.jit(nnx.grad(loss, has_aux=True))(model)
        results.append((logits, stats, grads))
    (l1, s1, g1), (l2, s2, g2) = results
    np.testing.assert_allclose(l1, l2, rtol=1e-5, atol=1e-5)
    assert s1.keys() == s2.keys()
    for k in s1:
        np.testing.assert_allclose(s1[k], s2[k], rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_stats_are_stacked_in_layer_order():
    """Layers 1 and 3 are MoE; layer 3's router is zeroed, so every token ties and takes the
    lowest-numbered experts 0 and 1."""
    model = build_model(tiny(moe_layout="list", moe_layer_list=(1, 3), num_layers=4),
                        rngs=nnx.Rngs(0))
    (segment,) = model.layers.segments                      # (dense, moe) repeated twice
    router = segment.blocks.layers[1].ffn.router
    router.w[...] = router.w[...].at[1].set(0.0)             # repeat 1 = layer 3
    tokens = jax.random.randint(jax.random.key(1), (2, 12), 0, 64)
    _, stats = _forward(model, "decoder", tokens, True)
    assert stats["tokens_per_expert"].shape == (2, 4)
    np.testing.assert_allclose(stats["tokens_per_expert"][1], [0.5, 0.5, 0.0, 0.0])
    assert float(stats["tokens_per_expert"][0, 2] + stats["tokens_per_expert"][0, 3]) > 0
    np.testing.assert_allclose(stats["router_entropy"][1], np.log(4), rtol=1e-5)


def test_packed_segments_do_not_attend_across_documents():
    # Dropless: with capacity, documents of one routing group compete for expert slots.
    model = build_model(tiny(moe=MOE.replace(dispatch="dropless")), rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(2), (1, 12), 0, 64)
    segment_ids = jnp.array([[1] * 5 + [2] * 7])
    positions = jnp.array([list(range(5)) + list(range(7))])
    f = nnx.jit(lambda m, t: m(t, segment_ids=segment_ids, positions=positions,
                               deterministic=True)[0])
    logits = f(model, tokens)
    changed = tokens.at[0, 1].set((tokens[0, 1] + 1) % 64)              # inside document 1
    logits2 = f(model, changed)
    np.testing.assert_allclose(logits[0, 5:], logits2[0, 5:], rtol=1e-5, atol=1e-5)
    assert not np.allclose(logits[0, 1:5], logits2[0, 1:5])


def test_causal_decoder_does_not_see_the_future():
    cfg = tiny(moe=MOE.replace(dispatch="dropless"))
    model = build_model(cfg, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(3), (1, 10), 0, 64)
    logits = _forward(model, "decoder", tokens, True)[0]
    logits2 = _forward(model, "decoder", tokens.at[0, 7].set((tokens[0, 7] + 1) % 64), True)[0]
    np.testing.assert_allclose(logits[0, :7], logits2[0, :7], rtol=1e-5, atol=1e-5)


def test_rotary_rotates_pairs_by_position_times_frequency():
    x = jax.random.normal(jax.random.key(4), (1, 3, 1, 4))
    pos = jnp.array([[0, 1, 5]])
    y = np.asarray(rotary(x, pos, 100.0))
    xn = np.asarray(x)
    for t, p in enumerate([0, 1, 5]):
        for i in range(2):
            theta = p * 100.0 ** (-i / 2)
            a, b = xn[0, t, 0, i], xn[0, t, 0, i + 2]
            np.testing.assert_allclose(y[0, t, 0, i], a * np.cos(theta) - b * np.sin(theta), 1e-5)
            np.testing.assert_allclose(y[0, t, 0, i + 2], b * np.cos(theta) + a * np.sin(theta), 1e-5)


def test_t5_relative_position_buckets():
    """T5 bucketing with 32 buckets, max distance 128 (hand-worked from the T5 definition)."""
    rel = jnp.array([0, -1, -15, -16, -20, -127, -500, 3])             # key − query
    causal = relative_position_bucket(rel, False, 32, 128)
    # causal: exact below 16, then 16 + log(n/16)/log(8)·16; future (3) -> bucket 0
    expected = [0, 1, 15, 16, 16 + int(np.log(20 / 16) / np.log(8) * 16), 31, 31, 0]
    np.testing.assert_array_equal(causal, expected)
    bidir = relative_position_bucket(jnp.array([0, 3, -3, 100]), True, 32, 128)
    # bidirectional: 16 buckets each way, keys after the query offset by 16
    expected = [0, 16 + 3, 3, 16 + 8 + int(np.log(100 / 8) / np.log(16) * 8)]
    np.testing.assert_array_equal(bidir, expected)


def test_bfloat16_model_keeps_float32_router_and_logits():
    cfg = tiny(dtype="bfloat16", moe=MOE.replace(dtype="bfloat16"))
    model = build_model(cfg, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(5), (2, 12), 0, 64)
    logits, stats = _forward(model, "decoder", tokens, True)
    assert logits.dtype == jnp.float32 and stats["router_z"].dtype == jnp.float32
    reference = build_model(tiny(), rngs=nnx.Rngs(0))
    logits32, stats32 = _forward(reference, "decoder", tokens, True)
    # same parameters, bf16 matmuls: close to the float32 model, not equal
    assert 0 < float(jnp.max(jnp.abs(logits - logits32))) < 0.5


@pytest.mark.parametrize("moe,activation,width,mats", [
    (MOE, "relu", 2 * 16, 2),                                         # top-2: k·F
    (MOE.replace(router="expert_choice", capacity_factor=1.5), "relu", 24, 2),  # cf·F
    (MOE.replace(num_selected_experts=1, num_shared_experts=2, shared_hidden_dim=8,
                 activation="swiglu"), "swiglu", 16 + 2 * 8, 3),     # k·F + shared, gated
])
def test_moe_as_dense_is_the_flop_matched_dense_baseline(moe, activation, width, mats):
    """Every MoE position becomes one dense FFN of width k·F (+ shared experts), with the
    experts' activation; the other layers and the parameter count otherwise stay."""
    cfg = tiny(moe=moe.replace(activation=activation), moe_layout="every", moe_every=2,
               moe_as_dense=True)
    assert not cfg.has_moe
    model = build_model(cfg, rngs=nnx.Rngs(0))
    dense = build_model(dataclasses.replace(cfg, moe_layout="none"), rngs=nnx.Rngs(0))
    count = lambda m: sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param)))
    # 2 of the 4 decoder layers swap a ReLU FFN of width 32 (2 matrices) for the baseline FFN.
    d = cfg.d_model
    assert count(model) - count(dense) == 2 * (mats * d * width - 2 * d * cfg.d_ff)
    tokens = jnp.ones((2, 8), jnp.int32)
    logits, stats = model(tokens, deterministic=True)
    assert logits.shape == (2, 8, cfg.vocab_size) and stats == {}


def test_moe_as_dense_refuses_soft_moe():
    with pytest.raises(ConfigError, match="soft_moe"):
        tiny(moe=MOE.replace(router="soft_moe"), moe_as_dense=True)


@pytest.mark.parametrize("arch", ["decoder", "encoder_decoder"])
def test_embedding_and_head_do_not_depend_on_the_layers(arch):
    """Two configs with the same seed but different FFN layers (dense, MoE, MoE with more
    experts) start from the same embedding and output head: comparisons share them."""
    heads, embeddings = [], []
    for layout in (dict(moe_layout="none"), dict(moe_layout="every", moe_every=2),
                   dict(moe_layout="every", moe_every=1,
                        moe=dataclasses.replace(MOE, num_experts=8, router="noisy_top_k"))):
        model = build_model(tiny(arch=arch, **layout), rngs=nnx.Rngs(3))
        heads.append(np.asarray(model.head[...]))
        embeddings.append(np.asarray(model.embed.embedding[...]))
    for h, e in zip(heads[1:], embeddings[1:]):
        np.testing.assert_array_equal(h, heads[0])
        np.testing.assert_array_equal(e, embeddings[0])
    # and a different seed draws a different head
    other = build_model(tiny(arch=arch, moe_layout="none"), rngs=nnx.Rngs(4))
    assert not np.allclose(np.asarray(other.head[...]), heads[0])


@pytest.mark.parametrize("arch", ["decoder", "encoder_decoder"])
def test_layer_weights_depend_on_the_layer_index_not_the_layout(arch):
    """Layer i's attention (and a dense layer's FFN) are the same draws whatever the FFN layout
    (scanned segments differ: one run of dense layers vs (dense, moe) super-blocks)."""
    from moejax.checkpoints.upcycle import layer_places

    def weights(cfg):
        state = nnx.to_pure_dict(nnx.state(build_model(cfg, rngs=nnx.Rngs(5)), nnx.Param))
        out = {}
        for (stack, layer), place in layer_places(cfg).items():
            node = state
            for part in place.prefix.split("/"):
                node = node[int(part) if part.isdigit() else part]
            out[stack, layer] = {"q": np.asarray(node["attn"]["q"][place.repeat]),
                                 "o": np.asarray(node["attn"]["o"][place.repeat]),
                                 "kind": place.kind,
                                 "ffn": (np.asarray(node["ffn"]["wi"][place.repeat])
                                         if place.kind == "dense" else None)}
        return out

    dense = weights(tiny(arch=arch, moe_layout="none"))
    moe = weights(tiny(arch=arch, moe_layout="every", moe_every=2))
    assert dense.keys() == moe.keys() and len(dense) >= 4
    for key in dense:
        np.testing.assert_array_equal(dense[key]["q"], moe[key]["q"])
        np.testing.assert_array_equal(dense[key]["o"], moe[key]["o"])
        if moe[key]["kind"] == "dense":
            np.testing.assert_array_equal(dense[key]["ffn"], moe[key]["ffn"])
    layers = sorted(dense)
    assert not np.allclose(dense[layers[0]]["q"], dense[layers[1]]["q"])   # layers differ


@pytest.mark.parametrize("arch", ["decoder", "encoder_decoder"])
def test_init_scale_scales_every_weight_matrix_but_experts_router_and_embeddings(arch):
    """model.init_scale s draws N(0, s / fan_in) (Switch's reduced init, s = 0.1): the same
    draws as s = 1 times sqrt(s) for attention, dense FFNs and the head; the experts, router,
    embedding, norms and position biases are untouched."""
    cfg = tiny(arch=arch, d_model=64, d_ff=128, moe_layout="every", moe_every=2,
               extra_dense_ffn_after_moe=True)
    params = {s: nnx.to_pure_dict(nnx.state(build_model(dataclasses.replace(cfg, init_scale=s),
                                                        rngs=nnx.Rngs(7)), nnx.Param))
              for s in (1.0, 0.1)}
    flat = {s: {jax.tree_util.keystr(k): np.asarray(v)
                for k, v in jax.tree_util.tree_flatten_with_path(p)[0]} for s, p in params.items()}
    scaled = [k for k in flat[1.0] if any(f"['{n}']" in k for n in
                                          ("q", "k", "v", "o", "wi", "wo", "head"))
              and "experts" not in k]
    assert any("extra_ffn" in k for k in scaled) and any("['head']" in k for k in scaled)
    for key, value in flat[1.0].items():
        expected = value * np.sqrt(0.1) if key in scaled else value
        np.testing.assert_allclose(flat[0.1][key], expected, rtol=1e-6, atol=1e-7, err_msg=key)
    # at s = 1 a [D, H, Dh] query projection has std sqrt(1 / D) (truncated normal, variance
    # corrected), and a [F, D] FFN output projection sqrt(1 / F)
    q = [v for k, v in flat[1.0].items() if k.endswith("['attn']['q']")][0]
    wo = [v for k, v in flat[1.0].items() if k.endswith("['ffn']['wo']") and "experts" not in k][0]
    assert np.std(q) == pytest.approx(np.sqrt(1 / 64), rel=0.05)
    assert np.std(wo) == pytest.approx(np.sqrt(1 / 128), rel=0.05)
    with pytest.raises(ConfigError, match="model.init_scale=0.0 must be > 0"):
        tiny(init_scale=0.0)
