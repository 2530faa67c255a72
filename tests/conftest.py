"""Test set-up, before jax is imported.

- 8 virtual CPU devices for the sharding tests.
- XLA backend optimisation off: the tests check numbers, not speed, and compile much faster.
- A persistent compilation cache for this session only, so the trainer tests that compile the
  same program again (resume, restarts, subprocesses) load it instead of recompiling.
- Tests marked `slow` (half a minute or more each) are handed out first, so that under
  pytest-xdist (`-n auto`) no worker is left with a long one at the end while the other idles.
- A worker drops jax's compiled programs once it holds too many memory maps (see
  `release_compiled_programs`).
"""

import gc
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


# Each XLA:CPU executable maps its code in small pieces: three maps per compiled module, about
# 1,700 for one micro train step. A worker that keeps every program compiled in the session
# alive reaches Linux's default limit of 65,530 maps per process (vm.max_map_count) late in the
# suite, and XLA then segfaults in a compile or cache write. Below MAX_MAPS the compiled
# programs stay (tests share them); above it, the next test starts without them.
MAX_MAPS = 30_000


def memory_maps() -> int:
    try:
        with open("/proc/self/maps", encoding="ascii") as f:
            return sum(1 for _ in f)
    except OSError:                        # not Linux: no such limit to keep away from
        return 0


@pytest.fixture(autouse=True)
def release_compiled_programs():
    yield
    if memory_maps() > MAX_MAPS:
        import jax
        jax.clear_caches()
        gc.collect()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """The embedded corpus built once per test session (trainer and multi-host tests)."""
    from moejax.data import corpus
    path = str(tmp_path_factory.mktemp("tfds"))
    corpus.prepare(path)
    return path
