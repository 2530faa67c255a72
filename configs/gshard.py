"""GShard (Lepikhin et al. 2020): top-2 with random second-expert routing, every other FFN.

Expert capacity 2S/E per group (capacity_factor 1.0 with k = 2), normalised top-2 gates, the
second expert dispatched with probability min(1, 2·g2), auxiliary loss 0.01.
"""

from configs import common


def get_config(arg: str = "tiny"):
    config = common.base()
    config.moe.update(router="gshard", num_selected_experts=2, capacity_factor=1.0,
                      eval_capacity_factor=2.0, load_balance_loss=0.01)
    config.model.update(moe_layout="every", moe_every=2)
    common.t5_backbone(config, arg, num_experts={"tiny": 8, "base": 128})
    return config
