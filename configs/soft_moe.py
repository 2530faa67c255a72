"""Soft MoE (Puigcerver et al. 2023): slots take softmax mixtures of tokens; nothing dropped.

Every slot mixes all tokens of its group, so Soft MoE is not causal: here it replaces the
encoder's FFNs of a T5 model (the paper's vision encoders use it the same way), one slot per
expert.
"""

from configs import common


def get_config(arg: str = "tiny"):
    config = common.base()
    config.moe.update(router="soft_moe", slots_per_expert=1, load_balance_loss=0.0)
    config.model.update(moe_layout="every", moe_every=2, moe_stacks="encoder")
    common.t5_backbone(config, arg, num_experts={"tiny": 8, "base": 128})
    return config
