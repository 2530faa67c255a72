"""Which JAX platform moejax starts on where libtpu is installed but no TPU is attached.

`pip install "jax[tpu]"` (the test extra does it, for ahead-of-time TPU compiles) makes JAX try
the TPU backend first on every machine. Without TPU chips that attempt prints libtpu's errors
about TPU VM environment variables (TPU_WORKER_HOSTNAMES, the metadata server) and costs
seconds before JAX falls back to the CPU. `skip_absent_tpu()` (called when moejax is imported)
selects the CPU platform in exactly that case, so a laptop or CI machine with libtpu installed
starts as quietly as one without it. Compiling *for* a TPU still works: a TPU topology is
described by libtpu directly (jax.experimental.topologies), not through the TPU backend.

Nothing changes where the user chose (JAX_PLATFORMS, or JAX_FORCE_TPU_INIT), where TPU chips
are present, or where a GPU plugin is installed.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys

# TPU VMs expose their chips as /dev/accel* (v2-v4) or as VFIO groups (v5e, v5p, v6e).
TPU_DEVICE_FILES = ("/dev/accel*", "/dev/vfio/[0-9]*")
GPU_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
               "jax_rocm7_plugin")


def has_tpu_chips() -> bool:
    """Whether this machine has TPU chips attached (their device files exist)."""
    return any(glob.glob(pattern) for pattern in TPU_DEVICE_FILES)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def skip_absent_tpu() -> bool:
    """Selects JAX's CPU platform where libtpu is installed, no TPU chips are attached, no GPU
    plugin is installed and the user has not chosen a platform. Returns whether it did."""
    if (os.environ.get("JAX_PLATFORMS") or os.environ.get("JAX_FORCE_TPU_INIT")
            or not _installed("libtpu") or has_tpu_chips()
            or any(_installed(plugin) for plugin in GPU_PLUGINS)):
        return False
    if "jax" not in sys.modules:
        os.environ["JAX_PLATFORMS"] = "cpu"
        return True
    import jax
    from jax._src import xla_bridge
    if xla_bridge.backends_are_initialized():     # too late: JAX has already chosen
        return False
    jax.config.update("jax_platforms", "cpu")
    return True


__all__ = ["has_tpu_chips", "skip_absent_tpu"]
