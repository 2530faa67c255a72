"""OLMoE-1B-7B (Muennighoff et al. 2024, "OLMoE: Open Mixture-of-Experts Language Models";
Hugging Face config.json of allenai/OLMoE-1B-7B-0924, transformers' modeling_olmoe.py).

16 layers, every FFN an MoE of 64 SwiGLU experts (width 1024), top-8 of the softmax over all
64, not renormalised; 16 heads of 128; QK-norm as an RMSNorm over the whole query and key
projections (model.qk_norm='across_heads'); RoPE θ = 10⁴, RMSNorm ε = 1e-5, vocabulary
50304, untied; load-balance loss 0.01, router z-loss 0.001.
"""

from configs.open import architecture
from configs.open.architecture import Published

MODELS = {
    "1b_7b": dict(
        model=dict(arch="decoder", vocab_size=50304, d_model=2048, num_layers=16,
                   num_heads=16, head_dim=128, d_ff=1024, activation="swiglu",
                   qk_norm="across_heads", rope_max_wavelength=1e4, norm_eps=1e-5,
                   moe_layout="every", moe_every=1),
        moe=dict(router="top_k", num_experts=64, num_selected_experts=8, hidden_dim=1024,
                 gate_order="softmax_then_top_k", dispatch="dropless", activation="swiglu",
                 load_balance_loss=0.01, router_z_loss=0.001)),
}

PUBLISHED = {
    "1b_7b": Published("6.9B", "1.3B", "Muennighoff et al. 2024 (OLMoE), arXiv 2409.02060",
                       "embeddings and output head included"),
}


def get_config(arg: str = "tiny"):
    return architecture.get_config(arg, MODELS)
