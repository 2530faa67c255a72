"""With libtpu installed (the test extra brings it for AOT compiles) and no TPU attached, moejax
starts JAX on the CPU without trying the TPU backend; a user's own choice is left alone."""

import importlib.util
import os
import subprocess
import sys

import pytest

from moejax import platforms

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None or platforms.has_tpu_chips(),
                    reason="needs libtpu installed and no TPU chips")
def test_an_installed_libtpu_stays_quiet_without_a_tpu():
    """JAX's debug log names every backend it initialises; without the skip it tries 'tpu'
    first (and libtpu prints errors about TPU VM environment variables)."""
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS")}
    env["JAX_LOGGING_LEVEL"] = "DEBUG"
    code = "import moejax, jax; print(jax.numpy.ones(2).sum(), jax.default_backend())"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    assert run.stdout.split() == ["2.0", "cpu"]
    assert "Initializing backend 'cpu'" in run.stderr           # the log is on
    assert "Initializing backend 'tpu'" not in run.stderr
    assert "TPU_WORKER_HOSTNAMES" not in run.stderr


@pytest.mark.parametrize("variable", ["JAX_PLATFORMS", "JAX_FORCE_TPU_INIT"])
def test_a_platform_the_user_chose_is_kept(monkeypatch, variable):
    monkeypatch.setenv(variable, "tpu" if variable == "JAX_PLATFORMS" else "1")
    monkeypatch.setattr(platforms, "_installed", lambda module: module == "libtpu")
    monkeypatch.setattr(platforms, "has_tpu_chips", lambda: False)
    assert platforms.skip_absent_tpu() is False


@pytest.mark.parametrize("libtpu, chips, gpu", [(False, False, False), (True, True, False),
                                                (True, False, True)])
def test_nothing_is_chosen_without_libtpu_with_chips_or_with_a_gpu(monkeypatch, libtpu, chips,
                                                                   gpu):
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    monkeypatch.delenv("JAX_FORCE_TPU_INIT", raising=False)
    monkeypatch.setattr(platforms, "_installed", lambda module: (
        libtpu if module == "libtpu" else gpu and module == "jax_cuda12_plugin"))
    monkeypatch.setattr(platforms, "has_tpu_chips", lambda: chips)
    assert platforms.skip_absent_tpu() is False
    assert "JAX_PLATFORMS" not in os.environ
