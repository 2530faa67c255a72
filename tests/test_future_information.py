"""Future information (a decoder-only model's loss on each row's first half with another row's
second half minus with its own): exactly 0 where routing is causal, not 0 where the router
sees the whole sequence. It would read 0 for every model if both passes used the row's own
second half, and something for every model if the second pass changed the first half.
"""

import numpy as np
import pytest
from flax import nnx

from moejax.config import MoeConfig
from moejax.models import DecoderLM, ModelConfig
from moejax.train.step import FIRST_HALF, PLAIN, SHUFFLED_FUTURE, eval_step, split_future

VOCAB, LENGTH, BATCH = 32, 16, 4
HALF = LENGTH // 2


def _batch(seed: int):
    rng = np.random.default_rng(seed)
    targets = rng.integers(1, VOCAB, (BATCH, LENGTH)).astype(np.int32)
    inputs = np.concatenate([np.zeros((BATCH, 1), np.int32), targets[:, :-1]], 1)
    segments = np.ones((BATCH, LENGTH), np.int32)
    segments[:, 11:] = 2                                  # two packed documents a row
    positions = np.where(segments == 1, np.arange(LENGTH), np.arange(LENGTH) - 11)
    return {"inputs": inputs, "targets": targets, "segment_ids": segments,
            "positions": positions.astype(np.int32), "loss_mask": np.ones((BATCH, LENGTH),
                                                                         np.float32)}


@pytest.mark.parametrize("shuffled", [False, True])
def test_split_future_against_a_loop(shuffled):
    batch = _batch(0)
    out = {k: np.asarray(v) for k, v in split_future(batch, shuffled).items()}
    for b in range(BATCH):
        source = (b - 1) % BATCH if shuffled else b          # the row before, cyclically
        for t in range(LENGTH):
            for key in ("inputs", "segment_ids", "positions"):
                want = batch[key][b, t] if t < HALF else batch[key][source, t]
                assert out[key][b, t] == want, (key, b, t)
            assert out["targets"][b, t] == batch["targets"][b, t]
            assert out["loss_mask"][b, t] == (1.0 if t < HALF else 0.0)


def _model(**moe) -> DecoderLM:
    cfg = ModelConfig(arch="decoder", vocab_size=VOCAB, num_layers=2, d_model=16, num_heads=2,
                      head_dim=8, d_ff=32, moe_layout="every", moe_every=1,
                      moe=MoeConfig(num_experts=4, hidden_dim=16, causal=True, **moe))
    return DecoderLM(cfg, rngs=nnx.Rngs(params=0, dropout=1, routing=2))


def _future_information(model) -> float:
    batch = _batch(1)
    first = float(eval_step(model, batch, 0.0, FIRST_HALF)[0]["cross_entropy"])
    later = float(eval_step(model, batch, 0.0, SHUFFLED_FUTURE)[0]["cross_entropy"])
    return later - first


CAUSAL = {"dropless top-2": dict(router="top_k", num_selected_experts=2, dispatch="dropless"),
          # capacity 1.0: tokens are dropped, the earlier ones served first in their sequence
          "Switch top-1, capacity 1": dict(router="top_k", num_selected_experts=1,
                                           capacity_factor=1.0, eval_capacity_factor=1.0)}
WHOLE_SEQUENCE = {"expert choice": dict(router="expert_choice", capacity_factor=1.0,
                                        eval_capacity_factor=1.0, allow_non_causal_routing=True)}


@pytest.mark.parametrize("name", list(CAUSAL))
def test_causal_routing_takes_nothing_from_later_tokens(name):
    model = _model(**CAUSAL[name])
    assert _future_information(model) == pytest.approx(0.0, abs=1e-6)
    # the first-half loss is the plain loss over those tokens alone (a hand-made mask)
    batch = _batch(1)
    masked = dict(batch, loss_mask=np.where(np.arange(LENGTH) < HALF, 1.0, 0.0)[None]
                  * np.ones((BATCH, 1), np.float32))
    np.testing.assert_allclose(eval_step(model, batch, 0.0, FIRST_HALF)[0]["cross_entropy"],
                               eval_step(model, masked, 0.0, PLAIN)[0]["cross_entropy"],
                               rtol=1e-6)


@pytest.mark.parametrize("name", list(WHOLE_SEQUENCE))
def test_routing_over_the_whole_sequence_lets_later_tokens_change_earlier_ones(name):
    """Each expert picks its tokens from the whole row: another second half changes which
    first-half tokens it serves, so their loss changes (an untrained model: either sign)."""
    model = _model(**WHOLE_SEQUENCE[name])
    assert abs(_future_information(model)) > 1e-4
    # and through the routing alone: without MoE layers the same model is causal
    dense = DecoderLM(ModelConfig(arch="decoder", vocab_size=VOCAB, num_layers=2, d_model=16,
                                  num_heads=2, head_dim=8, d_ff=32, moe_layout="none"),
                      rngs=nnx.Rngs(params=0, dropout=1, routing=2))
    assert _future_information(dense) == pytest.approx(0.0, abs=1e-6)


def test_first_half_losses_are_not_the_whole_rows():
    """The two passes score the first half alone: its loss differs from the whole row's."""
    model = _model(**CAUSAL["dropless top-2"])
    batch = _batch(1)
    whole = float(eval_step(model, batch, 0.0, PLAIN)[0]["cross_entropy"])
    first = float(eval_step(model, batch, 0.0, FIRST_HALF)[0]["cross_entropy"])
    weight = float(eval_step(model, batch, 0.0, FIRST_HALF)[1])
    assert weight == BATCH * HALF and abs(whole - first) > 1e-4
