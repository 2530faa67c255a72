"""Qwen MoE models (Hugging Face config.json and transformers' modeling_qwen2_moe.py /
modeling_qwen3_moe.py; MaxText configs/models/qwen3-*.yml).

- qwen1.5_a2.7b (Qwen1.5-MoE-A2.7B): 24 layers, 60 SwiGLU experts of width 1408, top-4 of the
  softmax over all, not renormalised, plus a shared expert of width 5632 scaled by a learned
  sigmoid gate (moe.shared_expert_gate); biases on q, k, v; 16 heads of 128; RoPE θ = 10⁶.
- qwen3_30b_a3b, qwen3_235b_a22b (Qwen3-30B-A3B, Qwen3-235B-A22B): 48 / 94 layers, 128 SwiGLU
  experts of width 768 / 1536, top-8 renormalised, grouped-query attention (32 / 64 heads,
  4 key/value heads of 128), per-head QK-norm, RoPE θ = 10⁶ (the -2507 refreshes: 10⁷ and
  5·10⁶).
All untied, RMSNorm ε = 1e-6, vocabulary 151936, every layer MoE.
"""

from configs.open import architecture
from configs.open.architecture import Published


def _qwen3(d_model, layers, heads, d_ff, expert_width):
    return dict(
        model=dict(arch="decoder", vocab_size=151936, d_model=d_model, num_layers=layers,
                   num_heads=heads, num_kv_heads=4, head_dim=128, d_ff=d_ff,
                   activation="swiglu", qk_norm="per_head", rope_max_wavelength=1e6,
                   moe_layout="every", moe_every=1),
        moe=dict(router="top_k", num_experts=128, num_selected_experts=8,
                 hidden_dim=expert_width, gate_order="softmax_then_top_k",
                 renormalize_gates=True, dispatch="dropless", activation="swiglu",
                 load_balance_loss=0.001))


MODELS = {
    "qwen1.5_a2.7b": dict(
        model=dict(arch="decoder", vocab_size=151936, d_model=2048, num_layers=24,
                   num_heads=16, head_dim=128, d_ff=5632, activation="swiglu",
                   qkv_bias=True, rope_max_wavelength=1e6, moe_layout="every", moe_every=1),
        moe=dict(router="top_k", num_experts=60, num_selected_experts=4, hidden_dim=1408,
                 gate_order="softmax_then_top_k", num_shared_experts=1,
                 shared_hidden_dim=5632, shared_expert_gate=True, dispatch="dropless",
                 activation="swiglu", load_balance_loss=0.001)),
    "qwen3_30b_a3b": _qwen3(2048, 48, 32, 6144, 768),
    "qwen3_235b_a22b": _qwen3(4096, 94, 64, 12288, 1536),
}

PUBLISHED = {
    "qwen1.5_a2.7b": Published("14.3B", "2.7B", "Qwen team, 'Qwen1.5-MoE' blog and model card",
                               "embeddings included (2.0B active without them)"),
    "qwen3_30b_a3b": Published("30.5B", "3.3B", "Qwen/Qwen3-30B-A3B model card",
                               "embeddings included"),
    "qwen3_235b_a22b": Published("235B", "22B", "Qwen/Qwen3-235B-A22B model card",
                                 "embeddings included"),
}


def get_config(arg: str = "tiny"):
    return architecture.get_config(arg, MODELS)
