"""Test set-up, before jax is imported.

- 8 virtual CPU devices for the sharding tests.
- XLA backend optimisation off: the tests check numbers, not speed, and compile much faster.
- A persistent compilation cache for this session only, so the trainer tests that compile the
  same program again (resume, restarts, subprocesses) load it instead of recompiling.
- Tests marked `slow` (half a minute or more each) are handed out first, so that under
  pytest-xdist (`-n auto`) no worker is left with a long one at the end while the other idles.
"""

import os
import tempfile

os.environ.setdefault(
    "XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="moejax_jit_cache_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


import pytest  # noqa: E402  (after the environment above)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes half a minute or more; scheduled first")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)   # stable: slow first


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """The embedded corpus built once per test session (trainer and multi-host tests)."""
    from moejax.data import corpus
    path = str(tmp_path_factory.mktemp("tfds"))
    corpus.prepare(path)
    return path
