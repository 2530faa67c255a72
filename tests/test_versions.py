"""The declared minimum versions are the ones CI's Python 3.11 leg installs and tests."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def test_setup_minimums_equal_the_ci_constraints():
    pins = dict(re.findall(r"^([\w.-]+)==([\w.]+)$", read(".ci/lowest.txt"), re.M))
    minimums = dict(re.findall(r'"([\w.-]+)>=([\w.]+)"', read("setup.py")))
    assert {name: minimums[name] for name in ("jax", "flax", "optax", "orbax-checkpoint")} == {
        name: pins[name] for name in ("jax", "flax", "optax", "orbax-checkpoint")}
    assert pins["jaxlib"] == pins["jax"]
    assert "PIP_CONSTRAINT" in read(".ci/run") and ".ci/lowest.txt" in read(".ci/run")
    # TPU launches install the newest releases on Python 3.12, as CI's second leg tests them
    launch = read("experiments/launch_tpu.py")
    assert "--python 3.12" in launch and "lowest.txt" not in launch
    assert re.search(r'python312=\$\(find_python 3\.12\)', read(".ci/run"))
