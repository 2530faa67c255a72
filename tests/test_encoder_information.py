"""Encoder information (validation loss with encoders shuffled across the batch minus the plain
loss): about 0 for a model whose targets do not depend on its encoder, large for one trained
to copy its encoder. The metric would read 0 for both if it were computed on unshuffled inputs.
"""

import ml_collections
import numpy as np
from flax import nnx

from moejax.models import ModelConfig, build_model
from moejax.train.optimizer import make_optimizer
from moejax.train.step import SHUFFLED_ENCODER, eval_step, shuffle_encoder, train_step

VOCAB, LENGTH, BATCH = 12, 8, 32


def _batch(rng, copy: bool):
    """Encoder: random tokens 2..VOCAB-1. Targets: the encoder's tokens (copy) or tokens drawn
    independently of it (a model can only learn their marginal)."""
    tokens = rng.integers(2, VOCAB, (BATCH, LENGTH)).astype(np.int32)
    targets = tokens if copy else rng.integers(2, VOCAB, (BATCH, LENGTH)).astype(np.int32)
    decoder_inputs = np.concatenate([np.zeros((BATCH, 1), np.int32), targets[:, :-1]], 1)
    ones = np.ones((BATCH, LENGTH), np.int32)
    positions = np.broadcast_to(np.arange(LENGTH, dtype=np.int32), (BATCH, LENGTH))
    return {"encoder_input_tokens": tokens, "encoder_segment_ids": ones,
            "encoder_positions": positions, "decoder_input_tokens": decoder_inputs,
            "decoder_target_tokens": targets, "decoder_segment_ids": ones,
            "decoder_positions": positions, "decoder_loss_weights": ones.astype(np.float32)}


def _trained(copy: bool, steps: int = 150):
    cfg = ModelConfig(arch="encoder_decoder", vocab_size=VOCAB, d_model=32, num_heads=2,
                      head_dim=16, d_ff=64, num_encoder_layers=1, num_decoder_layers=1,
                      moe_layout="none", relative_num_buckets=8, relative_max_distance=16)
    model = build_model(cfg, rngs=nnx.Rngs(params=0, dropout=1, routing=2))
    opt = ml_collections.ConfigDict(dict(name="adamw", learning_rate=3e-3, schedule="constant",
                                         warmup_steps=0, weight_decay=0.0, b1=0.9, b2=0.99,
                                         grad_clip_norm=0.0))
    optimizer = make_optimizer(opt, model, steps)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        train_step(model, optimizer, _batch(rng, copy), 0.0)
    return model


def _information(model, copy: bool) -> float:
    rng = np.random.default_rng(123)
    gaps = []
    for _ in range(4):
        batch = _batch(rng, copy)
        plain = float(eval_step(model, batch, 0.0)[0]["cross_entropy"])
        shuffled = float(eval_step(model, batch, 0.0, SHUFFLED_ENCODER)[0]["cross_entropy"])
        gaps.append(shuffled - plain)
    return float(np.mean(gaps))


def test_shuffle_moves_every_row_to_another_rows_encoder():
    batch = _batch(np.random.default_rng(0), copy=True)
    out = shuffle_encoder(batch)
    np.testing.assert_array_equal(out["encoder_input_tokens"][1:],
                                  batch["encoder_input_tokens"][:-1])
    np.testing.assert_array_equal(out["encoder_input_tokens"][0],
                                  batch["encoder_input_tokens"][-1])
    np.testing.assert_array_equal(out["decoder_target_tokens"], batch["decoder_target_tokens"])


def test_encoder_information_zero_without_dependence_large_for_a_copier():
    copier = _trained(copy=True)
    ignorer = _trained(copy=False)
    # the copier predicts its targets from its encoder: ln(10) = 2.3 nats of chance, far less
    # when it reads the right encoder, about chance or worse when it reads another row's
    assert _information(copier, copy=True) > 1.0
    # targets independent of the encoder: another row's encoder is as good as its own
    assert abs(_information(ignorer, copy=False)) < 0.05
