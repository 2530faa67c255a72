"""Autoregressive decoding with a key/value cache: text from a decoder-only LM, span filling
from an encoder-decoder.

`init_cache(model, batch, max_length)` gives every decoder self-attention layer zeroed key and
value caches; each step then runs only the new tokens, writes their keys and values at
`decode_index` and attends to the cached positions before them. The logits equal those of the
full forward pass over the same tokens (tests/test_decode.py), as long as the MoE layers route
each token as they would there: a decode step's routing groups hold only the step's tokens,
so a capacity-limited layer never drops one at a step of a single token (its capacity is at
least min_capacity ≥ 1 slot per expert), while the full pass over a whole sequence may drop.
`dropless` dispatch routes every token to its k experts in both (Mixtral, DeepSeek-V3).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from moejax.models.block import Block


def init_cache(model: nnx.Module, batch: int, max_length: int) -> None:
    """Zeroed self-attention caches for `batch` sequences of up to `max_length` decoder tokens."""
    stack = model.decoder if hasattr(model, "decoder") else model.layers
    for _, node in nnx.iter_graph(stack):
        if isinstance(node, Block):
            node.attn.init_cache(batch, max_length)


def _counts(stats):
    """Each MoE layer's assignments per expert [layers, E] in this step (None if no MoE)."""
    return stats.get("expert_counts") if stats else None


@nnx.jit
def decoder_step(model, tokens: jax.Array, index: jax.Array):
    """Decoder-only LM: logits [B, L, V] of tokens [B, L] at positions index + [0, L), and
    the MoE layers' expert counts [layers, E] of these tokens (None without MoE layers)."""
    logits, stats = model(tokens, deterministic=True, decode_index=index)
    return logits, _counts(stats)


@nnx.jit
def encode(model, tokens: jax.Array, segment_ids: jax.Array) -> jax.Array:
    """Encoder-decoder: the encoder's output [B, Le, D] for inputs [B, Le]."""
    return model.encode(tokens, segment_ids, True)[0]


@nnx.jit
def target_step(model, tokens: jax.Array, context: jax.Array, segment_ids: jax.Array,
                index: jax.Array):
    """Encoder-decoder: logits [B, L, V] of decoder tokens [B, L] at index + [0, L), and the
    decoder's MoE expert counts [layers, E] (as decoder_step)."""
    logits, stats = model.decode(tokens, context, segment_ids, None, True, index)
    return logits, _counts(stats)


def choose(logits: jax.Array, key: jax.Array, temperature: float, top_k: Optional[int]
           ) -> jax.Array:
    """Next tokens [B] from logits [B, V]: argmax at temperature 0, else a draw from
    softmax(logits / temperature) over the top_k most likely tokens (all if None)."""
    if temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    if top_k:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]                            # [B, 1]
        logits = jnp.where(logits >= kth, logits, -jnp.inf)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def generate(model, prompt: jax.Array, max_new_tokens: int, key: jax.Array, *,
             temperature: float = 1.0, top_k: Optional[int] = None,
             on_token=None) -> jax.Array:
    """New tokens [B, max_new_tokens] after prompt [B, P].

    Decoder-only: the prompt is the text so far. Encoder-decoder: the prompt is the encoder's
    input (with sentinels where spans are missing) and the decoder starts from token 0, as in
    T5. on_token(step, tokens [B], counts), if given, sees each step's tokens as they come,
    with the expert counts [MoE layers, E] of the step's input tokens (the experts that the
    token before each new one went through; None without MoE layers)."""
    batch, length = prompt.shape
    encoder_decoder = hasattr(model, "encode")
    if encoder_decoder:
        segments = jnp.ones_like(prompt)
        context = encode(model, prompt, segments)
        init_cache(model, batch, max_new_tokens)
        step = lambda tokens, index: target_step(model, tokens, context, segments, index)
        tokens, index = jnp.zeros((batch, 1), jnp.int32), 0
    else:
        init_cache(model, batch, length + max_new_tokens)
        step = lambda tokens, index: decoder_step(model, tokens, index)
        tokens, index = prompt, 0
    out = []
    for i in range(max_new_tokens):
        logits, counts = step(tokens, jnp.asarray(index, jnp.int32))
        key, draw = jax.random.split(key)
        new = choose(logits[:, -1], draw, temperature, top_k)
        if on_token is not None:
            on_token(i, new, counts)
        out.append(new)
        index += tokens.shape[1]
        tokens = new[:, None]
    return jnp.stack(out, axis=1)
