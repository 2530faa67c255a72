"""Llama 4 Scout (17B active, 16 experts) and Maverick (17B active, 128 experts) (Meta 2025;
transformers' configuration_llama4.py, MaxText configs/models/llama4-17b-{16,128}e.yml).

48 layers, d_model 5120, grouped-query attention (40 heads, 8 key/value heads of 128), RoPE
θ = 5·10⁵, RMSNorm ε = 1e-5, vocabulary 202048, untied. MoE: top-1 with a sigmoid of the
chosen logit (router 'deepseek_v3' without groups, bias or renormalisation), SwiGLU experts
of width 8192 and one shared expert of the same width; Scout: every layer MoE; Maverick:
every other layer (interleave_moe_layer_step 2; the others dense FFNs of width 16384).
Not modelled: Llama 4 scales the chosen expert's *input* by the router score (here its
output), the L2 QK-norm without parameters, chunked attention, the NoPE layers (every
fourth) and attention temperature tuning; the parameter counts are the same.
"""

from configs.open import architecture
from configs.open.architecture import Published


def _llama4(experts, every):
    return dict(
        model=dict(arch="decoder", vocab_size=202048, d_model=5120, num_layers=48,
                   num_heads=40, num_kv_heads=8, head_dim=128, d_ff=16384,
                   activation="swiglu", rope_max_wavelength=5e5, norm_eps=1e-5,
                   moe_layout="every", moe_every=every),
        moe=dict(router="deepseek_v3", num_experts=experts, num_selected_experts=1,
                 hidden_dim=8192, num_shared_experts=1, renormalize_gates=False,
                 dispatch="dropless", activation="swiglu", load_balance_loss=0.0))


MODELS = {"scout": _llama4(16, 1), "maverick": _llama4(128, 2)}

PUBLISHED = {
    "scout": Published("109B", "17B", "meta-llama/Llama-4-Scout-17B-16E model card",
                       "the whole model, vision encoder included"),
    "maverick": Published("400B", "17B", "meta-llama/Llama-4-Maverick-17B-128E model card",
                          "the whole model, vision encoder included"),
}


def get_config(arg: str = "tiny"):
    return architecture.get_config(arg, MODELS)
