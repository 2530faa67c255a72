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
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["moejax", "moejax.*"]),
    install_requires=[
        "jax>=0.6.0",
        "flax>=0.11.0",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11.0",
        "ml-collections>=1.0.0",
        "absl-py>=2.1.0",
        "numpy>=1.26",
    ],
    extras_require={
        "test": ["pytest>=8.0", "scipy>=1.11"],
    },
    license="Apache-2.0",
)
