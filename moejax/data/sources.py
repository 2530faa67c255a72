"""Random-access text sources: any tfds dataset prepared as array_record, read without TensorFlow.

Only `tfds.builder(...).as_data_source(split)` is used (never tfds.load / as_dataset, which need
TensorFlow). The embedded default corpus is prepared on first use; every other dataset must be
prepared once (on a machine with its dependencies) with
`tfds build NAME --file_format=array_record --data_dir=DIR`, then read from DIR (local or gs://).
"""

from __future__ import annotations

import re

import tensorflow_datasets as tfds

from moejax.data import corpus
from moejax.errors import ConfigError, check


def _builder(name: str, data_dir):
    if name.split(":")[0] == corpus.NAME:
        return corpus.prepare(data_dir)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ConfigError(
            f"data.tfds_name={name!r} is not a tfds dataset (not registered and not prepared in "
            f"data.data_dir={data_dir!r}): fix the name, e.g. 'c4/en:3.1.0' or "
            f"{corpus.NAME!r}, or point data.data_dir at the directory that holds it") from None
    check(builder.is_prepared(),
          f"data.tfds_name={name!r} is not prepared in {builder.data_dir}: build it once with "
          f"`tfds build {name} --file_format=array_record --data_dir=DIR` and set "
          f"data.data_dir=DIR")
    return builder


def open_source(config, split: str):
    """The records of `split` of config.tfds_name: a grain-compatible random-access source."""
    builder = _builder(config.tfds_name, config.data_dir)
    file_format = str(getattr(builder.info.file_format, "value", builder.info.file_format))
    check(file_format == "array_record",
          f"data.tfds_name={config.tfds_name!r} is prepared as {file_format} in "
          f"{builder.data_dir}; grain reads array_record only: rebuild it with "
          f"`tfds build {config.tfds_name} --file_format=array_record`")
    base_split = re.match(r"\s*([\w-]+)", split)
    splits = sorted(builder.info.splits.keys())
    check(base_split is not None and base_split.group(1) in splits,
          f"split={split!r} is not a split of data.tfds_name={config.tfds_name!r} (splits: "
          f"{', '.join(splits)}): fix data.train_split / data.eval_split")
    features = builder.info.features
    check(config.text_key in features,
          f"data.text_key={config.text_key!r} is not a feature of {config.tfds_name!r} "
          f"(features: {', '.join(sorted(features.keys()))}): set data.text_key")
    return builder.as_data_source(split=split)


def record_text(record, text_key: str) -> str:
    """The text field of one record as str (tfds decodes Text features to bytes)."""
    text = record[text_key]
    return text.decode("utf-8") if isinstance(text, bytes) else str(text)
