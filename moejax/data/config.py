"""The data config: which text, which tokenizer, which objective, and the batch shapes.

`default_data_config()` trains a decoder-only model on the embedded English corpus with the
byte tokenizer; `validate(config)` fails with one ConfigError line before anything is read.
"""

from __future__ import annotations

import ml_collections

from moejax.data import objectives
from moejax.errors import ConfigError, check, check_choice

OBJECTIVES = ("causal_lm", "span_corruption")
TOKENIZERS = ("byte", "sentencepiece")
DEFAULT_CORPUS = "moejax_english"


def default_data_config() -> ml_collections.ConfigDict:
    """Defaults: causal LM on the embedded corpus, byte tokens, 512-token packed rows."""
    config = ml_collections.ConfigDict()
    # Where the text comes from: any tfds dataset prepared as array_record under data_dir
    # (local or gs://). The default corpus is built there on first use; others must be prepared.
    config.tfds_name = DEFAULT_CORPUS
    config.data_dir = ml_collections.config_dict.placeholder(str)   # None: tfds's default dir
    config.text_key = "text"
    config.train_split = "train"
    config.eval_split = "validation"
    # Tokenizer: 'byte' (no file) or 'sentencepiece' (spm_model_path, e.g. T5's 32k model).
    config.tokenizer = "byte"
    config.spm_model_path = ml_collections.config_dict.placeholder(str)
    config.num_extra_ids = 100                     # T5 sentinels <extra_id_0..99>
    # Objective: 'causal_lm' (decoder-only) or 'span_corruption' (T5 encoder-decoder).
    config.objective = "causal_lm"
    config.seq_length = 512                        # decoder-only length / encoder input length
    config.targets_length = ml_collections.config_dict.placeholder(int)  # None: derived (T5)
    config.noise_density = 0.15
    config.mean_noise_span_length = 3.0
    # Batching: batch_size is global, split evenly over processes.
    config.batch_size = 8
    config.shuffle_buffer_size = 1024              # chunks mixed across documents (1: off)
    config.num_packing_bins = 64                   # first-fit packing bins (more: less padding)
    return config


def span_corruption_shapes(config) -> tuple[int, int, int]:
    """(raw tokens per example, encoder length, decoder length) for span corruption."""
    raw, needed_targets = objectives.span_corruption_budget(
        config.seq_length, config.noise_density, config.mean_noise_span_length)
    targets_length = config.targets_length if config.targets_length else needed_targets
    return raw, config.seq_length, targets_length


def validate(config) -> None:
    """Raises one ConfigError line for the first invalid field of a data config."""
    check(bool(config.tfds_name), "data.tfds_name is empty: name a tfds dataset (default "
                                  f"{DEFAULT_CORPUS!r})")
    check_choice("data.objective", config.objective, OBJECTIVES)
    check_choice("data.tokenizer", config.tokenizer, TOKENIZERS)
    check(config.batch_size >= 1, f"data.batch_size={config.batch_size} must be >= 1")
    check(config.num_packing_bins >= 1,
          f"data.num_packing_bins={config.num_packing_bins} must be >= 1")
    check(config.shuffle_buffer_size >= 1,
          f"data.shuffle_buffer_size={config.shuffle_buffer_size} must be >= 1 (1: no shuffle)")
    if config.objective == "causal_lm":
        check(config.seq_length >= 2, f"data.seq_length={config.seq_length} is too small for "
                                      "objective 'causal_lm': it needs >= 2; raise data.seq_length")
        return
    check(0.0 < config.noise_density < 1.0,
          f"data.noise_density={config.noise_density} must be in (0, 1) (T5: 0.15)")
    check(config.mean_noise_span_length >= 1.0,
          f"data.mean_noise_span_length={config.mean_noise_span_length} must be >= 1 (T5: 3)")
    minimum = objectives.min_span_corruption_inputs_length(
        config.noise_density, config.mean_noise_span_length)
    if config.seq_length < minimum:
        raise ConfigError(
            f"data.seq_length={config.seq_length} is too small for objective 'span_corruption' "
            f"(noise_density={config.noise_density}, mean_noise_span_length="
            f"{config.mean_noise_span_length} need >= {minimum} input tokens); "
            f"raise data.seq_length")
    raw, _, targets_length = span_corruption_shapes(config)
    _, needed = objectives.span_corruption_budget(
        config.seq_length, config.noise_density, config.mean_noise_span_length)
    check(targets_length >= needed,
          f"data.targets_length={targets_length} is too small for objective 'span_corruption' "
          f"with data.seq_length={config.seq_length}: it needs >= {needed}; raise "
          f"data.targets_length or leave it None")
    max_spans = int(objectives.noise_counts(
        raw, config.noise_density, config.mean_noise_span_length)[1])
    check(config.num_extra_ids >= max_spans,
          f"data.num_extra_ids={config.num_extra_ids} is too small for span corruption with "
          f"data.seq_length={config.seq_length}: up to {max_spans} sentinels; raise it")
