"""Switch Transformer (Fedus et al. 2021): top-1 routing, T5 encoder-decoder backbone.

    python -m experiments.train --config=configs/switch.py:tiny --workdir=DIR

Sizes: tiny (2-core CPU, minutes; gated-GELU FFNs, as every tiny T5 config), base (Switch-Base:
T5-Base with ReLU FFNs and 128 experts in every other FFN, capacity factor 1.25 train / 2.0
eval, α = 0.01, init scale 0.1, Adafactor), and tiny_lm:
Switch routing on the tiny decoder-only byte LM with gated-GELU FFNs, where the recipes judge
the paper's quality claims at CPU budgets (configs/common.py, TINY_LM).

The paper's init scale 0.1 applies to every weight matrix; this config reduces the experts'
only (moe.expert_init_scale), as the recipe runs in docs/RESULTS.md did. Add
`--config.model.init_scale=0.1` for the paper's (the precision recipe compares both).
"""

from configs import common


def get_config(arg: str = "tiny"):
    config = common.base()
    config.moe.update(router="top_k", num_selected_experts=1, capacity_factor=1.25,
                      eval_capacity_factor=2.0, load_balance_loss=0.01, expert_init_scale=0.1,
                      router_init_std=0.02, min_capacity=4)
    config.model.update(moe_layout="every", moe_every=2)
    common.t5_backbone(config, arg, num_experts={"tiny": 8, "base": 128})
    return config
