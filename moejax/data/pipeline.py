"""The input pipeline: documents -> tokens -> objective -> packed rows -> batches (grain).

    source (tfds array_record, by document)
      -> this process's documents [process_index::process_count]
      -> shuffle by seed, repeat (each epoch reshuffled)
      -> tokenize; causal LM: chunks of seq_length / span corruption: T5 examples
      -> window shuffle of the chunks (mixes long documents)
      -> first-fit packing with segment ids and positions
      -> model features -> batches of batch_size / process_count rows

Every step is deterministic for a seed and checkpointable: `Pipeline.get_state()` is a small
JSON-serialisable dict; `set_state` on a fresh pipeline built with the same arguments resumes
with exactly the batches the original would have produced next.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, Optional

import grain
import numpy as np

from moejax.data import config as data_config
from moejax.data import objectives, packing, sources, tokenizers
from moejax.errors import check

Batch = Dict[str, np.ndarray]

# Documents are read and turned into examples by 2 threads, 16 documents ahead of the packer:
# enough to keep up with training, while grain's default (16 threads, 500 documents) spends
# seconds filling its buffer before the first batch of every pipeline (each evaluation).
READ = grain.ReadOptions(num_threads=2, prefetch_buffer_size=16)

DECODER_ONLY_FEATURES = ("inputs", "targets", "segment_ids", "positions", "loss_mask")
ENCODER_DECODER_FEATURES = (
    "encoder_input_tokens", "encoder_segment_ids", "encoder_positions", "decoder_input_tokens",
    "decoder_target_tokens", "decoder_segment_ids", "decoder_positions", "decoder_loss_weights")


class DocumentExamples:
    """One document record -> its list of unpacked examples (a grain random_map)."""

    def __init__(self, config, tokenizer):
        self.text_key = config.text_key
        self.objective = config.objective
        self.tokenizer = tokenizer
        self.seq_length = config.seq_length
        self.noise_density = config.noise_density
        self.mean_noise_span_length = config.mean_noise_span_length
        if self.objective == "span_corruption":
            self.raw_length = data_config.span_corruption_shapes(config)[0]

    def __call__(self, record, rng: np.random.Generator):
        tokens = self.tokenizer.encode(sources.record_text(record, self.text_key))   # [N]
        if self.objective == "causal_lm":
            chunks = objectives.causal_lm_chunks(tokens, self.tokenizer.eos_id, self.seq_length)
            return [{"targets": chunk} for chunk in chunks]
        return [objectives.span_corruption(
                    chunk, rng, eos_id=self.tokenizer.eos_id,
                    vocab_size=self.tokenizer.vocab_size, noise_density=self.noise_density,
                    mean_noise_span_length=self.mean_noise_span_length)
                for chunk in objectives.span_corruption_chunks(tokens, self.raw_length)]


class _Unlist(grain.experimental.FlatMapTransform):
    max_fan_out = 1 << 20

    def flat_map(self, element):
        return element


def _pad_batch(batch: Batch, batch_size: int) -> Batch:
    """Zero rows (segment 0, no loss) complete the last batch of a finite pipeline."""
    missing = batch_size - next(iter(batch.values())).shape[0]
    if missing == 0:
        return batch
    return {k: np.concatenate([v, np.zeros((missing,) + v.shape[1:], v.dtype)])
            for k, v in batch.items()}


class Pipeline:
    """An iterator of batches (dicts of NumPy arrays) with get_state()/set_state()."""

    def __init__(self, dataset: grain.IterDataset, tokenizer, feature_lengths: Dict[str, int],
                 batch_size: int):
        self.dataset = dataset
        self.iterator = iter(dataset)            # a grain DatasetIterator (grain.checkpoint)
        self.tokenizer = tokenizer
        self.feature_lengths = feature_lengths
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        return next(self.iterator)

    def empty_batch(self) -> Batch:
        """A batch of padding (segment 0, no loss): what a process whose share of a finite
        split has run out feeds while the others finish (multi-host evaluation)."""
        if "inputs" in self.feature_lengths:
            lengths = {k: self.feature_lengths[
                "inputs" if k.startswith("encoder") else "targets"]
                for k in ENCODER_DECODER_FEATURES}
        else:
            lengths = {k: self.feature_lengths["targets"] for k in DECODER_ONLY_FEATURES}
        return {k: np.zeros((self.batch_size, n), np.float32 if k.endswith(("mask", "weights"))
                            else np.int32) for k, n in lengths.items()}

    def get_state(self) -> Dict[str, Any]:
        """The position of the iterator, to save with a checkpoint."""
        return self.iterator.get_state()

    def set_state(self, state: Dict[str, Any]) -> None:
        """Resumes from a state returned by get_state() of an identically built pipeline."""
        self.iterator.set_state(state)


def make_pipeline(config, *, split: str, seed: int, process_index: int = 0,
                  process_count: int = 1, num_epochs: Optional[int] = None) -> Pipeline:
    """The batches of `split` for this process.

    config: a data config (moejax.data.config.default_data_config()).
    split: a tfds split string ('train', 'validation', 'train[:90%]').
    seed: shuffling, span noise and bin order all derive from it.
    process_index, process_count: this process reads documents process_index::process_count;
      its batches hold config.batch_size / process_count rows.
    num_epochs: None repeats forever (training); 1 for one evaluation pass (the last batch is
      completed with zero rows whose segment ids and loss weights are 0).

    Batches, all [batch_size / process_count, length]: decoder-only (causal_lm) DECODER_ONLY_FEATURES
    with length seq_length; encoder-decoder (span_corruption) ENCODER_DECODER_FEATURES with
    encoder length seq_length and decoder length targets_length. Tokens and ids are int32, loss
    weights float32.
    """
    data_config.validate(config)
    check(process_count >= 1 and 0 <= process_index < process_count,
          f"process_index={process_index} must be in [0, process_count={process_count})")
    check(config.batch_size % process_count == 0,
          f"data.batch_size={config.batch_size} must be divisible by process_count="
          f"{process_count}")
    check(num_epochs is None or num_epochs >= 1, f"num_epochs={num_epochs} must be None or >= 1")
    batch_size = config.batch_size // process_count
    tokenizer = tokenizers.make_tokenizer(config)
    if config.objective == "causal_lm":
        lengths = {"targets": config.seq_length}
        features = packing.decoder_only_features
    else:
        _, inputs_length, targets_length = data_config.span_corruption_shapes(config)
        lengths = {"inputs": inputs_length, "targets": targets_length}
        features = packing.encoder_decoder_features

    source = sources.open_source(config, split)
    documents = grain.MapDataset.source(source)[process_index::process_count]
    check(len(documents) > 0, f"split={split!r} of {config.tfds_name!r} has {len(source)} "
                              f"documents, too few for process_count={process_count}")
    documents = documents.shuffle(seed=seed).repeat(num_epochs)
    examples = documents.random_map(DocumentExamples(config, tokenizer), seed=seed + 1)
    dataset = grain.experimental.FlatMapIterDataset(examples.to_iter_dataset(READ), _Unlist())
    if config.shuffle_buffer_size > 1:
        dataset = grain.experimental.WindowShuffleIterDataset(
            dataset, window_size=config.shuffle_buffer_size, seed=seed + 2)
    dataset = packing.pack(dataset, lengths, num_bins=config.num_packing_bins, seed=seed + 3)
    dataset = dataset.map(features).batch(batch_size, drop_remainder=False)
    dataset = dataset.map(lambda batch: _pad_batch(batch, batch_size))
    feature_lengths = {"targets": config.seq_length} if config.objective == "causal_lm" else {
        "inputs": lengths["inputs"], "targets": lengths["targets"]}
    return Pipeline(dataset, tokenizer, feature_lengths, batch_size)
