"""Argument checks shared by the TPU launchers (experiments/launch_tpu.py: gcloud and xpk):
each bad argument is one LaunchError line, raised before anything runs. Nothing here imports
jax."""

from __future__ import annotations

import re

_ACCELERATOR_RE = re.compile(r"(v\d+[a-z]*)-(\d+)")        # v5litepod-16 -> v5litepod, 16
_NAME_RE = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_ZONE_RE = re.compile(r"[a-z]+-[a-z]+\d+-[a-z]")
_BUCKET_RE = re.compile(r"gs://[a-z0-9][-a-z0-9_.]+[a-z0-9](/.*)?")
_RESERVED_TRAIN_FLAGS = ("--config=", "--workdir=", "--distributed")


class LaunchError(ValueError):
    """A bad launch argument or a failed step; main prints it as one `error:` line."""


def check_name(flag: str, value: str, longest: int = 63) -> None:
    """A TPU, cluster or workload name: lowercase letters, digits and hyphens."""
    if not (_NAME_RE.fullmatch(value or "") and len(value) <= longest):
        raise LaunchError(f"{flag}={value!r} must be 1-{longest} lowercase letters, digits or "
                          "hyphens, starting with a letter and not ending with a hyphen")


def check_zone(zone: str) -> None:
    if not _ZONE_RE.fullmatch(zone or ""):
        raise LaunchError(f"--zone={zone!r} does not look like a zone, e.g. us-east5-a")


def parse_accelerator(accelerator_type: str) -> tuple[str, int]:
    """'v5litepod-16' -> ('v5litepod', 16); LaunchError for anything else."""
    match = _ACCELERATOR_RE.fullmatch(accelerator_type or "")
    if not match:
        raise LaunchError(f"--accelerator_type={accelerator_type!r} does not look like a TPU "
                          "type, e.g. v4-32, v5litepod-16, v5p-8, v6e-8")
    return match.group(1), int(match.group(2))


def is_multi_worker(accelerator_type: str) -> bool:
    """Whether the slice has several TPU VMs (workers): every type of size 8 or less (v3-8,
    v4-8, v5p-8, v5litepod-8, v6e-8, ...) is one VM, every larger one is several."""
    return parse_accelerator(accelerator_type)[1] > 8


def check_workdir(workdir: str, accelerator_type: str, delete_after: bool = False) -> None:
    """gs://bucket/path, or (one-VM slices kept after the run) an absolute path on the VM."""
    if not workdir.startswith("gs://"):
        if is_multi_worker(accelerator_type):
            raise LaunchError(f"--workdir={workdir} must be gs://bucket/path: each worker of a "
                              f"multi-worker {accelerator_type} slice has its own disk")
        if delete_after:
            raise LaunchError(f"--workdir={workdir} must be gs://bucket/path with "
                              "--delete_after: the TPU VM's disk is deleted with it")
        if not workdir.startswith("/"):
            raise LaunchError(f"--workdir={workdir} must be gs://bucket/path or an absolute "
                              "path on the TPU VM")
    elif not _BUCKET_RE.fullmatch(workdir):
        raise LaunchError(f"--workdir={workdir} is not a valid gs://bucket/path")


def check_train_args(train_args) -> None:
    """Extra experiments.train flags: --flags, none that the launcher sets itself."""
    for arg in train_args:
        if not arg.startswith("--"):
            raise LaunchError(f"train flag {arg!r} must start with --, e.g. "
                              "--config.mesh.expert=8 (put train flags after --)")
        if arg.startswith(_RESERVED_TRAIN_FLAGS):
            raise LaunchError(f"train flag {arg!r} is set by the launcher; use the launcher's "
                              "--config/--workdir instead")
