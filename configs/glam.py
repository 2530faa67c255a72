"""GLaM (Du et al. 2022): decoder-only, top-2 of 64 experts in every other FFN, GEGLU-style GLU.

Capacity factor 2 per the GShard top-2 rule (1.0 with k = 2 here), auxiliary loss 0.01.
"""

from configs import common


def get_config(arg: str = "tiny"):
    config = common.base()
    config.model.activation = "geglu"
    config.moe.update(router="top_k", num_selected_experts=2, renormalize_gates=True,
                      capacity_factor=1.0, eval_capacity_factor=2.0, load_balance_loss=0.01,
                      activation="geglu")
    config.model.update(moe_layout="every", moe_every=2)
    common.decoder_backbone(config, arg, num_experts={"tiny": 8, "base": 64})
    return config
