"""moejax.data: text, tokenizers, objectives and grain input pipelines (no TensorFlow).

    config = default_data_config()                # embedded English corpus, byte tokens
    train = make_pipeline(config, split=config.train_split, seed=0,
                          process_index=jax.process_index(), process_count=jax.process_count())
    batch = next(train)                           # dict of [B, L] NumPy arrays
    state = train.get_state()                     # save with the checkpoint; later set_state()

The names below load their module on first use (PEP 562), so code that needs only the data
config (model building, benchmarks, ahead-of-time compiles) imports neither grain nor
tensorflow-datasets.
"""

import importlib

_MODULE_OF = {
    "default_data_config": "config", "validate": "config",
    "make_pipeline": "pipeline", "Pipeline": "pipeline",
    "DECODER_ONLY_FEATURES": "pipeline", "ENCODER_DECODER_FEATURES": "pipeline",
    "ByteTokenizer": "tokenizers", "SentencePieceTokenizer": "tokenizers",
    "make_tokenizer": "tokenizers",
}
__all__ = list(_MODULE_OF)


def __getattr__(name):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'moejax.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"moejax.data.{_MODULE_OF[name]}"), name)
