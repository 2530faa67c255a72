"""Launch tooling: the TPU launcher's steps (dry run and a run against a fake gcloud), its input
errors, and the SLURM batch script (syntax, and the srun line it runs with a fake srun)."""

import os
import shlex
import stat
import subprocess
import sys

import pytest

from experiments import launch_tpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SBATCH = os.path.join(ROOT, "experiments", "slurm", "train.sbatch")
TPU = ["gcloud", "compute", "tpus", "tpu-vm"]
BASE = ["--tpu=my-tpu", "--zone=us-east5-a", "--accelerator_type=v5litepod-16",
        "--config=configs/switch.py:base", "--workdir=gs://my-bucket/switch_base",
        "--skip_aot_check"]                 # the check itself: the tests at the end
TRAIN = ("set -o pipefail; cd ~/moejax && PYTHONUNBUFFERED=1 ~/moejax-venv/bin/python -m "
         "experiments.train --distributed --config=configs/switch.py:base "
         "--workdir=gs://my-bucket/switch_base{extra} 2>&1 | tee ~/moejax/train.log")

# A stand-in for gcloud: appends its argv (one shell-quoted line) to $FAKE_LOG; `describe` prints
# $FAKE_STATE (fails if it is empty, like a missing TPU); fails with 3 on the step named in
# $FAKE_FAIL ("train" for the training ssh, or a verb such as "create").
FAKE_GCLOUD = r"""#!{python}
import os, shlex, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(shlex.join(["gcloud"] + args) + "\n")
fail = os.environ.get("FAKE_FAIL", "")
if args[3] == "describe":
    state = os.environ.get("FAKE_STATE", "")
    print(state)
    sys.exit(0 if state else 1)
is_train = any("experiments.train" in a for a in args)
sys.exit(3 if fail and (fail == "train" and is_train or fail == args[3]) else 0)
"""


@pytest.fixture
def fake_env(tmp_path):
    """Env with a logging fake gcloud first on PATH and TMPDIR (the tarball) in tmp_path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(FAKE_GCLOUD.format(python=sys.executable))
    gcloud.chmod(gcloud.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               TMPDIR=str(tmp_path), FAKE_LOG=str(tmp_path / "gcloud.log"))
    env.pop("FAKE_FAIL", None)
    env.pop("FAKE_STATE", None)
    return env


def launch(args, env, **extra_env):
    return subprocess.run([sys.executable, "-m", "experiments.launch_tpu", *args], check=False,
                          cwd=ROOT, env={**env, **extra_env}, capture_output=True, text=True,
                          timeout=60)


def gcloud_log(env):
    path = env["FAKE_LOG"]
    return open(path).read().splitlines() if os.path.exists(path) else []


def expected_steps(tmp_path, *, project=None, spot=False, reuse=False, delete_after=False,
                   extra=()):
    """The commands, written out independently of launch_tpu.tpu_commands."""
    tarball = str(tmp_path / "moejax-my-tpu.tar.gz")
    where = ["--zone=us-east5-a"] + ([f"--project={project}"] if project else [])
    setup = ('rm -rf ~/moejax && mkdir -p ~/moejax && tar -xzf ~/moejax.tar.gz -C ~/moejax && '
             'export PATH="$HOME/.local/bin:$PATH" && (command -v uv >/dev/null || curl -LsSf '
             'https://astral.sh/uv/install.sh | sh) && uv venv --allow-existing --python 3.12 '
             '~/moejax-venv && uv pip install --python ~/moejax-venv/bin/python -U '
             '"jax[tpu]" -e "$HOME/moejax[gcs]"')
    extra_text = "".join(" " + shlex.quote(a) for a in extra)
    steps = [["git", "-C", ROOT, "archive", "--format=tar.gz", f"--output={tarball}", "HEAD"]]
    if reuse:
        steps.append(TPU + ["describe", "my-tpu", *where, "--format=value(state)"])
    steps.append(TPU + ["create", "my-tpu", *where, "--accelerator-type=v5litepod-16",
                        "--version=v2-alpha-tpuv5-lite"] + (["--spot"] if spot else []))
    steps.append(TPU + ["scp", tarball, "my-tpu:~/moejax.tar.gz", "--worker=all", *where])
    steps.append(TPU + ["ssh", "my-tpu", "--worker=all", *where, f"--command={setup}"])
    steps.append(TPU + ["ssh", "my-tpu", "--worker=all", *where,
                        "--command=" + TRAIN.format(extra=extra_text)])
    if delete_after:
        steps.append(TPU + ["delete", "my-tpu", *where, "--quiet"])
    return steps


def listing(steps, reuse=False):
    lines = []
    for i, argv in enumerate(steps, 1):
        line = f"[{i}/{len(steps)}] {shlex.join(argv)}"
        if reuse and argv[4:5] == ["create"]:
            line += "  # skipped if the describe finds the TPU READY"
        if argv[4:5] == ["delete"]:
            line += "  # runs even if an earlier step fails, once the TPU is up"
        lines.append(line)
    return lines


@pytest.mark.parametrize("options", [
    {},
    {"project": "my-proj", "spot": True},
    {"reuse": True, "delete_after": True, "extra": ("--config.mesh.expert=16", "--x=a b")},
    {"project": "p-1", "spot": True, "reuse": True, "delete_after": True,
     "extra": ("--config.train.num_steps=10",)},
])
def test_dry_run_prints_the_steps_and_runs_nothing(options, fake_env, tmp_path):
    args = [*BASE, "--dry_run"]
    if "project" in options:
        args.append(f"--project={options['project']}")
    args += [f"--{name}" for name in ("spot", "reuse", "delete_after") if options.get(name)]
    extra = options.get("extra", ())
    if extra:       # the first through --train_flag, the rest after --
        args += [f"--train_flag={extra[0]}", "--", *extra[1:]]
    result = launch(args, fake_env)
    assert result.returncode == 0, result.stderr
    steps = expected_steps(tmp_path, **options)
    assert result.stdout.splitlines() == listing(steps, reuse=options.get("reuse", False))
    assert gcloud_log(fake_env) == []                      # gcloud never called
    assert not os.path.exists(tmp_path / "moejax-my-tpu.tar.gz")   # git archive not run


def test_tpu_commands_is_the_printed_listing(tmp_path):
    steps = launch_tpu.tpu_commands(
        tpu="my-tpu", zone="us-east5-a", accelerator_type="v5litepod-16",
        config="configs/switch.py:base", workdir="gs://my-bucket/switch_base", repo=ROOT,
        tarball=str(tmp_path / "moejax-my-tpu.tar.gz"), project="my-proj", reuse=True,
        delete_after=True, train_args=["--config.mesh.expert=16"])
    assert steps == expected_steps(tmp_path, project="my-proj", reuse=True, delete_after=True,
                                   extra=("--config.mesh.expert=16",))


@pytest.mark.parametrize("accelerator,version", [
    ("v4-32", "tpu-ubuntu2204-base"), ("v5p-8", "v2-alpha-tpuv5"),
    ("v6e-8", "v2-alpha-tpuv6e"), ("v3-8", "tpu-ubuntu2204-base")])
def test_runtime_version_follows_the_generation(accelerator, version, tmp_path):
    steps = launch_tpu.tpu_commands(
        tpu="t", zone="us-central2-b", accelerator_type=accelerator,
        config="configs/switch.py:base", workdir="gs://bkt/run", repo=ROOT, tarball="x.tar.gz")
    assert f"--version={version}" in steps[1]


@pytest.mark.parametrize("args,message", [
    (["--workdir=/tmp/run"], "--workdir=/tmp/run must be gs://bucket/path: each worker"),
    (["--accelerator_type=v5litepod-8", "--workdir=/tmp/run", "--delete_after"],
     "with --delete_after"),
    (["--accelerator_type=v5litepod-8", "--workdir=runs/x"], "or an absolute path"),
    (["--accelerator_type=tpu-16"], "--accelerator_type='tpu-16' does not look like a TPU type"),
    (["--accelerator_type=v5litepod16"], "does not look like a TPU type"),
    (["--accelerator_type=v9x-16"], "no default --runtime_version for v9x-16"),
    (["--config=configs/nope.py:base"], "--config file configs/nope.py does not exist"),
    (["--config=switch"], "must be a .py file relative to the repository"),
    (["--tpu=My_TPU"], "--tpu='My_TPU' must be 1-63 lowercase letters"),
    (["--tpu=tpu-"], "--tpu='tpu-' must be"),
    (["--zone=central"], "--zone='central' does not look like a zone"),
    (["--", "config.mesh.expert=8"], "must start with --"),
    (["--", "--workdir=gs://bkt/other"], "is set by the launcher"),
    (["--workdir=gs://B/run"], "is not a valid gs://bucket/path"),
])
def test_bad_input_is_one_error_line(args, message, fake_env):
    cut = args.index("--") if "--" in args else len(args)
    replaced = {a.split("=")[0] for a in args[:cut]}
    argv = [*(a for a in BASE if a.split("=")[0] not in replaced), *args[:cut], "--dry_run",
            *args[cut:]]
    result = launch(argv, fake_env)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert gcloud_log(fake_env) == []


def test_run_calls_every_step_in_order(fake_env, tmp_path):
    result = launch([*BASE, "--allow_dirty", "--delete_after", "--",
                     "--config.mesh.expert=16"], fake_env)
    assert result.returncode == 0, result.stderr
    steps = expected_steps(tmp_path, delete_after=True, extra=("--config.mesh.expert=16",))
    assert gcloud_log(fake_env) == [shlex.join(argv) for argv in steps[1:]]
    assert result.stdout.splitlines() == listing(steps)
    assert not os.path.exists(tmp_path / "moejax-my-tpu.tar.gz")    # removed after the run


def test_training_failure_still_deletes_the_tpu(fake_env, tmp_path):
    result = launch([*BASE, "--allow_dirty", "--delete_after"], fake_env, FAKE_FAIL="train")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: step 5/6 (ssh) failed with exit code 3")
    log = gcloud_log(fake_env)
    assert [line.split()[4] for line in log] == ["create", "scp", "ssh", "ssh", "delete"]
    assert log[-1] == "gcloud compute tpus tpu-vm delete my-tpu --zone=us-east5-a --quiet"


def test_failed_create_does_not_delete(fake_env):
    result = launch([*BASE, "--allow_dirty", "--delete_after"], fake_env, FAKE_FAIL="create")
    assert result.returncode == 1
    assert "error: step 2/6 (create) failed with exit code 3" in result.stderr
    assert [line.split()[4] for line in gcloud_log(fake_env)] == ["create"]


def test_reuse_skips_create_when_ready(fake_env):
    result = launch([*BASE, "--allow_dirty", "--reuse"], fake_env, FAKE_STATE="READY")
    assert result.returncode == 0, result.stderr
    assert [line.split()[4] for line in gcloud_log(fake_env)] == ["describe", "scp", "ssh",
                                                                 "ssh"]
    assert "skipped: TPU my-tpu exists and is READY (--reuse)" in result.stdout


def test_reuse_creates_when_missing_and_refuses_other_states(fake_env):
    result = launch([*BASE, "--allow_dirty", "--reuse"], fake_env)
    assert result.returncode == 0, result.stderr
    assert [line.split()[4] for line in gcloud_log(fake_env)][:2] == ["describe", "create"]
    os.remove(fake_env["FAKE_LOG"])
    result = launch([*BASE, "--allow_dirty", "--reuse", "--delete_after"], fake_env,
                    FAKE_STATE="PREEMPTED")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: TPU my-tpu exists in state PREEMPTED; delete it or wait until it is READY")
    assert [line.split()[4] for line in gcloud_log(fake_env)] == ["describe"]   # no delete


def test_uncommitted_files_lists_changed_tracked_files(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t",
                        *args], check=True, capture_output=True)
    git("init", "-q")
    (tmp_path / "a.py").write_text("a = 1\n")
    git("add", "a.py")
    git("commit", "-q", "-m", "a")
    (tmp_path / "untracked.py").write_text("")
    assert launch_tpu.uncommitted_files(str(tmp_path)) == []
    (tmp_path / "a.py").write_text("a = 2\n")
    assert launch_tpu.uncommitted_files(str(tmp_path)) == ["a.py"]


def test_sbatch_script_parses():
    subprocess.run(["bash", "-n", SBATCH], check=True)


def test_sbatch_runs_srun_with_the_train_flags(tmp_path):
    srun = tmp_path / "srun"
    srun.write_text('#!/bin/bash\nprintf "%s\\n" "$@" > "$SRUN_LOG"\n')
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}",
               SRUN_LOG=str(tmp_path / "srun.log"), SLURM_SUBMIT_DIR=ROOT,
               CONFIG="configs/switch.py:base", WORKDIR="/shared/run dir",
               EXTRA="--config.mesh.expert=8 --config.train.num_steps=10")
    env.pop("VENV", None)
    subprocess.run(["bash", SBATCH], env=env, check=True, capture_output=True, cwd=tmp_path)
    assert (tmp_path / "srun.log").read_text().splitlines() == [
        "--kill-on-bad-exit=1", "python", "-m", "experiments.train", "--distributed",
        "--config=configs/switch.py:base", "--workdir=/shared/run dir",
        "--config.mesh.expert=8", "--config.train.num_steps=10"]
    del env["CONFIG"]
    result = subprocess.run(["bash", SBATCH], check=False, env=env, capture_output=True,
                            text=True)
    assert result.returncode == 1 and result.stderr.startswith("error: set CONFIG and WORKDIR")


def test_launcher_does_not_import_jax():
    code = "import sys, experiments.launch_tpu; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("accelerator, topology", [
    ("v5p-16", "v5p-8"), ("v4-32", "v4-16"), ("v5litepod-16", "v5e-16"), ("v6e-8", "v6e-8")])
def test_aot_check_compiles_for_the_slices_chips(accelerator, topology):
    """Cloud counts TensorCores for v4 and v5p (two per chip), chips for v5e and v6e."""
    command = launch_tpu.aot_command("configs/switch.py:base", accelerator,
                                     ["--config.mesh.expert=16", "--steps=10"])
    assert command[1:] == ["-m", "experiments.aot", "--config=configs/switch.py:base",
                           f"--topology={topology}", "--config.mesh.expert=16"]


def test_a_failing_aot_check_stops_before_gcloud(fake_env):
    """The check runs first; a dry run lists it before the steps; when it fails (the run would
    not fit, or no libtpu here) the launch stops with one line and nothing is created."""
    argv = [a for a in BASE if a != "--skip_aot_check"]
    dry = launch([*argv, "--dry_run"], fake_env)
    assert dry.stdout.splitlines()[0].startswith("[check] ") and "--topology=v5e-16" in dry.stdout
    assert gcloud_log(fake_env) == []
    with pytest.raises(launch_tpu.LaunchError, match="the ahead-of-time check failed .exit 1"):
        launch_tpu.run_aot_check([sys.executable, "-c", "raise SystemExit(1)"], "v5litepod-16")
    with pytest.raises(launch_tpu.LaunchError, match="no ahead-of-time check for v3-8"):
        launch_tpu.aot_topology("v3-8")


# xpk (GKE): a stand-in that logs its argv and the files of --script-dir (what would be shipped)
FAKE_XPK = r"""#!{python}
import os, shlex, sys
args = sys.argv[1:]
script_dir = next(a.split("=", 1)[1] for a in args if a.startswith("--script-dir="))
shipped = sorted(os.path.relpath(os.path.join(d, f), script_dir)
                 for d, _, files in os.walk(script_dir) for f in files)
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(shlex.join(["xpk"] + args) + "\n")
    log.write("shipped " + " ".join(shipped) + "\n")
"""
XPK = ["--launcher=xpk", "--cluster=my-cluster", "--workload=switch-base", "--zone=us-east5-a",
       "--accelerator_type=v5p-16", "--config=configs/switch.py:base",
       "--workdir=gs://my-bucket/switch_base", "--skip_aot_check"]


def expected_xpk_steps(tmp_path, project=None, extra=()):
    """The xpk commands, written out independently of experiments.xpk_launch."""
    scratch = str(tmp_path / "moejax-switch-base")
    command = ('pip install -q -U "jax[tpu]" -e ".[gcs]" && PYTHONUNBUFFERED=1 python -m '
               "experiments.train --distributed --config=configs/switch.py:base "
               "--workdir=gs://my-bucket/switch_base" + "".join(" " + shlex.quote(a)
                                                               for a in extra))
    return [["git", "-C", ROOT, "archive", "--format=tar", f"--output={scratch}.tar", "HEAD"],
            ["mkdir", "-p", scratch], ["tar", "-xf", f"{scratch}.tar", "-C", scratch],
            ["xpk", "workload", "create", "--cluster=my-cluster", "--workload=switch-base",
             "--tpu-type=v5p-16", "--num-slices=1", "--base-docker-image=python:3.12",
             f"--script-dir={scratch}", f"--command={command}", "--zone=us-east5-a"]
            + ([f"--project={project}"] if project else [])]


@pytest.fixture
def fake_xpk_env(fake_env, tmp_path):
    xpk = tmp_path / "bin" / "xpk"
    xpk.write_text(FAKE_XPK.format(python=sys.executable))
    xpk.chmod(xpk.stat().st_mode | stat.S_IEXEC)
    return fake_env


def test_xpk_dry_run_prints_the_steps(fake_xpk_env, tmp_path):
    result = launch([*XPK, "--project=my-proj", "--dry_run", "--", "--config.mesh.expert=8"],
                    fake_xpk_env)
    assert result.returncode == 0, result.stderr
    steps = expected_xpk_steps(tmp_path, "my-proj", ("--config.mesh.expert=8",))
    lines = result.stdout.splitlines()
    assert lines[:-1] == [f"[{i}/4] {shlex.join(s)}" for i, s in enumerate(steps, 1)]
    assert lines[-1].startswith("# then follow it with: xpk workload list "
                                "--cluster=my-cluster --filter-by-job=switch-base")
    assert gcloud_log(fake_xpk_env) == []


def test_xpk_run_ships_the_committed_tree(fake_xpk_env, tmp_path):
    result = launch([*XPK, "--allow_dirty"], fake_xpk_env)
    assert result.returncode == 0, result.stderr
    argv, shipped = gcloud_log(fake_xpk_env)
    assert shlex.split(argv) == expected_xpk_steps(tmp_path)[-1]
    files = shipped.split()[1:]
    assert {"setup.py", "configs/switch.py", "experiments/train.py"} <= set(files)
    assert not any(f.startswith((".venv", ".git/")) for f in files)
    assert "queued; follow it with: xpk workload list" in result.stdout
    assert not os.path.exists(tmp_path / "moejax-switch-base")           # scratch removed
    assert not os.path.exists(tmp_path / "moejax-switch-base.tar")


@pytest.mark.parametrize("args, message", [
    (["--cluster="], "--launcher=xpk needs --cluster"),
    (["--workload=" + "w" * 41], "--workload='" + "w" * 41 + "' must be 1-40 lowercase"),
    (["--workdir=/tmp/run"], "must be gs://bucket/path with --launcher=xpk"),
    (["--tpu=my-tpu"], "--tpu is not used with --launcher=xpk"),
    (["--launcher=gcloud", "--tpu=t"], "--cluster is not used with --launcher=gcloud"),
])
def test_xpk_bad_input_is_one_error_line(args, message, fake_xpk_env):
    replaced = {a.split("=")[0] for a in args}
    argv = [*(a for a in XPK if a.split("=")[0] not in replaced), *args, "--dry_run"]
    result = launch(argv, fake_xpk_env)
    lines = [line for line in result.stderr.splitlines() if not line.startswith("warning:")]
    assert result.returncode == 1 and result.stdout == ""
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_xpk_missing_is_one_error_line(monkeypatch):
    from experiments import xpk_launch
    monkeypatch.setattr(xpk_launch.shutil, "which", lambda name: None)
    with pytest.raises(launch_tpu.LaunchError, match=r"^xpk not found on PATH; pip install xpk"):
        xpk_launch.run_xpk_steps([["xpk", "workload", "list", "--cluster=c"]])
