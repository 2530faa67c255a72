"""Trains a T5-style SentencePiece model on a tfds text split (default: the embedded corpus).

    python -m experiments.train_tokenizer --output_prefix=/tmp/spm/moejax_8k --vocab_size=8000

then train with --config.data.tokenizer=sentencepiece
--config.data.spm_model_path=/tmp/spm/moejax_8k.model. The model has pad 0, eos 1, unk 2 and no
bos; moejax adds data.num_extra_ids sentinels on top (T5's <extra_id_i>).
"""

import os
import sys

from absl import flags, logging

from experiments import cli
from moejax.data import config as data_config
from moejax.data import sources, tokenizers

_OUTPUT_PREFIX = flags.DEFINE_string(
    "output_prefix", None, "Writes OUTPUT_PREFIX.model and OUTPUT_PREFIX.vocab.", required=True)
_VOCAB_SIZE = flags.DEFINE_integer("vocab_size", 8000, "Pieces, before the sentinel ids.")
_MODEL_TYPE = flags.DEFINE_enum("model_type", "unigram", ["unigram", "bpe", "char", "word"],
                                "SentencePiece model type (T5: unigram).")
_TFDS_NAME = flags.DEFINE_string("tfds_name", data_config.DEFAULT_CORPUS,
                                 "A tfds dataset prepared as array_record.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data_dir (None: tfds default).")
_SPLIT = flags.DEFINE_string("split", "train", "The split to train on.")
_TEXT_KEY = flags.DEFINE_string("text_key", "text", "The text feature.")
_MAX_DOCUMENTS = flags.DEFINE_integer("max_documents", None, "Read at most this many documents.")
_INPUT_SENTENCE_SIZE = flags.DEFINE_integer(
    "input_sentence_size", 2_000_000, "Lines SentencePiece samples (0: all).")


def main(argv):
    del argv
    config = data_config.default_data_config()
    config.tfds_name = _TFDS_NAME.value
    config.data_dir = _DATA_DIR.value
    config.text_key = _TEXT_KEY.value
    source = sources.open_source(config, _SPLIT.value)
    count = len(source) if _MAX_DOCUMENTS.value is None else min(len(source), _MAX_DOCUMENTS.value)
    texts = (sources.record_text(source[i], config.text_key) for i in range(count))
    os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT_PREFIX.value)), exist_ok=True)
    path = tokenizers.train_sentencepiece(
        texts, _OUTPUT_PREFIX.value, vocab_size=_VOCAB_SIZE.value, model_type=_MODEL_TYPE.value,
        input_sentence_size=_INPUT_SENTENCE_SIZE.value or None, total_texts=count,
        log=lambda text: print(text, file=sys.stderr, flush=True))
    logging.info("Wrote %s from %d documents of %s:%s", path, count, config.tfds_name,
                 _SPLIT.value)
    print(path)


if __name__ == "__main__":
    cli.run(main)
