"""Tokenizers: byte-level (default; no vocabulary file) and SentencePiece.

Both follow the T5 conventions (Raffel et al. 2020): pad = 0, eos = 1, and `num_extra_ids`
sentinel ids appended after the base vocabulary, numbered from the top: sentinel i
(<extra_id_i>) is vocab_size - 1 - i. The byte tokenizer is ByT5's (Xue et al. 2022): ids 0-2 are
pad/eos/unk and byte b is id b + 3.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Iterable, Optional

import numpy as np

from moejax.errors import ConfigError, check

PAD_ID = 0

# SentencePiece models shipped with moejax, by the name data.spm_model_path may give instead of
# a path. moejax_english_2k: unigram, 2000 pieces (pad 0, eos 1, unk 2, no bos), trained on the
# whole train split of the embedded corpus with
#   python -m experiments.train_tokenizer --output_prefix=moejax_english_2k --vocab_size=2000 \
#       --input_sentence_size=0
# (sentencepiece 0.2). The tiny encoder-decoder configs use it (see configs/common.py).
BUILTIN_SPM_MODELS = ("moejax_english_2k",)


def spm_model_file(model_path: str) -> str:
    """The file of a data.spm_model_path: a built-in model's name or a path as given."""
    if model_path in BUILTIN_SPM_MODELS:
        return os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets",
                            model_path + ".model")
    return model_path


class ByteTokenizer:
    """UTF-8 bytes as tokens: vocab_size = 3 + 256 + num_extra_ids."""

    pad_id = PAD_ID
    eos_id = 1
    unk_id = 2
    byte_offset = 3

    def __init__(self, num_extra_ids: int = 100):
        check(num_extra_ids >= 0, f"data.num_extra_ids={num_extra_ids} must be >= 0")
        self.num_extra_ids = num_extra_ids
        self.base_vocab_size = self.byte_offset + 256
        self.vocab_size = self.base_vocab_size + num_extra_ids

    def encode(self, text: str) -> np.ndarray:
        """Token ids of `text` (no EOS). [N] int32."""
        data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        return data.astype(np.int32) + self.byte_offset

    def decode(self, ids) -> str:
        """Text of the byte ids in `ids`; pad, eos, unk and sentinels are skipped."""
        ids = np.asarray(ids, dtype=np.int64)
        ids = ids[(ids >= self.byte_offset) & (ids < self.base_vocab_size)]
        return (ids - self.byte_offset).astype(np.uint8).tobytes().decode("utf-8", "replace")

    def sentinel_id(self, i: int) -> int:
        """The id of <extra_id_i>."""
        return sentinel_id(self.vocab_size, self.num_extra_ids, i)


class SentencePieceTokenizer:
    """A SentencePiece model (e.g. T5's 32k vocabulary) plus num_extra_ids sentinels.

    model_path may be local or any path etils.epath reads (gs:// with gcsfs installed), or the
    name of a model shipped with moejax (BUILTIN_SPM_MODELS).
    """

    pad_id = PAD_ID

    def __init__(self, model_path: str, num_extra_ids: int = 100):
        import sentencepiece as spm                       # pylint: disable=g-import-not-at-top
        from etils import epath                           # pylint: disable=g-import-not-at-top

        check(num_extra_ids >= 0, f"data.num_extra_ids={num_extra_ids} must be >= 0")
        check(bool(model_path),
              "data.spm_model_path is empty: set it to a SentencePiece .model file (train one "
              "with `python -m experiments.train_tokenizer`) or use data.tokenizer='byte'")
        path = epath.Path(spm_model_file(model_path))
        check(path.exists(), f"data.spm_model_path={model_path!r} does not exist: train one with "
                             f"`python -m experiments.train_tokenizer` or fix the path")
        check(not path.is_dir(), f"data.spm_model_path={model_path!r} is a directory, not a "
                                 f"SentencePiece .model file")
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=path.read_bytes())
        except (RuntimeError, OSError) as err:
            raise ConfigError(f"data.spm_model_path={model_path!r} is not a SentencePiece "
                              f"model ({str(err).strip().splitlines()[-1][:120]})") from None
        self.eos_id = self._sp.eos_id()
        check(self.eos_id >= 0, f"data.spm_model_path={model_path!r} has no EOS piece: train "
                                f"the model with eos_id set (T5 uses eos_id=1)")
        self.num_extra_ids = num_extra_ids
        self.base_vocab_size = self._sp.get_piece_size()
        self.vocab_size = self.base_vocab_size + num_extra_ids

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._sp.encode(text), dtype=np.int32)

    def decode(self, ids) -> str:
        ids = [int(i) for i in np.asarray(ids).reshape(-1)
               if 0 <= i < self.base_vocab_size and i not in (self.pad_id, self.eos_id)]
        return self._sp.decode(ids)

    def sentinel_id(self, i: int) -> int:
        return sentinel_id(self.vocab_size, self.num_extra_ids, i)


def sentinel_id(vocab_size: int, num_extra_ids: int, i: int) -> int:
    """T5 numbering: <extra_id_0> is the last id of the vocabulary, <extra_id_1> the one below."""
    if not 0 <= i < num_extra_ids:
        raise ConfigError(f"span {i} needs sentinel <extra_id_{i}> but data.num_extra_ids="
                          f"{num_extra_ids}: raise data.num_extra_ids")
    return vocab_size - 1 - i


def make_tokenizer(config):
    """The tokenizer a data config names: 'byte' or 'sentencepiece' (with spm_model_path)."""
    if config.tokenizer == "byte":
        return ByteTokenizer(config.num_extra_ids)
    if config.tokenizer == "sentencepiece":
        return SentencePieceTokenizer(config.spm_model_path, config.num_extra_ids)
    raise ConfigError(f"data.tokenizer={config.tokenizer!r} is not one of 'byte', 'sentencepiece'")


def train_sentencepiece(texts: Iterable[str], model_prefix: str, *, vocab_size: int = 8000,
                        model_type: str = "unigram", character_coverage: float = 1.0,
                        input_sentence_size: Optional[int] = None,
                        total_texts: Optional[int] = None,
                        log: Optional[Callable[[str], None]] = None) -> str:
    """Trains a T5-style SentencePiece model (pad 0, eos 1, unk 2, no bos); returns its path.

    Writes `model_prefix`.model and `model_prefix`.vocab. Long texts are fed by line. `log`,
    if given, gets progress lines: texts read (every 10% of `total_texts`), then the training.
    """
    import sentencepiece as spm                           # pylint: disable=g-import-not-at-top

    say = log or (lambda text: None)
    started = time.perf_counter()

    def sentences():
        read = lines = 0
        step = max(1, (total_texts or 0) // 10) if total_texts else 0
        for text in texts:
            read += 1
            for line in text.split("\n"):
                line = line.strip()
                if line:
                    lines += 1
                    yield line
            if step and read % step == 0:
                say(f"read {read}/{total_texts} texts ({lines} lines)")
        say(f"training a {model_type} model of {vocab_size} pieces on {lines} lines "
            f"(SentencePiece, {time.perf_counter() - started:.0f} s so far)")

    options = dict(sentence_iterator=sentences(), model_prefix=model_prefix,
                   vocab_size=vocab_size, model_type=model_type,
                   character_coverage=character_coverage, pad_id=0, eos_id=1, unk_id=2,
                   bos_id=-1, num_threads=2,
                   minloglevel=2, max_sentence_length=16384)
    if input_sentence_size:
        options.update(input_sentence_size=input_sentence_size, shuffle_input_sentence=True)
    spm.SentencePieceTrainer.train(**options)
    say(f"trained in {time.perf_counter() - started:.0f} s")
    return model_prefix + ".model"
