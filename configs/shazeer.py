"""Noisy top-k gating (Shazeer et al. 2017) in a decoder-only LM.

Trainable noise through softplus; importance and load losses with w_importance = w_load = 0.1
(the paper's values); k = 2 here (the paper used k = 4 over flat MoEs of up to 256 experts).
"""

from configs import common


def get_config(arg: str = "tiny"):
    config = common.base()
    config.moe.update(router="noisy_top_k", num_selected_experts=2, capacity_factor=1.25,
                      eval_capacity_factor=2.0, load_balance_loss=0.0, importance_loss=0.1,
                      load_loss=0.1)
    config.model.update(moe_layout="every", moe_every=2)
    common.decoder_backbone(config, arg, num_experts={"tiny": 8, "base": 64})
    return config
