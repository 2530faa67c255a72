"""Snowflake Arctic (Snowflake 2024; Hugging Face config.json and modeling_arctic.py of
Snowflake/snowflake-arctic-instruct).

A dense-MoE hybrid: 35 layers, each with a dense SwiGLU FFN as wide as the model (7168, the
"10B dense transformer") in a residual branch and an MoE of 128 SwiGLU experts (width 4864,
"128×3.66B"), top-2 renormalised, that reads the layer's input in parallel with attention
(parallel_attn_mlp_res; model.dense_moe_hybrid). Grouped-query attention (56 heads, 8 key/value
heads in the current instruct config; older configs have 56), RoPE θ = 10⁴, RMSNorm ε = 1e-5,
vocabulary 32000, untied.
"""

from configs.open import architecture
from configs.open.architecture import Published

MODELS = {
    "480b": dict(
        model=dict(arch="decoder", vocab_size=32000, d_model=7168, num_layers=35,
                   num_heads=56, num_kv_heads=8, head_dim=128, d_ff=7168,
                   activation="swiglu", rope_max_wavelength=1e4, norm_eps=1e-5,
                   moe_layout="every", moe_every=1, dense_moe_hybrid=True),
        moe=dict(router="top_k", num_experts=128, num_selected_experts=2, hidden_dim=4864,
                 gate_order="top_k_then_softmax", dispatch="dropless", activation="swiglu")),
}

PUBLISHED = {
    "480b": Published("480B", "17B", "Snowflake/snowflake-arctic-instruct model card",
                      "'10B dense transformer with a residual 128x3.66B MoE MLP'"),
}


def get_config(arg: str = "tiny"):
    return architecture.get_config(arg, MODELS)
