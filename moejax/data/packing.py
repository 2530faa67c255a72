"""Packing examples into fixed-length rows, and the model features of a packed row.

Variable-length examples are first-fit packed (grain's FirstFitPackIterDataset) into rows of a
fixed length: a row holds several examples one after another, `segment_ids` numbers them 1, 2, ...
(0 is padding) and `positions` counts 0, 1, ... within each. Attention must stay inside a
segment (mask[i, j] = segment_ids[i] == segment_ids[j] != 0), so packed examples never see each
other. For encoder-decoder examples the encoder and decoder rows are packed together: an
example's inputs and targets get the same segment id.
"""

from __future__ import annotations

from typing import Dict, Mapping

import grain
import numpy as np


def pack(dataset: grain.IterDataset, lengths: Mapping[str, int], *, num_bins: int,
         seed: int) -> grain.IterDataset:
    """Packs dict examples of 1-D int32 arrays; adds '<key>_segment_ids' and '<key>_positions'."""
    return grain.experimental.FirstFitPackIterDataset(
        dataset, length_struct=dict(lengths), num_packing_bins=num_bins, seed=seed,
        shuffle_bins=True)


def shift_right_by_segment(tokens: np.ndarray, positions: np.ndarray, bos_id: int = 0):
    """Teacher-forcing inputs: each token's predecessor within its segment, bos_id at starts."""
    shifted = np.concatenate([np.full_like(tokens[..., :1], bos_id), tokens[..., :-1]], axis=-1)
    return np.where(positions == 0, bos_id, shifted).astype(np.int32)


def decoder_only_features(row: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """A packed causal-LM row {'targets', ...} -> the decoder-only model features. All [L]."""
    targets = row["targets"].astype(np.int32)
    segment_ids = row["targets_segment_ids"].astype(np.int32)
    positions = row["targets_positions"].astype(np.int32)
    return {
        "inputs": shift_right_by_segment(targets, positions),
        "targets": targets,
        "segment_ids": segment_ids,
        "positions": positions,
        "loss_mask": (segment_ids > 0).astype(np.float32),
    }


def encoder_decoder_features(row: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """A packed span-corruption row {'inputs', 'targets', ...} -> T5 (t5x) feature names."""
    decoder_positions = row["targets_positions"].astype(np.int32)
    decoder_segment_ids = row["targets_segment_ids"].astype(np.int32)
    targets = row["targets"].astype(np.int32)
    return {
        "encoder_input_tokens": row["inputs"].astype(np.int32),
        "encoder_segment_ids": row["inputs_segment_ids"].astype(np.int32),
        "encoder_positions": row["inputs_positions"].astype(np.int32),
        "decoder_input_tokens": shift_right_by_segment(targets, decoder_positions),
        "decoder_target_tokens": targets,
        "decoder_segment_ids": decoder_segment_ids,
        "decoder_positions": decoder_positions,
        "decoder_loss_weights": (decoder_segment_ids > 0).astype(np.float32),
    }
