"""Two local processes (127.0.0.1, gloo CPU collectives, 4 CPU devices each) train a sharded MoE.

Each process runs tests/multihost_worker.py: jax.distributed through moejax.parallel.initialize,
a data=2 × expert=4 mesh over the 8 devices of both processes (so the MoE layer's all_to_alls
cross processes), and a few training steps of a tiny decoder MoE. The two-process run must match
one process with 8 devices; and when one process is killed, the other must exit non-zero within
60 s instead of hanging.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multihost_worker.py")
ROOT = os.path.dirname(os.path.dirname(WORKER))
STEPS = 3
START_TIMEOUT = 240          # seconds for a run (or its first steps) incl. compiling on 2 cores
DETECT_TIMEOUT = 60          # the survivor of a killed process must exit within this


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# No shared persistent compilation cache for the workers: two processes running the same
# program, one loading it from the cache while the other compiles (or both loading it), made
# XLA:CPU's gloo set-up time out ("Gloo context initialization failed ... GetKeyValue() timed
# out") in the kill tests once an earlier test had filled the cache; compiling in both
# processes is reliable.
WORKER_ENV = {**os.environ, "JAX_ENABLE_COMPILATION_CACHE": "false"}


def start(tmp_path, name, *args):
    """A worker process with its output in tmp_path/name.log; returns (Popen, log path)."""
    log = tmp_path / f"{name}.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-u", WORKER, *map(str, args)], cwd=ROOT,
                                env=WORKER_ENV,
                                stdout=f, stderr=subprocess.STDOUT)
    return proc, log


def tail(log, n=3000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else "(no log)"


def stop(procs):
    for proc, _ in procs:
        if proc.poll() is None:
            proc.kill()
    for proc, _ in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass


def wait_all(procs, timeout):
    deadline = time.monotonic() + timeout
    for proc, log in procs:
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker did not finish within {timeout} s:\n{tail(log)}")
        assert proc.returncode == 0, f"worker exited with {proc.returncode}:\n{tail(log)}"


def close(a, b, rtol=1e-5):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.all(np.abs(a - b) <= rtol * np.maximum(np.abs(b), 1.0))


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    out = tmp_path / "result.json"
    port = free_port()
    procs = []
    try:
        procs.append(start(tmp_path, "single", "single", tmp_path / "single.json",
                           "--steps", STEPS))
        for i in range(2):
            procs.append(start(tmp_path, f"multi{i}", "multi", out, "--process_id", i,
                               "--port", port, "--steps", STEPS))
        wait_all(procs, START_TIMEOUT)
    finally:
        stop(procs)
    single = json.loads((tmp_path / "single.json.p0").read_text())
    multi = [json.loads((tmp_path / f"result.json.p{i}").read_text()) for i in range(2)]
    assert single["process_count"] == 1
    assert [m["process_count"] for m in multi] == [2, 2]
    assert [m["process_id"] for m in multi] == [0, 1]
    assert len(single["losses"]) == STEPS and np.all(np.isfinite(single["losses"]))
    assert len(single["checksums"]) > 5
    for m in multi:
        assert close(m["losses"], single["losses"]), (m["losses"], single["losses"])
        assert close(m["grad_norms"], single["grad_norms"])
        assert m["checksums"].keys() == single["checksums"].keys()
        for name, value in single["checksums"].items():
            assert close(m["checksums"][name], value), (name, m["checksums"][name], value)
    # training changed the parameters (the comparison is not of untouched initial values)
    assert single["losses"][0] != single["losses"][1]


@pytest.mark.slow
@pytest.mark.parametrize("victim", [1, 0], ids=["kill_worker", "kill_coordinator"])
def test_killed_process_makes_the_other_exit(tmp_path, victim):
    """SIGKILL one process after it has trained a step: the other exits non-zero within 60 s.

    JAX's coordination service aborts the survivor (SIGABRT): the coordinator once the dead
    worker misses heartbeats for heartbeat_timeout_seconds (10 here; with the default 100 it
    takes ~95 s), a worker at once when the coordinator's connection closes. The gloo collective
    with the dead peer sometimes fails first ("Connection reset by peer") and sometimes blocks;
    either way the heartbeat timeout bounds the wait."""
    port = free_port()
    procs = [start(tmp_path, f"p{i}", "multi", tmp_path / "forever.json", "--process_id", i,
                   "--port", port, "--forever", "--heartbeat_timeout", 10) for i in range(2)]
    try:
        (killed, killed_log), (survivor, survivor_log) = procs[victim], procs[1 - victim]
        deadline = time.monotonic() + START_TIMEOUT
        while "step 2 done" not in tail(killed_log, 10**6):
            for proc, log in procs:
                assert proc.poll() is None, f"worker exited early ({proc.returncode}):\n{tail(log)}"
            assert time.monotonic() < deadline, f"no training step:\n{tail(killed_log)}"
            time.sleep(0.2)
        killed.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        try:
            survivor.wait(timeout=DETECT_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"process {1 - victim} still runs {DETECT_TIMEOUT} s after process "
                        f"{victim} was killed:\n{tail(survivor_log)}")
        elapsed = time.monotonic() - killed_at
        assert killed.wait(timeout=30) == -signal.SIGKILL
        assert survivor.returncode != 0, tail(survivor_log)
        print(f"process {1 - victim} exited with {survivor.returncode} {elapsed:.1f} s after "
              f"process {victim} was killed")
        assert elapsed < DETECT_TIMEOUT
    finally:
        stop(procs)


def train_command(workdir, data_dir, *extra):
    """experiments.train on a tiny decoder MoE (top-2, dropless) over a data=2 × expert=4 mesh."""
    return [sys.executable, "-u", "-m", "experiments.train", "--config=configs/mixtral.py:tiny",
            f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
            "--config.data.seq_length=32", "--config.data.batch_size=8",
            "--config.data.shuffle_buffer_size=8", "--config.model.num_layers=2",
            "--config.model.d_model=32", "--config.model.num_heads=2",
            "--config.model.head_dim=16", "--config.model.d_ff=64", "--config.moe.hidden_dim=32",
            "--config.mesh.data=2", "--config.mesh.expert=4", "--config.train.num_steps=2",
            "--config.train.log_every=1", "--config.train.eval_every=2",
            "--config.train.eval_batches=2", "--config.train.checkpoint_every=2", *extra]


@pytest.mark.slow
def test_trainer_on_two_processes(tmp_path, data_dir):
    """The whole trainer on two gloo processes: global batches from per-process data, the
    same evaluation steps on both, one log writer, and a checkpoint holding both processes'
    iterator states. Each process reads its own documents (process_index::process_count), so
    the batches differ from one process's: the losses are compared loosely (same model, same
    corpus), the step-for-step numerics are test_two_processes_match_one_process's job."""
    port = free_port()
    flags = "--xla_backend_optimization_level=0 --xla_force_host_platform_device_count="
    procs = []
    try:
        for name, devices, extra in [
                ("single", 8, ()),
                *[(f"p{i}", 4, ("--coordinator_address", f"127.0.0.1:{port}",
                                "--num_processes=2", f"--process_id={i}",
                                "--cpu_collectives=gloo")) for i in range(2)]]:
            log = tmp_path / f"{name}.log"
            workdir = tmp_path / ("single" if name == "single" else "multi")
            env = {**WORKER_ENV, "XLA_FLAGS": flags + str(devices)}
            with open(log, "w") as f:
                procs.append((subprocess.Popen(train_command(workdir, data_dir, *extra),
                                               cwd=ROOT, env=env, stdout=f,
                                               stderr=subprocess.STDOUT), log))
        wait_all(procs, START_TIMEOUT)
    finally:
        stop(procs)
    records = {}
    for name in ("single", "multi"):
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        records[name] = [json.loads(line) for line in lines]
    # one writer: every (step, split) once
    keys = [(r["step"], r["split"]) for r in records["multi"]]
    assert keys == [(0, "eval"), (1, "train"), (2, "train"), (2, "eval")]
    for a, b in zip(records["multi"], records["single"]):
        for key in ("loss", "cross_entropy"):
            if key in b:
                assert np.isfinite(a[key]) and abs(a[key] - b[key]) < 0.1 * b[key], (a, b)
    data_state = tmp_path / "multi" / "checkpoints" / "2" / "data" / "metadata"
    states = json.loads(data_state.read_text())["processes"]
    assert len(states) == 2 and all(s["counter"] == 8 for s in states)   # 2 steps × 4 rows each
