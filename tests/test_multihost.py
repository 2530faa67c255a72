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


def start(tmp_path, name, *args):
    """A worker process with its output in tmp_path/name.log; returns (Popen, log path)."""
    log = tmp_path / f"{name}.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-u", WORKER, *map(str, args)], cwd=ROOT,
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
