"""The xpk (GKE) path of experiments.launch_tpu: a training run as an xpk workload.

xpk (pypi.org/project/xpk; github.com/AI-Hypercomputer/xpk) runs a command in a container on
every TPU VM of a GKE cluster's slice; it builds the container from a base image plus a local
directory (`--script-dir`). The steps, printed and run in order like the gcloud ones:
  1. `git archive` HEAD of this repository to a tar file;
  2. unpack it into a fresh scratch directory (TMPDIR/moejax-<workload>);
  3. `xpk workload create` with that directory as the script dir, on a Python 3.12 base image:
     in the container, install the newest jax[tpu] and moejax[gcs] (as CI's Python 3.12 leg
     tests them), then `python -m experiments.train --distributed ...` on every VM.
xpk returns once the workload is queued; `follow_hint` says how to watch it. The cluster must
exist (`xpk cluster create`), and xpk needs gcloud, kubectl and docker on this machine.
Nothing here imports jax.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess

from experiments.launch_checks import (LaunchError, check_name, check_train_args,
                                       check_workdir, parse_accelerator)

BASE_DOCKER_IMAGE = "python:3.12"
CONTAINER_INSTALL = 'pip install -q -U "jax[tpu]" -e ".[gcs]"'


def check_xpk_args(*, cluster: str | None, workload: str | None, accelerator_type: str,
                   workdir: str, train_args) -> None:
    """Raises LaunchError on a bad argument (names as Kubernetes accepts them)."""
    if not cluster:
        raise LaunchError("--launcher=xpk needs --cluster (a GKE cluster made with "
                          "`xpk cluster create`)")
    check_name("--cluster", cluster)
    if not workload:
        raise LaunchError("--launcher=xpk needs --workload (a name for this run)")
    check_name("--workload", workload, longest=40)
    parse_accelerator(accelerator_type)
    if not workdir.startswith("gs://"):
        raise LaunchError(f"--workdir={workdir} must be gs://bucket/path with --launcher=xpk: a "
                          "container's disk goes with it")
    check_workdir(workdir, accelerator_type)
    check_train_args(train_args)


def xpk_commands(*, cluster: str, workload: str, zone: str, accelerator_type: str,
                 config: str, workdir: str, repo: str, scratch: str,
                 project: str | None = None, base_docker_image: str = BASE_DOCKER_IMAGE,
                 spot: bool = False, train_args=()) -> list[list[str]]:
    """The steps as argv lists (pure: runs nothing, touches no file); LaunchError on bad input.
    `scratch` is the directory shipped (and `scratch`.tar the archive)."""
    check_xpk_args(cluster=cluster, workload=workload, accelerator_type=accelerator_type,
                   workdir=workdir, train_args=train_args)
    train = ["python", "-m", "experiments.train", "--distributed", f"--config={config}",
             f"--workdir={workdir}", *train_args]
    command = f"{CONTAINER_INSTALL} && PYTHONUNBUFFERED=1 {shlex.join(train)}"
    where = [f"--zone={zone}"] + ([f"--project={project}"] if project else [])
    return [
        ["git", "-C", repo, "archive", "--format=tar", f"--output={scratch}.tar", "HEAD"],
        ["mkdir", "-p", scratch],
        ["tar", "-xf", f"{scratch}.tar", "-C", scratch],
        ["xpk", "workload", "create", f"--cluster={cluster}", f"--workload={workload}",
         f"--tpu-type={accelerator_type}", "--num-slices=1",
         f"--base-docker-image={base_docker_image}", f"--script-dir={scratch}",
         f"--command={command}", *where] + (["--spot"] if spot else []),
    ]


def follow_hint(*, cluster: str, workload: str, zone: str, project: str | None = None) -> str:
    """How to watch the queued workload until it ends."""
    where = [f"--zone={zone}"] + ([f"--project={project}"] if project else [])
    return ("follow it with: " + shlex.join(
        ["xpk", "workload", "list", f"--cluster={cluster}", f"--filter-by-job={workload}",
         f"--wait-for-job-completion={workload}", *where])
            + " (the logs are in Cloud Logging, linked from the workload)")


def run_xpk_steps(steps: list[list[str]]) -> None:
    """Runs the steps in order; LaunchError at the first failure or without xpk."""
    if shutil.which("xpk") is None:
        raise LaunchError("xpk not found on PATH; pip install xpk (it also needs gcloud, "
                          "kubectl and docker)")
    for i, argv in enumerate(steps, 1):
        print(f"[{i}/{len(steps)}] {shlex.join(argv)}", flush=True)
        code = subprocess.run(argv, check=False).returncode
        if code != 0:
            raise LaunchError(f"step {i}/{len(steps)} ({argv[0]}) failed with exit code {code}")
