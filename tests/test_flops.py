"""Model FLOPs (moejax.models.flops) against counts worked by hand from the config's widths."""

import pytest

from experiments.benchmarks import train_setup
from moejax.models.flops import (active_params, active_params_by_input, train_flops_per_example,
                                 train_flops_per_token)


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


def test_encoder_decoder_flops_by_hand():
    """Switch at smoke widths: 2+2 layers (the second of each a top-1 MoE of E=4 GEGLU
    experts, the tiny size's activation), d=32, 2 heads of 16, F=64, untied head over V tokens;
    T_e encoder and T_d decoder tokens.
      attention q, k, v, o 4·d·H·Q = 4096 a layer; cross-attention k, v 2048, q, o 2048
      dense GEGLU FFN 3·d·F = 6144; MoE one expert of four 6144 + router d·E 128 = 6272
      per encoder token:  2·4096 + 6144 + 6272 = 20608, + the decoder's cross k, v 2·2048
      per decoder token:  2·4096 (self) + 2·2048 (cross q, o) + 6144 + 6272 + 32·V (head)
    per example T_e·(6·N_e + 12·H·Q·2·T_e) + T_d·(6·N_d + 12·H·Q·2·(T_d + T_e))."""
    setup = train_setup.build(train_setup.load_config("switch", dict(
        train_setup.SMOKE_OVERRIDES)), abstract=True)
    cfg = setup.model_cfg
    t_e = setup.batch["encoder_input_tokens"].shape[1]
    t_d = setup.batch["decoder_target_tokens"].shape[1]
    n_e = 20608 + 2 * 2048
    n_d = 2 * 4096 + 2 * 2048 + 6144 + 6272 + 32 * cfg.vocab_size
    assert active_params_by_input(setup.model, cfg) == {"encoder": n_e, "decoder": n_d}
    pair = 12 * 2 * 16
    want = t_e * (6 * n_e + pair * 2 * t_e) + t_d * (6 * n_d + pair * 2 * (t_d + t_e))
    lengths = {"encoder": t_e, "decoder": t_d}
    assert train_flops_per_example(setup.model, cfg, lengths) == want
    with pytest.raises(ValueError, match="decoder-only"):
        train_flops_per_token(setup.model, cfg, 32)


def test_device_peaks_from_the_datasheets():
    """MFU's denominator by jax's device_kind: v5e is 'TPU v5 lite', v5p 'TPU v5'; CPUs have
    none (only GFLOP/s is shown there); StepTimer averages its last `window` steps."""
    from moejax.train.throughput import StepTimer, peak_flops, rates

    def device(platform, kind):
        return type("Device", (), {"platform": platform, "device_kind": kind})()
    assert peak_flops(device("tpu", "TPU v5 lite")) == 197e12
    assert peak_flops(device("tpu", "TPU v5")) == 459e12
    assert peak_flops(device("tpu", "TPU v6 lite")) == 918e12
    assert peak_flops(device("tpu", "TPU v4")) == 275e12
    assert peak_flops(device("gpu", "NVIDIA H100 PCIe")) == 756e12
    assert peak_flops(device("cpu", "cpu")) is None
    timer = StepTimer(window=2)
    for seconds in (9.0, 1.0, 3.0):
        timer.add(seconds)
    assert timer.seconds == 2.0
    assert rates(2.0, 100, 8e12, 4, 1e12) == {
        "step_seconds": 2.0, "tokens_per_second": 50.0, "model_flops_per_second": 4e12,
        "mfu": 4e12 / 4e12}
    assert rates(None, 100, 8e12, 4, 1e12) == {}
