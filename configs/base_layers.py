"""BASE layers (Lewis et al. 2021) with Sinkhorn-balanced assignment (S-BASE, Clark et al.
2022): every expert takes exactly S/E tokens of a group in training, greedy top-1 at
evaluation, no auxiliary balance loss. T5 encoder-decoder backbone with experts in every other
FFN of the encoder only: the balanced assignment looks at the whole group, so it is not causal.

    python -m experiments.train --config=configs/base_layers.py:tiny --workdir=DIR

Sizes: tiny; base (T5-Base, 128 experts, as configs/switch.py's base).
"""

from configs import common


def get_config(arg: str = "tiny"):
    config = common.base()
    config.moe.update(router="balanced", num_selected_experts=1, capacity_factor=1.0,
                      eval_capacity_factor=2.0, load_balance_loss=0.0, expert_init_scale=0.1,
                      router_init_std=0.02, min_capacity=1)
    config.model.update(moe_layout="every", moe_every=2, moe_stacks="encoder")
    common.t5_backbone(config, arg, num_experts={"tiny": 8, "base": 128})
    return config
