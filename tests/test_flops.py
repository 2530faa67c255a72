"""Model FLOPs (moejax.models.flops) against counts worked by hand from the config's widths."""

import pytest

from experiments.benchmarks import train_setup
from moejax.models.flops import active_params, train_flops_per_token


def smoke_glam(**overrides):
    config = train_setup.load_config("glam", {**dict(train_setup.SMOKE_OVERRIDES), **overrides})
    return train_setup.build(config, abstract=True)


def test_glam_active_parameters_and_flops_by_hand():
    """GLaM tiny at smoke widths: 4 layers, every other FFN a top-2 MoE of E=4 GEGLU experts,
    d=32, 2 heads of 16, F=64, untied head over V tokens, T=32.
      attention per layer 4·d·H·Q = 4·32·32 = 4096, four layers:      16384
      dense GEGLU FFN 3·d·F = 6144, two layers:                          12288
      MoE: k of E experts 2·6144 + router d·E 128 = 12416, two layers:  24832
      head d·V = 32·V (the input embedding is a lookup: not counted)
    per token 6·N + 12·L·H·Q·T = 6·N + 12·4·2·16·32."""
    setup = smoke_glam()
    vocab = setup.model_cfg.vocab_size
    n = 16384 + 12288 + 24832 + 32 * vocab
    assert active_params(setup.model, setup.model_cfg) == n
    assert train_flops_per_token(setup.model, setup.model_cfg, 32) == 6 * n + 12 * 4 * 2 * 16 * 32


def test_dense_baseline_has_the_moe_active_width_and_top1_halves_the_experts():
    """moe_as_dense: each MoE FFN one GEGLU FFN of width k·F = 128 (3·32·128 = 12288), no
    router; top-1: one expert (6144) plus the router (128)."""
    dense, top1 = smoke_glam(**{"model.moe_as_dense": True}), smoke_glam(
        **{"moe.num_selected_experts": 1, "moe.renormalize_gates": False})
    head = 32 * dense.model_cfg.vocab_size
    assert active_params(dense.model, dense.model_cfg) == 16384 + 12288 + 2 * 12288 + head
    assert active_params(top1.model, top1.model_cfg) == 16384 + 12288 + 2 * 6272 + head


def test_encoder_decoder_is_refused():
    setup = train_setup.build(train_setup.load_config("switch", dict(
        train_setup.SMOKE_OVERRIDES)), abstract=True)
    with pytest.raises(ValueError, match="decoder-only"):
        train_flops_per_token(setup.model, setup.model_cfg, 32)
