"""Hierarchical mixture of experts (Jordan & Jacobs 1994), sparse form: each token's top-1 group
of experts, then its top-1 expert within it, weighted by the product of the two gates; T5
encoder-decoder backbone with experts in every other FFN (Switch's layout and capacity
factors, so it compares with configs/switch.py at the same per-token compute).

    python -m experiments.train --config=configs/hierarchical.py:tiny --workdir=DIR

The paper's dense form is --config.moe.router=hierarchical_dense (every expert on every token).
Sizes: tiny (8 experts in 2 groups); base (T5-Base, 128 experts in 8 groups).
"""

from configs import common


def get_config(arg: str = "tiny"):
    config = common.base()
    config.moe.update(router="hierarchical", num_selected_experts=1, capacity_factor=1.25,
                      eval_capacity_factor=2.0, load_balance_loss=0.01, expert_init_scale=0.1,
                      router_init_std=0.02, min_capacity=4,
                      num_expert_groups=2 if arg == "tiny" else 8)
    config.model.update(moe_layout="every", moe_every=2)
    common.t5_backbone(config, arg, num_experts={"tiny": 8, "base": 128})
    return config
