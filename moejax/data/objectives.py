"""Training objectives as pure NumPy functions of one document's token ids.

causal_lm: the document plus EOS, cut into chunks of at most seq_length tokens.
span_corruption: T5's denoising objective (Raffel et al. 2020, section 3.1.4; the
  `span_corruption` preprocessor of t5.data): about noise_density of the tokens are dropped in
  spans of mean length mean_noise_span_length; the inputs keep the rest with one sentinel per
  dropped span, the targets list each sentinel followed by the tokens it replaced.
"""

from __future__ import annotations

import math
from typing import Dict, List, Tuple

import numpy as np

from moejax.errors import check


def causal_lm_chunks(tokens: np.ndarray, eos_id: int, seq_length: int) -> List[np.ndarray]:
    """[N] tokens -> chunks of tokens + [EOS], each at most seq_length long (the last shorter)."""
    tokens = np.append(np.asarray(tokens, np.int32), np.int32(eos_id))
    return [tokens[i:i + seq_length] for i in range(0, len(tokens), seq_length)]


def noise_counts(length, noise_density: float, mean_noise_span_length: float):
    """(noise tokens, noise spans) of random_spans_noise_mask for sequences of `length`."""
    length = np.maximum(np.asarray(length, np.int64), 2)
    num_noise = np.clip(np.rint(length * noise_density).astype(np.int64), 1, length - 1)
    num_spans = np.maximum(np.rint(num_noise / mean_noise_span_length).astype(np.int64), 1)
    # Every noise span is preceded by a non-noise span (T5 does not need this clip at 15%).
    num_spans = np.minimum(num_spans, np.minimum(num_noise, length - num_noise))
    return num_noise, num_spans


def span_corruption_lengths(length, noise_density: float = 0.15,
                            mean_noise_span_length: float = 3.0):
    """(inputs length, targets length), EOS included, of a corrupted sequence of `length` tokens."""
    length = np.asarray(length, np.int64)
    num_noise, num_spans = noise_counts(length, noise_density, mean_noise_span_length)
    return length - num_noise + num_spans + 1, num_noise + num_spans + 1


def span_corruption_budget(inputs_length: int, noise_density: float = 0.15,
                           mean_noise_span_length: float = 3.0) -> Tuple[int, int]:
    """T5's random_spans_helper: (raw tokens per example, targets length) for inputs_length.

    The raw length is the largest n such that every sequence of 2..n tokens corrupts to at most
    inputs_length inputs; the targets length is the longest target any of them produces
    (inputs_length 512 -> (568, 114), as in T5).
    """
    n = np.arange(2, 2 * inputs_length + 8)
    inputs, targets = span_corruption_lengths(n, noise_density, mean_noise_span_length)
    too_long = np.nonzero(inputs > inputs_length)[0]
    count = int(too_long[0]) if too_long.size else n.size
    if count == 0:
        return 1, 0
    return int(n[count - 1]), int(targets[:count].max())


def min_span_corruption_inputs_length(noise_density: float, mean_noise_span_length: float) -> int:
    """Shortest inputs_length whose examples hold one noise span of mean length on average."""
    needed = math.ceil(mean_noise_span_length / noise_density)
    inputs, _ = span_corruption_lengths(needed, noise_density, mean_noise_span_length)
    return int(inputs)


def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator):
    """Lengths of a uniformly random split of num_items into num_segments non-empty parts."""
    first_in_segment = np.zeros(num_items, dtype=bool)
    cuts = rng.permutation(num_items - 1)[:num_segments - 1] + 1
    first_in_segment[cuts] = True
    first_in_segment[0] = True
    segment_id = np.cumsum(first_in_segment) - 1
    return np.bincount(segment_id, minlength=num_segments)


def random_spans_noise_mask(length: int, noise_density: float, mean_noise_span_length: float,
                            rng: np.random.Generator) -> np.ndarray:
    """T5's random_spans_noise_mask: [length] bool, True on noise; spans alternate starting
    with non-noise and end with noise."""
    orig_length = length
    length = max(length, 2)
    num_noise, num_spans = (int(x) for x in
                            noise_counts(length, noise_density, mean_noise_span_length))
    noise_lengths = _random_segmentation(num_noise, num_spans, rng)
    nonnoise_lengths = _random_segmentation(length - num_noise, num_spans, rng)
    interleaved = np.stack([nonnoise_lengths, noise_lengths], axis=1).reshape(-1)
    span_of_token = np.repeat(np.arange(2 * num_spans), interleaved)          # [length]
    return (span_of_token % 2 == 1)[:orig_length]


def noise_span_to_unique_sentinel(tokens: np.ndarray, noise_mask: np.ndarray,
                                  sentinel_ids: np.ndarray) -> np.ndarray:
    """Replaces each run of masked tokens by the next sentinel (sentinel_ids[k] for run k)."""
    previous = np.concatenate([[False], noise_mask[:-1]])
    first_noise = noise_mask & ~previous
    span_index = np.cumsum(first_noise) - 1
    out = np.where(first_noise, sentinel_ids[np.maximum(span_index, 0)], tokens)
    return out[~(noise_mask & previous)].astype(np.int32)


def span_corruption(tokens: np.ndarray, rng: np.random.Generator, *, eos_id: int,
                    vocab_size: int, noise_density: float = 0.15,
                    mean_noise_span_length: float = 3.0) -> Dict[str, np.ndarray]:
    """One span-corrupted example of `tokens` [N], N >= 2: {'inputs', 'targets'}, EOS-ended.

    Sentinel k is vocab_size - 1 - k (T5's <extra_id_k>).
    """
    tokens = np.asarray(tokens, np.int32)
    check(len(tokens) >= 2, "span corruption needs sequences of at least 2 tokens")
    mask = random_spans_noise_mask(len(tokens), noise_density, mean_noise_span_length, rng)
    sentinels = vocab_size - 1 - np.arange(len(tokens) + 1)
    inputs = noise_span_to_unique_sentinel(tokens, mask, sentinels)
    targets = noise_span_to_unique_sentinel(tokens, ~mask, sentinels)
    eos = np.array([eos_id], np.int32)
    return {"inputs": np.concatenate([inputs, eos]), "targets": np.concatenate([targets, eos])}


def span_corruption_chunks(tokens: np.ndarray, raw_length: int) -> List[np.ndarray]:
    """[N] document tokens -> ceil(N / raw_length) near-equal chunks (none of 1 token)."""
    tokens = np.asarray(tokens, np.int32)
    if len(tokens) < 2:
        return []
    return np.array_split(tokens, -(-len(tokens) // raw_length))
