"""The open models' architecture pieces against NumPy written from the papers' formulas:
grouped-query attention, QK-norm (per head, across heads), q/k/v biases, multi-head latent
attention (DeepSeek-V2), Qwen's gated shared expert, Arctic's dense-MoE hybrid block and
DeepSeek-V2's group-limited routing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from moejax.config import MoeConfig
from moejax.errors import ConfigError
from moejax.models import ModelConfig
from moejax.models.attention import Attention, attention_mask
from moejax.models.block import Block, LayerInputs
from moejax.models.latent_attention import LatentAttention, LatentDims
from moejax.routing.deepseek_v2 import deepseek_v2_routing

B, L, D = 2, 7, 16


def randomise(module, seed=0):
    """Every parameter drawn N(0, 0.5²) (biases and norm scales too, so they matter)."""
    state = nnx.state(module, nnx.Param)
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    new = [0.5 * jax.random.normal(k, x.shape) + (1.0 if x.ndim == 1 else 0.0)
           for k, x in zip(keys, leaves)]
    nnx.update(module, jax.tree.unflatten(tree, new))
    return {"/".join(str(p) for p in path): np.asarray(v.get_value(), np.float64)
            for path, v in nnx.to_flat_state(nnx.state(module, nnx.Param))}


def np_rms(x, scale, eps=1e-6):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * scale


def np_rope(x, positions, wavelength=1e4):
    """RoPE in the half-split layout: x [L, Dh] at positions [L]."""
    half = x.shape[-1] // 2
    freq = wavelength ** (-np.arange(half) / half)
    angle = positions[:, None] * freq
    x1, x2 = x[:, :half], x[:, half:]
    return np.concatenate([x1 * np.cos(angle) - x2 * np.sin(angle),
                           x2 * np.cos(angle) + x1 * np.sin(angle)], axis=-1)


def np_causal_attention(q, k, v):
    """One head: q [L, Dk], k [L, Dk], v [L, Dv], causal."""
    logits = q @ k.T / np.sqrt(q.shape[-1])
    logits = np.where(np.tril(np.ones((len(q), len(k)))) > 0, logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


def inputs():
    x = np.asarray(jax.random.normal(jax.random.key(9), (B, L, D)), np.float64)
    positions = np.broadcast_to(np.arange(L), (B, L))
    return x, positions


@pytest.mark.parametrize("kv_heads, qk_norm, bias", [
    (4, "none", False), (2, "per_head", False), (1, "across_heads", True), (2, "none", True)])
def test_grouped_query_attention_matches_numpy(kv_heads, qk_norm, bias):
    heads, dh = 4, 8
    attn = Attention(D, heads, dh, dtype=jnp.float32, rngs=nnx.Rngs(0), num_kv_heads=kv_heads,
                     qkv_bias=bias, qk_norm=qk_norm)
    w = randomise(attn)
    x, positions = inputs()
    mask = attention_mask(jnp.ones((B, L)), jnp.ones((B, L)), causal=True)
    out = attn(jnp.asarray(x, jnp.float32), jnp.asarray(x, jnp.float32), mask,
               q_positions=jnp.asarray(positions), k_positions=jnp.asarray(positions))

    def project(b, name, n):
        y = np.einsum("ld,dhk->lhk", x[b], w[name]) + (w[name + "_bias"] if bias else 0)
        if qk_norm == "per_head" and name != "v":
            y = np_rms(y, w[name + "_norm/scale"])
        if qk_norm == "across_heads" and name != "v":
            y = np_rms(y.reshape(L, -1), w[name + "_norm/scale"]).reshape(L, n, dh)
        return y

    expected = np.zeros((B, L, D))
    for b in range(B):
        q, k, v = project(b, "q", heads), project(b, "k", kv_heads), project(b, "v", kv_heads)
        for h in range(heads):
            g = h // (heads // kv_heads)             # the key/value head of query head h
            o = np_causal_attention(np_rope(q[:, h], positions[b]), np_rope(k[:, g], positions[b]),
                                    v[:, g])
            expected[b] += o @ w["o"][h]
    np.testing.assert_allclose(out, expected, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("q_lora_rank", [0, 12], ids=["no-q-compression", "q-lora"])
def test_latent_attention_matches_the_deepseek_v2_formulas(q_lora_rank):
    heads = 3
    dims = LatentDims(q_lora_rank=q_lora_rank, kv_lora_rank=10, qk_nope_head_dim=6,
                      qk_rope_head_dim=4, v_head_dim=5)
    mla = LatentAttention(D, heads, dims, dtype=jnp.float32, rngs=nnx.Rngs(0))
    w = randomise(mla, seed=1)
    x, positions = inputs()
    mask = attention_mask(jnp.ones((B, L)), jnp.ones((B, L)), causal=True)
    out = mla(jnp.asarray(x, jnp.float32), None, mask, q_positions=jnp.asarray(positions))
    expected = np.zeros((B, L, D))
    for b in range(B):
        if q_lora_rank:                                   # c_Q = norm(x W_DQ); q = c_Q W_UQ
            q = np.einsum("lr,rhk->lhk", np_rms(x[b] @ w["q_a"], w["q_a_norm/scale"]), w["q_b"])
        else:
            q = np.einsum("ld,dhk->lhk", x[b], w["q"])
        kv_a = x[b] @ w["kv_a"]                           # [c_KV ; k_R] before norm and RoPE
        c_kv = np_rms(kv_a[:, :10], w["kv_a_norm/scale"])
        k_rope = np_rope(kv_a[:, 10:], positions[b])      # one rotary key shared by all heads
        kv = np.einsum("lr,rhk->lhk", c_kv, w["kv_b"])
        for h in range(heads):
            q_h = np.concatenate([q[:, h, :6], np_rope(q[:, h, 6:], positions[b])], axis=-1)
            k_h = np.concatenate([kv[:, h, :6], k_rope], axis=-1)
            expected[b] += np_causal_attention(q_h, k_h, kv[:, h, 6:]) @ w["o"][h]
    np.testing.assert_allclose(out, expected, rtol=2e-4, atol=2e-4)


def np_swiglu(x, wi, wi_gate, wo):
    gate = x @ wi_gate
    return (gate / (1 + np.exp(-gate)) * (x @ wi)) @ wo


def test_shared_expert_gate_scales_the_shared_expert_by_a_sigmoid():
    """Qwen2-MoE: y = routed + sigmoid(x·w_s) · shared(x). The routed experts' output
    weights are zeroed, so only the gated shared expert remains."""
    from moejax.layer import MoeLayer
    cfg = MoeConfig(router="top_k", num_experts=4, num_selected_experts=2, hidden_dim=8,
                    activation="swiglu", num_shared_experts=1, shared_hidden_dim=12,
                    shared_expert_gate=True)
    layer = MoeLayer(cfg, D, rngs=nnx.Rngs(0))
    w = randomise(layer, seed=2)
    layer.experts.wo[...] = jnp.zeros_like(layer.experts.wo[...])
    x, _ = inputs()
    y, _ = nnx.jit(lambda m, x: m(x, deterministic=True))(layer, jnp.asarray(x, jnp.float32))
    shared = np_swiglu(x, w["shared_experts/wi"][0], w["shared_experts/wi_gate"][0],
                       w["shared_experts/wo"][0])
    gate = 1 / (1 + np.exp(-(x @ w["shared_gate"])))
    np.testing.assert_allclose(y, gate[..., None] * shared, rtol=2e-4, atol=2e-4)


def test_dense_moe_hybrid_block_is_wired_as_arctic():
    """Arctic (parallel_attn_mlp_res): x' = x + Attn(n1(x)); out = x' + Dense(n_r(x')) +
    MoE(n2(x)), the MoE reading the layer's input. The MoE here is its FLOP-matched dense
    stand-in (moe_as_dense), so NumPy can compute every branch."""
    cfg = ModelConfig(arch="decoder", d_model=D, num_heads=2, head_dim=8, d_ff=12,
                      activation="swiglu", num_layers=1, moe_layout="every", moe_every=1,
                      dense_moe_hybrid=True, moe_as_dense=True,
                      moe=MoeConfig(num_experts=4, num_selected_experts=1, hidden_dim=6,
                                    activation="swiglu"))
    block = Block(cfg, "moe", causal=True, cross=False, rngs=nnx.Rngs(0))
    w = randomise(block, seed=3)
    x, positions = inputs()
    mask = attention_mask(jnp.ones((B, L)), jnp.ones((B, L)), causal=True)
    out, _ = block(jnp.asarray(x, jnp.float32),
                   LayerInputs(self_mask=mask, positions=jnp.asarray(positions)), True)
    expected = np.zeros((B, L, D))
    for b in range(B):
        h = np_rms(x[b], w["attn_norm/scale"])
        attn = sum(np_causal_attention(np_rope(h @ w["attn/q"][:, i], positions[b]),
                                       np_rope(h @ w["attn/k"][:, i], positions[b]),
                                       h @ w["attn/v"][:, i]) @ w["attn/o"][i]
                   for i in range(2))
        after = x[b] + attn
        dense = np_swiglu(np_rms(after, w["extra_norm/scale"]), w["extra_ffn/wi"],
                          w["extra_ffn/wi_gate"], w["extra_ffn/wo"])
        moe = np_swiglu(np_rms(x[b], w["ffn_norm/scale"]), w["ffn/wi"], w["ffn/wi_gate"],
                        w["ffn/wo"])
        expected[b] = after + dense + moe
    np.testing.assert_allclose(out, expected, rtol=2e-4, atol=2e-4)


def test_deepseek_v2_routing_keeps_to_the_groups_with_the_highest_affinity():
    """8 experts in 4 groups of 2, 2 groups chosen by their highest softmax score, top-3 in
    them, gates = those scores × 16 (not renormalised): a NumPy loop per token."""
    logits = jax.random.normal(jax.random.key(5), (2, 6, 8)) * 2
    routing = deepseek_v2_routing(logits, 3, routed_scaling_factor=16.0, num_expert_groups=4,
                                  num_selected_groups=2)
    probs = np.asarray(jax.nn.softmax(logits, -1), np.float64)
    for g in range(2):
        for s in range(6):
            p = probs[g, s]
            groups = np.argsort(-p.reshape(4, 2).max(-1))[:2]
            allowed = np.concatenate([[2 * i, 2 * i + 1] for i in groups])
            chosen = allowed[np.argsort(-p[allowed])[:3]]
            np.testing.assert_array_equal(routing.assignment.expert_index[g, s], chosen)
            np.testing.assert_allclose(routing.assignment.gate[g, s], 16.0 * p[chosen],
                                       rtol=1e-5)


@pytest.mark.parametrize("fields, message", [
    (dict(num_heads=4, num_kv_heads=3), "num_kv_heads=3 must be an integer >= 1 that divides"),
    (dict(arch="encoder_decoder", attention="mla"), "attention='mla' needs a decoder-only"),
    (dict(attention="mla", num_kv_heads=2), "num_kv_heads=2 is an option of attention='mha'"),
    (dict(attention="mla", qk_rope_head_dim=5), "qk_rope_head_dim=5 must be even"),
    (dict(qk_norm="layer"), "model.qk_norm='layer'"),
    (dict(dense_moe_hybrid=True, extra_dense_ffn_after_moe=True), "exclude each other"),
    (dict(moe=dict(shared_expert_gate=True)), "shared_expert_gate=True needs"),
    (dict(moe=dict(router="top_k", routed_scaling_factor=2.0)),
     "routed_scaling_factor=2.0 is read only by"),
], ids=["kv-heads", "mla-arch", "mla-gqa", "mla-rope", "qk-norm", "hybrid", "shared-gate",
        "scaling"])
def test_bad_architecture_fields_give_one_line(fields, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_dict({"num_heads": 4, "d_model": 32, **fields})
