"""Mixtral (Jiang et al. 2024): every FFN an MoE of 8 SwiGLU experts, top-2, softmax over the
chosen logits, dropless."""

from configs import common


def get_config(arg: str = "tiny"):
    config = common.base()
    config.model.activation = "swiglu"
    config.moe.update(router="top_k", num_selected_experts=2, gate_order="top_k_then_softmax",
                      dispatch="dropless", activation="swiglu", load_balance_loss=0.01)
    config.model.update(moe_layout="every", moe_every=1)
    common.decoder_backbone(config, arg, num_experts={"tiny": 8, "base": 8})
    return config
