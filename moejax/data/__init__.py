"""moejax.data: text, tokenizers, objectives and grain input pipelines (no TensorFlow).

    config = default_data_config()                # embedded English corpus, byte tokens
    train = make_pipeline(config, split=config.train_split, seed=0,
                          process_index=jax.process_index(), process_count=jax.process_count())
    batch = next(train)                           # dict of [B, L] NumPy arrays
    state = train.get_state()                     # save with the checkpoint; later set_state()
"""

from moejax.data.config import default_data_config, validate
from moejax.data.pipeline import (DECODER_ONLY_FEATURES, ENCODER_DECODER_FEATURES, Pipeline,
                                  make_pipeline)
from moejax.data.tokenizers import ByteTokenizer, SentencePieceTokenizer, make_tokenizer

__all__ = ["default_data_config", "validate", "make_pipeline", "Pipeline",
           "DECODER_ONLY_FEATURES", "ENCODER_DECODER_FEATURES", "ByteTokenizer",
           "SentencePieceTokenizer", "make_tokenizer"]
