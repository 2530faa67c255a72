"""Grok-1 (xAI 2024; xai-org/grok-1 run.py and model.py).

64 layers, every FFN an MoE of 8 experts with GELU-gated FFNs (width 32768 = ffn_size(6144,
8)), top-2 of the softmax over all 8, not renormalised; grouped-query attention (48 heads,
8 key/value heads of 128), RoPE θ = 10⁴, vocabulary 131072, tied embeddings.
Not modelled (no parameters): the attention logits' soft cap 30·tanh(x/30), the embedding and
output multipliers; the sandwich norms (an RMSNorm after attention and after the MoE as well
as before: 2·6144 more parameters per layer, 0.8M in all).
"""

from configs.open import architecture
from configs.open.architecture import Published

MODELS = {
    "314b": dict(
        model=dict(arch="decoder", vocab_size=131072, d_model=6144, num_layers=64,
                   num_heads=48, num_kv_heads=8, head_dim=128, d_ff=32768,
                   activation="geglu", rope_max_wavelength=1e4, tie_embeddings=True,
                   moe_layout="every", moe_every=1),
        moe=dict(router="top_k", num_experts=8, num_selected_experts=2, hidden_dim=32768,
                 gate_order="softmax_then_top_k", dispatch="dropless", activation="geglu")),
}

PUBLISHED = {
    "314b": Published("314B", None, "xai-org/grok-1 README.md",
                      "no active count in parameters; xAI: 25% of the weights active per token"),
}


def get_config(arg: str = "tiny"):
    return architecture.get_config(arg, MODELS)
