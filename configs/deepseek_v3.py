"""DeepSeek-V3 (DeepSeek-AI 2024): fine-grained routed experts + a shared expert, sigmoid
affinities, group-limited top-k, auxiliary-loss-free bias balancing (γ = 0.001), sequence-wise
balance loss α = 1e-4, routed scaling 2.5, dropless; the first layers stay dense.

Fine-grained: each routed expert is a quarter of the dense FFN's width (DeepSeek-V3 itself:
256 routed experts of width 2048, top-8, 8 groups choose 4, 1 shared expert).
"""

from configs import common


def get_config(arg: str = "tiny"):
    config = common.base()
    config.model.activation = "swiglu"
    config.moe.update(router="deepseek_v3", renormalize_gates=True, routed_scaling_factor=2.5,
                      bias_update_rate=1e-3, sequence_balance_loss=1e-4, load_balance_loss=0.0,
                      dispatch="dropless", activation="swiglu", num_shared_experts=1)
    common.decoder_backbone(config, arg, num_experts={"tiny": 16, "base": 64})
    width = config.model.d_ff // 4
    config.moe.update(hidden_dim=width, shared_hidden_dim=width,
                      num_selected_experts=4 if arg == "tiny" else 8,
                      num_expert_groups=4 if arg == "tiny" else 8,
                      num_selected_groups=2 if arg == "tiny" else 4)
    layers = config.model.num_layers
    config.model.update(moe_layout="top", num_moe_layers=layers - 1 if arg == "tiny" else layers - 3)
    return config
