"""Mixtral 8x7B and 8x22B (Jiang et al. 2024, "Mixtral of Experts"; Mistral AI model cards).

Every FFN is an MoE of 8 SwiGLU experts, top-2, softmax over the two chosen logits, no
capacity (dropless); grouped-query attention (32 or 48 heads, 8 key/value heads of 128),
RoPE θ = 10⁶, RMSNorm ε = 1e-5, untied embeddings. Values: the Hugging Face config.json of
mistralai/Mixtral-8x7B-v0.1 and mistralai/Mixtral-8x22B-v0.1 (8x22B: the official release's
32768-token vocabulary; a community conversion has 32000), as in MaxText's
configs/models/mixtral-8x{7,22}b.yml.

    python -m experiments.params --config=configs/open/mixtral.py:8x7b
"""

from configs.open import architecture
from configs.open.architecture import Published


def _mixtral(vocab, d_model, layers, heads, d_ff, load_balance_loss):
    return dict(
        model=dict(arch="decoder", vocab_size=vocab, d_model=d_model, num_layers=layers,
                   num_heads=heads, num_kv_heads=8, head_dim=128, d_ff=d_ff,
                   activation="swiglu", rope_max_wavelength=1e6, norm_eps=1e-5,
                   moe_layout="every", moe_every=1),
        moe=dict(router="top_k", num_experts=8, num_selected_experts=2, hidden_dim=d_ff,
                 gate_order="top_k_then_softmax", dispatch="dropless", activation="swiglu",
                 load_balance_loss=load_balance_loss))


MODELS = {
    "8x7b": _mixtral(32000, 4096, 32, 32, 14336, 0.02),
    "8x22b": _mixtral(32768, 6144, 56, 48, 16384, 0.001),
}

PUBLISHED = {
    "8x7b": Published("46.7B", "12.9B", "Mistral AI, 'Mixtral of experts' (2023-12-11)",
                      "embeddings and output head included"),
    "8x22b": Published("141B", "39B", "Mistral AI, 'Cheaper, Better, Faster, Stronger' "
                       "(2024-04-17)", "embeddings and output head included"),
}


def get_config(arg: str = "tiny"):
    return architecture.get_config(arg, MODELS)
