"""DBRX (Databricks 2024, databricks/dbrx MODEL_CARD_dbrx_base.md; Hugging Face config.json of
databricks/dbrx-base, transformers' modeling_dbrx.py).

40 layers, every FFN an MoE of 16 fine-grained SwiGLU experts (width 10752), top-4 with the
chosen softmax probabilities renormalised (moe_normalize_expert_weights = 1), grouped-query
attention (48 heads, 8 key/value heads), RoPE θ = 5·10⁵, vocabulary 100352, untied.
Not modelled: DBRX's LayerNorm without bias (here RMSNorm: the same parameters) and its
clipping of q, k, v to ±8 (clip_qkv).
"""

from configs.open import architecture
from configs.open.architecture import Published

MODELS = {
    "132b": dict(
        model=dict(arch="decoder", vocab_size=100352, d_model=6144, num_layers=40,
                   num_heads=48, num_kv_heads=8, head_dim=128, d_ff=10752,
                   activation="swiglu", rope_max_wavelength=5e5, norm_eps=1e-5,
                   moe_layout="every", moe_every=1),
        moe=dict(router="top_k", num_experts=16, num_selected_experts=4, hidden_dim=10752,
                 gate_order="softmax_then_top_k", renormalize_gates=True,
                 dispatch="dropless", activation="swiglu", load_balance_loss=0.05)),
}

PUBLISHED = {
    "132b": Published("132B", "36B", "databricks/dbrx MODEL_CARD_dbrx_base.md",
                      "embeddings and output head included"),
}


def get_config(arg: str = "tiny"):
    return architecture.get_config(arg, MODELS)
