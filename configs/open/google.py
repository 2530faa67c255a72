"""The Google papers' largest MoE models at their published sizes (the families'
trainable sizes are configs/glam.py, switch.py and st_moe.py).

- glam_64b_64e (Du et al. 2022, GLaM, Table 4): decoder-only, 64 layers, d_model 8192,
  128 heads of 128, MoE of 64 experts (top-2) in every other layer; dense FFNs gated-GELU of
  width 32768, experts GELU FFNs of width 32768 (two matrices: with gated experts the total
  would be 1.7T), vocabulary 256K, one embedding matrix. Relative position biases are RoPE
  here (no parameters either way).
- switch_c (Fedus et al. 2021, Switch Transformers, Table 9): T5 encoder-decoder, 15 + 15
  layers, d_model 2080, d_ff 6144, 32 heads of 64, every FFN a top-1 MoE of 2048 ReLU experts,
  vocabulary 32128 (T5's), tied embeddings.
- st_moe_32b (Zoph et al. 2022, ST-MoE, Table 3): T5.1.1 encoder-decoder, 24 + 24 layers,
  d_model 5120, d_ff 20480 (GEGLU), 64 heads of 128, top-2 MoE of 64 experts in every fourth
  FFN, each followed by a dense FFN, router z-loss 1e-3, vocabulary 32128, untied.
"""

from configs.open import architecture
from configs.open.architecture import Published

MODELS = {
    "glam_64b_64e": dict(
        model=dict(arch="decoder", vocab_size=256000, d_model=8192, num_layers=64,
                   num_heads=128, head_dim=128, d_ff=32768, activation="geglu",
                   tie_embeddings=True, moe_layout="every", moe_every=2),
        moe=dict(router="top_k", num_experts=64, num_selected_experts=2, hidden_dim=32768,
                 renormalize_gates=True, capacity_factor=1.0, eval_capacity_factor=2.0,
                 activation="gelu", load_balance_loss=0.01)),
    "switch_c": dict(
        model=dict(arch="encoder_decoder", vocab_size=32128, d_model=2080,
                   num_encoder_layers=15, num_decoder_layers=15, num_heads=32, head_dim=64,
                   d_ff=6144, activation="relu", tie_embeddings=True, moe_layout="every",
                   moe_every=1),
        moe=dict(router="top_k", num_experts=2048, num_selected_experts=1, hidden_dim=6144,
                 capacity_factor=1.25, eval_capacity_factor=2.0, activation="relu",
                 load_balance_loss=0.01, router_z_loss=1e-3)),
    "st_moe_32b": dict(
        model=dict(arch="encoder_decoder", vocab_size=32128, d_model=5120,
                   num_encoder_layers=24, num_decoder_layers=24, num_heads=64, head_dim=128,
                   d_ff=20480, activation="geglu", moe_layout="every", moe_every=4,
                   extra_dense_ffn_after_moe=True),
        moe=dict(router="top_k", num_experts=64, num_selected_experts=2, hidden_dim=20480,
                 capacity_factor=1.25, eval_capacity_factor=2.0, activation="geglu",
                 load_balance_loss=0.01, router_z_loss=1e-3)),
}

PUBLISHED = {
    "glam_64b_64e": Published("1.2T", "96.6B", "Du et al. 2022, GLaM, Table 4",
                              "total rounded to two figures"),
    "switch_c": Published("1571B", None, "Fedus et al. 2021, Switch Transformers, Table 9",
                          "the paper gives no active count"),
    "st_moe_32b": Published("269B", None, "Zoph et al. 2022, ST-MoE, Table 3",
                            "FLOP-matched to a 32B dense model; no active count"),
}


def get_config(arg: str = "tiny"):
    return architecture.get_config(arg, MODELS)
