"""DeepSeek-V2-Lite, DeepSeek-V2, DeepSeek-V3 (DeepSeek-AI 2024) and Kimi K2 (Kimi Team 2025,
the DeepSeek-V3 architecture at 384 experts).

Multi-head latent attention (model.attention='mla': kv_lora_rank 512, q_lora_rank 1536 or
none for V2-Lite, 128 + 64 rotary query/key dims, values of 128), fine-grained SwiGLU experts
with shared experts, the first layers dense. Routing: V2 and V2-Lite softmax top-6, not
renormalised, × routed_scaling_factor (16.0 / 1.0), V2 group-limited (8 groups, 3 chosen,
router 'deepseek_v2'); V3 and K2 sigmoid affinities, top-8 renormalised × 2.5 / 2.827, V3
group-limited (8 groups, 4 chosen), auxiliary-loss-free bias balancing (router
'deepseek_v3'). Values: deepseek-ai/DeepSeek-V3 inference/configs/config_{16B,236B,671B}.json,
the Hugging Face config.json files, MaxText configs/models/deepseek*.yml and kimi-k2-1t.yml.
Not modelled: YaRN context extension (rope_scaling) and DeepSeek-V3's multi-token-prediction
module (its 671B excludes it too; the Hugging Face checkpoint's 685B includes it).
"""

from configs.open import architecture
from configs.open.architecture import Published


def _mla(vocab, d_model, layers, heads, q_lora_rank, d_ff, dense_layers, rope_theta=1e4):
    return dict(arch="decoder", vocab_size=vocab, d_model=d_model, num_layers=layers,
                num_heads=heads, attention="mla", q_lora_rank=q_lora_rank, kv_lora_rank=512,
                qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, d_ff=d_ff,
                activation="swiglu", rope_max_wavelength=rope_theta, moe_layout="top",
                num_moe_layers=layers - dense_layers)


def _v2_moe(experts, width, scale, groups, chosen, balance):
    return dict(router="deepseek_v2", num_experts=experts, num_selected_experts=6,
                hidden_dim=width, num_shared_experts=2, routed_scaling_factor=scale,
                num_expert_groups=groups, num_selected_groups=chosen, dispatch="dropless",
                activation="swiglu", load_balance_loss=balance)


def _v3_moe(experts, scale, groups, chosen):
    return dict(router="deepseek_v3", num_experts=experts, num_selected_experts=8,
                hidden_dim=2048, num_shared_experts=1, renormalize_gates=True,
                routed_scaling_factor=scale, num_expert_groups=groups,
                num_selected_groups=chosen, bias_update_rate=1e-3,
                sequence_balance_loss=1e-4, load_balance_loss=0.0, dispatch="dropless",
                activation="swiglu")


MODELS = {
    "v2_lite": dict(model=_mla(102400, 2048, 27, 16, 0, 10944, 1),
                    moe=_v2_moe(64, 1408, 1.0, 1, 1, 0.001)),
    "v2": dict(model=_mla(102400, 5120, 60, 128, 1536, 12288, 1),
               moe=_v2_moe(160, 1536, 16.0, 8, 3, 0.003)),
    "v3": dict(model=_mla(129280, 7168, 61, 128, 1536, 18432, 3),
               moe=_v3_moe(256, 2.5, 8, 4)),
    "kimi_k2": dict(model=_mla(163840, 7168, 61, 64, 1536, 18432, 1, rope_theta=5e4),
                    moe=_v3_moe(384, 2.827, 1, 1)),
}

PUBLISHED = {
    "v2_lite": Published("15.7B", "2.4B", "DeepSeek-AI 2024, DeepSeek-V2 (arXiv 2405.04434), "
                         "DeepSeek-V2-Lite", "its model card: 16B total, 2.4B active"),
    "v2": Published("236B", "21B", "DeepSeek-AI 2024, DeepSeek-V2; DeepSeek-V3 README"),
    "v3": Published("671B", "37B", "DeepSeek-V3 README and README_WEIGHTS.md",
                    "main model, without the 14B multi-token-prediction module; "
                    "README_WEIGHTS.md: 36.7B active incl. 0.9B embedding and 0.9B head"),
    "kimi_k2": Published("1.04T", "32B", "Kimi Team 2025, Kimi K2 technical report (arXiv "
                         "2507.20534); MoonshotAI/Kimi-K2 README", "the README: 1T total, 32B "
                         "activated; the report: 1.04T"),
}


def get_config(arg: str = "tiny"):
    return architecture.get_config(arg, MODELS)
