"""ST-MoE (Zoph et al. 2022): top-2, router z-loss, GEGLU, a dense FFN after each sparse one.

ST-MoE-Base: 16 experts every 4th FFN, capacity factor 1.25 train / 2.0 eval, auxiliary loss
0.01, router z-loss 1e-4 (1e-3 for ST-MoE-32B), batch-prioritized routing.
"""

from configs import common


def get_config(arg: str = "tiny"):
    config = common.base()
    config.model.activation = "geglu"
    config.moe.update(router="top_k", num_selected_experts=2, capacity_factor=1.25,
                      eval_capacity_factor=2.0, load_balance_loss=0.01, router_z_loss=1e-4,
                      batch_prioritized=True, activation="geglu",
                      # ST-MoE prioritises in the decoder too, although ordering a group's
                      # tokens by router probability lets later tokens take earlier tokens'
                      # slots; set False for a strictly causal decoder.
                      allow_non_causal_routing=True)
    config.model.update(moe_layout="every", moe_every=2 if arg == "tiny" else 4,
                        extra_dense_ffn_after_moe=True)
    common.t5_backbone(config, arg, num_experts={"tiny": 8, "base": 16})
    return config
