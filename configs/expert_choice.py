"""Expert-choice routing (Zhou et al. 2022): each expert picks its top-C tokens, cf = 2.

Expert choice looks at every token of a group, so it is not causal: here it sparsifies the
T5 encoder only. The paper trained decoder-only models with it; to reproduce that (and leak
future tokens into training), use configs/glam.py with --config.moe.router=expert_choice
--config.moe.allow_non_causal_routing=True.
"""

from configs import common


def get_config(arg: str = "tiny"):
    config = common.base()
    config.moe.update(router="expert_choice", capacity_factor=2.0, eval_capacity_factor=2.0,
                      load_balance_loss=0.0)
    config.model.update(moe_layout="every", moe_every=2, moe_stacks="encoder")
    common.t5_backbone(config, arg, num_experts={"tiny": 8, "base": 32})
    return config
