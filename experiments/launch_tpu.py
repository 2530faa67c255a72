r"""Launch training on a Cloud TPU VM or pod slice: with gcloud (create, ship, train, delete) or
as an xpk workload on a GKE cluster.

    python -m experiments.launch_tpu --tpu=my-tpu --zone=us-east5-a \
        --accelerator_type=v5litepod-16 --config=configs/switch.py:base \
        --workdir=gs://my-bucket/switch_base [--project=P] [--spot] [--reuse] [--delete_after] \
        [--dry_run] [-- --config.mesh.expert=16 --config.train.num_steps=100000]

First, unless --skip_aot_check, `python -m experiments.aot` compiles the training step for the
slice here (libtpu, no TPU; the train flags' --config.* overrides included) and the launch
stops with one line if it would not fit or does not compile: a pod is not created for a run
that cannot start. Then the steps, printed (shell-quoted, numbered) and run in order, stopping
at the first failure:
  1. `git archive` HEAD of this repository to a tarball (refused if tracked files have
     uncommitted changes, unless --allow_dirty: they would not be shipped);
  2. with --reuse, `gcloud ... describe` the TPU and skip step 3 if it is READY;
  3. `gcloud ... create` the TPU VM (--version defaults to the generation's JAX image);
  4. `gcloud ... scp` the tarball to every worker;
  5. `gcloud ... ssh --worker=all`: unpack into ~/moejax, make a Python 3.12 venv
     ~/moejax-venv with uv, install the newest jax[tpu] and moejax[gcs];
  6. `gcloud ... ssh --worker=all`: `python -m experiments.train --distributed ...` on every
     worker, in the foreground (gcloud streams every worker's output; each worker also keeps
     ~/moejax/train.log);
  7. with --delete_after, `gcloud ... delete --quiet`: run even if a step after the TPU came
     up failed or was interrupted.
Extra flags for experiments.train go after `--` or in repeated --train_flag. --dry_run prints
the steps and runs nothing. Nothing here imports jax.

On a GKE cluster, the same run as an xpk workload (experiments/xpk_launch.py: archive, unpack,
`xpk workload create`; the same check first):

    python -m experiments.launch_tpu --launcher=xpk --cluster=my-cluster --workload=switch-base \
        --zone=us-east5-a --accelerator_type=v5p-64 --config=configs/switch.py:base \
        --workdir=gs://my-bucket/switch_base [--project=P] [--spot] [--base_docker_image=IMG] \
        [--dry_run] [-- --config.mesh.expert=32]
"""

import os
import shlex
import shutil
import subprocess
import sys
import tempfile

from absl import flags

from experiments import cli
from experiments.launch_checks import (LaunchError, check_name, check_train_args,
                                       check_workdir, check_zone, parse_accelerator)
from experiments.xpk_launch import BASE_DOCKER_IMAGE, follow_hint, run_xpk_steps, xpk_commands

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_LAUNCHER = flags.DEFINE_enum("launcher", "gcloud", ["gcloud", "xpk"],
                              "gcloud: create a TPU VM and train on it; xpk: run as a workload "
                              "on a GKE cluster (experiments/xpk_launch.py).")
_TPU = flags.DEFINE_string("tpu", None, "gcloud: TPU VM name (lowercase letters, digits, "
                                        "hyphens).")
_CLUSTER = flags.DEFINE_string("cluster", None, "xpk: the GKE cluster (xpk cluster create).")
_WORKLOAD = flags.DEFINE_string("workload", None, "xpk: a name for this run (<= 40 chars).")
_IMAGE = flags.DEFINE_string("base_docker_image", BASE_DOCKER_IMAGE,
                             "xpk: the container image the repository is added to.")
_ZONE = flags.DEFINE_string("zone", None, "Zone, e.g. us-east5-a.")
_ACCELERATOR = flags.DEFINE_string("accelerator_type", None,
                                   "Accelerator type, e.g. v4-32, v5litepod-16, v5p-8, v6e-8.")
_CONFIG = flags.DEFINE_string("config", None, "configs/<family>.py:<size>, relative to the repo.")
_WORKDIR = flags.DEFINE_string("workdir", None,
                               "gs://bucket/path (required for multi-worker slices).")
_PROJECT = flags.DEFINE_string("project", None, "GCP project (default: gcloud's).")
_RUNTIME = flags.DEFINE_string("runtime_version", None,
                               "TPU software version (default: the generation's JAX image).")
_SPOT = flags.DEFINE_bool("spot", False, "Create a Spot TPU VM.")
_REUSE = flags.DEFINE_bool("reuse", False, "Use the TPU VM if it already exists and is READY.")
_DELETE = flags.DEFINE_bool("delete_after", False,
                            "Delete the TPU VM at the end, also when a later step fails.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the steps; run nothing.")
_ALLOW_DIRTY = flags.DEFINE_bool("allow_dirty", False,
                                 "Ship HEAD even though tracked files have uncommitted changes "
                                 "(the changes are not shipped).")
_SKIP_AOT = flags.DEFINE_bool("skip_aot_check", False, "Launch without first compiling the "
                              "training step for the slice here (experiments.aot).")
_TRAIN_FLAGS = flags.DEFINE_multi_string("train_flag", [],
                                         "An extra experiments.train flag, e.g. "
                                         "--train_flag=--config.mesh.expert=8 (repeatable).")
flags.mark_flags_as_required(["zone", "accelerator_type", "config", "workdir"])

TPU_VM = ["gcloud", "compute", "tpus", "tpu-vm"]
REMOTE_TARBALL = "~/moejax.tar.gz"
REMOTE_VENV = "~/moejax-venv"
# Step 5 on every worker. TPU VM images ship Python 3.10 and moejax needs 3.11+, so uv makes a
# 3.12 venv; re-running it (--reuse) replaces the code and keeps the venv. JAX and its libtpu are
# the newest releases, as CI's Python 3.12 leg tests them: jax 0.10.2's ragged_dot compiles for
# TPU to 22x the useful FLOPs at 64 experts, jax 0.12's to exactly them (docs/PERFORMANCE.md).
SETUP_COMMAND = (
    "rm -rf ~/moejax && mkdir -p ~/moejax && tar -xzf ~/moejax.tar.gz -C ~/moejax"
    ' && export PATH="$HOME/.local/bin:$PATH"'
    " && (command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh)"
    f" && uv venv --allow-existing --python 3.12 {REMOTE_VENV}"
    f' && uv pip install --python {REMOTE_VENV}/bin/python -U "jax[tpu]" -e "$HOME/moejax[gcs]"')
# The JAX software version of each TPU generation (cloud.google.com/tpu/docs/runtimes).
RUNTIME_VERSIONS = {"v2": "tpu-ubuntu2204-base", "v3": "tpu-ubuntu2204-base",
                    "v4": "tpu-ubuntu2204-base", "v5litepod": "v2-alpha-tpuv5-lite",
                    "v5p": "v2-alpha-tpuv5", "v6e": "v2-alpha-tpuv6e"}


def check_args(*, tpu: str, zone: str, accelerator_type: str, workdir: str,
               runtime_version: str | None, delete_after: bool, train_args) -> str:
    """Raises LaunchError on a bad argument; returns the runtime version to use."""
    if not tpu:
        raise LaunchError("--launcher=gcloud needs --tpu (the TPU VM's name)")
    check_name("--tpu", tpu)
    check_zone(zone)
    generation, _ = parse_accelerator(accelerator_type)
    check_workdir(workdir, accelerator_type, delete_after)
    check_train_args(train_args)
    if runtime_version:
        return runtime_version
    if generation not in RUNTIME_VERSIONS:
        raise LaunchError(f"no default --runtime_version for {accelerator_type}; pass one "
                          f"(known: {', '.join(sorted(RUNTIME_VERSIONS))})")
    return RUNTIME_VERSIONS[generation]


# Cloud's accelerator types count TensorCores for v4 and v5p (2 per chip), chips for v5e
# (v5litepod) and v6e; experiments.aot's topologies count chips (moejax/parallel/tpu_chips.py).
AOT_CHIPS = {"v4": ("v4", 2), "v5p": ("v5p", 2), "v5litepod": ("v5e", 1), "v6e": ("v6e", 1)}


def aot_topology(accelerator_type: str) -> str:
    """'v5p-16' -> 'v5p-8' (chips), 'v5litepod-16' -> 'v5e-16'; LaunchError for generations
    experiments.aot does not describe."""
    generation, count = parse_accelerator(accelerator_type)
    if generation not in AOT_CHIPS:
        raise LaunchError(f"no ahead-of-time check for {accelerator_type} (experiments.aot knows "
                          f"{', '.join(sorted(AOT_CHIPS))}); pass --skip_aot_check")
    chip, per_chip = AOT_CHIPS[generation]
    return f"{chip}-{max(1, int(count) // per_chip)}"


def aot_command(config: str, accelerator_type: str, train_args) -> list[str]:
    """The local compile-and-size check: experiments.aot with the train flags' overrides."""
    return [sys.executable, "-m", "experiments.aot", f"--config={config}",
            f"--topology={aot_topology(accelerator_type)}",
            *(a for a in train_args if a.startswith("--config."))]


def run_aot_check(command: list[str], accelerator_type: str) -> None:
    """Runs the check (its report streams through); LaunchError unless it fits."""
    print(f"[check] {shlex.join(command)}", flush=True)
    code = subprocess.run(command, cwd=ROOT, check=False).returncode
    if code != 0:
        raise LaunchError(f"the ahead-of-time check failed (exit {code}, its output is above): "
                          f"this run does not fit on {accelerator_type} or does not compile; "
                          "change the mesh or config, or pass --skip_aot_check to launch anyway")


def check_repo(repo: str, config: str) -> None:
    """The config file must exist and be committed at HEAD (git archive ships only HEAD)."""
    path = config.split(":", 1)[0]
    if os.path.isabs(path) or not path.endswith(".py"):
        raise LaunchError(f"--config={config} must be a .py file relative to the repository, "
                          "e.g. configs/switch.py:base")
    if not os.path.isfile(os.path.join(repo, path)):
        raise LaunchError(f"--config file {path} does not exist in {repo}")
    tracked = subprocess.run(["git", "-C", repo, "cat-file", "-e", f"HEAD:{path}"],
                             check=False, capture_output=True).returncode == 0
    if not tracked:
        raise LaunchError(f"--config file {path} is not committed at HEAD, so it would not be "
                          "shipped; commit it first")


def uncommitted_files(repo: str) -> list[str]:
    """Tracked files whose working-tree or staged content differs from HEAD."""
    out = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"],
                         capture_output=True, text=True, check=True).stdout
    return [line[3:] for line in out.splitlines() if line.strip()]


def tpu_commands(*, tpu: str, zone: str, accelerator_type: str, config: str, workdir: str,
                 repo: str, tarball: str, project: str | None = None,
                 runtime_version: str | None = None, spot: bool = False, reuse: bool = False,
                 delete_after: bool = False, train_args=()) -> list[list[str]]:
    """The launch steps as argv lists (pure: runs nothing, touches no file).

    Raises LaunchError on a bad argument.
    """
    version = check_args(tpu=tpu, zone=zone, accelerator_type=accelerator_type,
                         workdir=workdir, runtime_version=runtime_version,
                         delete_after=delete_after, train_args=train_args)
    where = [f"--zone={zone}"] + ([f"--project={project}"] if project else [])
    train = ["-m", "experiments.train", "--distributed", f"--config={config}",
             f"--workdir={workdir}", *train_args]
    train_command = (f"set -o pipefail; cd ~/moejax && PYTHONUNBUFFERED=1 {REMOTE_VENV}/bin/python "
                     f"{shlex.join(train)} 2>&1 | tee ~/moejax/train.log")
    steps = [["git", "-C", repo, "archive", "--format=tar.gz", f"--output={tarball}", "HEAD"]]
    if reuse:
        steps.append(TPU_VM + ["describe", tpu, *where, "--format=value(state)"])
    steps += [
        TPU_VM + ["create", tpu, *where, f"--accelerator-type={accelerator_type}",
                  f"--version={version}"] + (["--spot"] if spot else []),
        TPU_VM + ["scp", tarball, f"{tpu}:{REMOTE_TARBALL}", "--worker=all", *where],
        TPU_VM + ["ssh", tpu, "--worker=all", *where, f"--command={SETUP_COMMAND}"],
        TPU_VM + ["ssh", tpu, "--worker=all", *where, f"--command={train_command}"],
    ]
    if delete_after:
        steps.append(TPU_VM + ["delete", tpu, *where, "--quiet"])
    return steps


def verb(argv: list[str]) -> str:
    """'git' for the local archive step, else the gcloud tpu-vm verb (create, ssh, ...)."""
    return argv[4] if argv[:4] == TPU_VM else argv[0]


def step_line(i: int, total: int, argv: list[str], reuse: bool) -> str:
    """`[i/total] command`, shell-quoted, with a note on the conditional steps."""
    line = f"[{i}/{total}] {shlex.join(argv)}"
    if verb(argv) == "create" and reuse:
        line += "  # skipped if the describe finds the TPU READY"
    if verb(argv) == "delete":
        line += "  # runs even if an earlier step fails, once the TPU is up"
    return line


def print_steps(steps: list[list[str]]) -> None:
    """The dry-run listing: one line per step."""
    reuse = any(verb(argv) == "describe" for argv in steps)
    for i, argv in enumerate(steps, 1):
        print(step_line(i, len(steps), argv, reuse))


def run_steps(steps: list[list[str]]) -> None:
    """Runs the steps in order; raises LaunchError at the first failure. The delete step (if
    any) runs last, in a finally, once the TPU is up (created, or found READY with --reuse)."""
    if shutil.which("gcloud") is None:
        raise LaunchError("gcloud not found on PATH; install the Google Cloud CLI "
                          "(cloud.google.com/sdk)")
    delete = [argv for argv in steps if verb(argv) == "delete"]
    body = [argv for argv in steps if verb(argv) != "delete"]
    total = len(steps)
    reuse = any(verb(argv) == "describe" for argv in steps)
    tpu_up = skip_create = False
    try:
        for i, argv in enumerate(body, 1):
            print(step_line(i, total, argv, reuse), flush=True)
            if verb(argv) == "create" and skip_create:
                print(f"skipped: TPU {argv[5]} exists and is READY (--reuse)", flush=True)
                tpu_up = True
                continue
            if verb(argv) == "describe":
                result = subprocess.run(argv, check=False, capture_output=True, text=True)
                state = result.stdout.strip()
                if result.returncode == 0 and state == "READY":
                    skip_create = True
                elif result.returncode == 0:
                    raise LaunchError(f"TPU {argv[5]} exists in state {state or 'unknown'}; "
                                      "delete it or wait until it is READY")
                continue
            code = subprocess.run(argv, check=False).returncode
            if code != 0:
                raise LaunchError(f"step {i}/{total} ({verb(argv)}) failed with exit code {code}")
            if verb(argv) == "create":
                tpu_up = True
    finally:
        if delete and tpu_up:
            print(step_line(total, total, delete[0], reuse), flush=True)
            code = subprocess.run(delete[0], check=False).returncode
            if code != 0:
                raise LaunchError(f"deleting the TPU failed with exit code {code}; delete it "
                                  f"by hand: {shlex.join(delete[0])}")


XPK_ONLY = ("cluster", "workload")
GCLOUD_ONLY = ("tpu", "runtime_version", "reuse", "delete_after")


def check_launcher_flags() -> None:
    """Flags of the other launcher are an error, not silently ignored."""
    other = XPK_ONLY if _LAUNCHER.value == "gcloud" else GCLOUD_ONLY
    given = [name for name in other if flags.FLAGS[name].present]
    if given:
        raise LaunchError(f"--{given[0]} is not used with --launcher={_LAUNCHER.value}")


def scratch_path() -> str:
    """Where the shipped code is put here: TMPDIR/moejax-<TPU or workload name>."""
    name = _TPU.value if _LAUNCHER.value == "gcloud" else _WORKLOAD.value
    return os.path.join(tempfile.gettempdir(), f"moejax-{name}")


def planned_steps(train_args, scratch: str) -> list[list[str]]:
    """The launcher's steps (LaunchError on a bad argument)."""
    check_launcher_flags()
    if _LAUNCHER.value == "xpk":
        check_zone(_ZONE.value)
        return xpk_commands(
            cluster=_CLUSTER.value, workload=_WORKLOAD.value, zone=_ZONE.value,
            accelerator_type=_ACCELERATOR.value, config=_CONFIG.value, workdir=_WORKDIR.value,
            repo=ROOT, scratch=scratch, project=_PROJECT.value,
            base_docker_image=_IMAGE.value, spot=_SPOT.value, train_args=train_args)
    return tpu_commands(
        tpu=_TPU.value, zone=_ZONE.value, accelerator_type=_ACCELERATOR.value,
        config=_CONFIG.value, workdir=_WORKDIR.value, repo=ROOT, tarball=scratch + ".tar.gz",
        project=_PROJECT.value, runtime_version=_RUNTIME.value, spot=_SPOT.value,
        reuse=_REUSE.value, delete_after=_DELETE.value, train_args=train_args)


def remove_scratch(scratch: str) -> None:
    for path in (scratch + ".tar.gz", scratch + ".tar"):
        if os.path.exists(path):
            os.remove(path)
    shutil.rmtree(scratch, ignore_errors=True)


def main(argv):
    train_args = [*_TRAIN_FLAGS.value, *argv[1:]]
    try:
        scratch = scratch_path()
        steps = planned_steps(train_args, scratch)
        check_repo(ROOT, _CONFIG.value)
        dirty = uncommitted_files(ROOT)
        if dirty and not _ALLOW_DIRTY.value:
            message = (f"{len(dirty)} tracked file(s) have uncommitted changes ({dirty[0]}, ...)"
                       "; commit them, or pass --allow_dirty to ship HEAD without them")
            if not _DRY_RUN.value:
                raise LaunchError(message)
            print(f"warning: {message}", file=sys.stderr)
        check_command = (None if _SKIP_AOT.value else
                         aot_command(_CONFIG.value, _ACCELERATOR.value, train_args))
        hint = (follow_hint(cluster=_CLUSTER.value, workload=_WORKLOAD.value, zone=_ZONE.value,
                            project=_PROJECT.value) if _LAUNCHER.value == "xpk" else None)
        if _DRY_RUN.value:
            if check_command:
                print(f"[check] {shlex.join(check_command)}")
            print_steps(steps)
            if hint:
                print(f"# then {hint}")
            return
        if check_command:
            run_aot_check(check_command, _ACCELERATOR.value)
        remove_scratch(scratch)                     # a stale one from an interrupted launch
        try:
            run_xpk_steps(steps) if _LAUNCHER.value == "xpk" else run_steps(steps)
        finally:
            remove_scratch(scratch)
        if hint:
            print(f"queued; {hint}")
    except LaunchError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    cli.run(main)
