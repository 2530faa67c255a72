"""Dense T5.1.1 baseline (Raffel et al. 2020): the Switch paper's comparison point.

Same backbone and per-token FLOPs as configs/switch.py, without experts.
"""

from configs import common


def get_config(arg: str = "tiny"):
    config = common.base()
    config.model.moe_layout = "none"
    common.t5_backbone(config, arg, num_experts={"tiny": 8, "base": 8})
    return config
