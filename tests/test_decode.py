"""Decoding with a key/value cache (moejax.models.decode): the logits of an incremental
decode, one token at a time after a prompt, equal those of the full forward pass over the
same tokens (the independent computation: no cache, one causal pass)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import config_files
from moejax.models import init_model
from moejax.models import decode
from moejax.train.config import resolve

MICRO = {"model.d_model": 32, "model.num_heads": 2, "model.head_dim": 16, "model.d_ff": 64,
         "moe.hidden_dim": 32}


def micro_model(family, **overrides):
    config = config_files.load(family, "tiny", {**MICRO, **overrides})
    if config.model.arch == "decoder":
        config.model.num_layers = 3                       # a segment that does not repeat
    return init_model(resolve(config, 300), seed=0)


def open_twin(path, size):
    """A tiny twin of a published architecture (configs/open)."""
    config = config_files.load(path, size)
    return init_model(resolve(config, 300), seed=0)


@pytest.mark.parametrize("make", [
    lambda: micro_model("glam", **{"moe.eval_capacity_factor": 8.0}),   # capacity, no drops
    lambda: micro_model("mixtral"),                                     # dropless, SwiGLU, RoPE
    # grouped-query attention (8 query heads per key/value head), per-head QK-norm
    lambda: open_twin("configs/open/qwen.py", "qwen3_30b_a3b_tiny"),
    # multi-head latent attention caching the latent (no query compression), a dense first
    # layer, shared experts, DeepSeek-V2 routing
    lambda: open_twin("configs/open/deepseek.py", "v2_lite_tiny"),
], ids=["glam", "mixtral", "qwen3-gqa-qk-norm", "deepseek-v2-mla"])
def test_decoder_incremental_logits_equal_the_full_pass(make):
    model = make()
    tokens = jax.random.randint(jax.random.key(1), (2, 12), 3, 300)
    full, _ = model(tokens, deterministic=True)                             # [B, 12, V]
    decode.init_cache(model, batch=2, max_length=12)
    pieces = [decode.decoder_step(model, tokens[:, :5], jnp.int32(0))[0]]      # a 5-token prompt
    for t in range(5, 12):
        pieces.append(decode.decoder_step(model, tokens[:, t:t + 1], jnp.int32(t))[0])
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, rtol=2e-4, atol=2e-4)


def test_encoder_decoder_incremental_logits_equal_the_full_pass():
    """T5 relative position biases and cross-attention, decoder fed one target at a time."""
    model = micro_model("switch", **{"moe.eval_capacity_factor": 8.0})
    inputs = jax.random.randint(jax.random.key(2), (2, 10), 3, 300)
    targets = jax.random.randint(jax.random.key(3), (2, 6), 3, 300)
    full, _ = model(inputs, targets, deterministic=True)
    segments = jnp.ones_like(inputs)
    context = decode.encode(model, inputs, segments)
    decode.init_cache(model, batch=2, max_length=6)
    pieces = [decode.target_step(model, targets[:, t:t + 1], context, segments,
                                  jnp.int32(t))[0] for t in range(6)]
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, rtol=2e-4, atol=2e-4)


def test_greedy_generation_continues_with_the_full_pass_argmax():
    """5 prompt tokens and 7 new ones: the shapes of the glam test above (compiled once)."""
    model = micro_model("glam", **{"moe.eval_capacity_factor": 8.0})
    prompt = jax.random.randint(jax.random.key(4), (2, 5), 3, 300)
    new = decode.generate(model, prompt, 7, jax.random.key(0), temperature=0.0)
    sequence = jnp.concatenate([prompt, new], axis=1)
    full, _ = model(sequence, deterministic=True)
    np.testing.assert_array_equal(new, jnp.argmax(full[:, 4:-1], axis=-1))


def test_top_k_draws_only_the_k_most_likely():
    logits = jnp.array([[0.0, 5.0, 4.0, -1.0, 3.0]])
    draws = {int(decode.choose(logits, jax.random.key(i), 1.0, 2)[0]) for i in range(50)}
    assert draws == {1, 2}
    assert int(decode.choose(logits, jax.random.key(0), 0.0, None)[0]) == 1
