"""Fault cases: every failure stops with one line, never poisons or loses a checkpoint, and
no run can trample another (issue: reliability). Micro models on the embedded corpus."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from moejax.checkpoints.store import Checkpointer
from moejax.errors import ConfigError
from moejax.train import trainer
from moejax.train.logs import read_log
from moejax.train.stop import STOP
from moejax.train.workdir_lock import LOCK_NAME, WorkdirBusy, WorkdirLock
from test_train import ROOT, micro


def after_step(monkeypatch, n, action):
    """Makes the trainer's n-th train step return action(model, metrics); returns the real
    train step."""
    real_step = trainer.train_step
    calls = {"n": 0}

    def step(model, optimizer, batch, *args):
        calls["n"] += 1
        metrics = real_step(model, optimizer, batch, *args)
        return action(model, metrics) if calls["n"] == n else metrics

    monkeypatch.setattr(trainer, "train_step", step)
    return real_step


def test_nan_stops_training_and_keeps_the_last_checkpoint(data_dir, tmp_path, monkeypatch):
    real_step = after_step(monkeypatch, 3, lambda model, metrics: {**metrics,
                                                                   "loss": float("nan")})
    config = micro("glam", data_dir, steps=5)
    config.train.update(checkpoint_every=2, eval_every=5)
    with pytest.raises(trainer.TrainingDiverged,
                       match=r"loss is nan \(gradient norm .*\) at step 3.*step 2"):
        trainer.train_and_evaluate(config, str(tmp_path))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
    monkeypatch.setattr(trainer, "train_step", real_step)
    trainer.train_and_evaluate(config, str(tmp_path))             # resumes from step 2
    assert [r["step"] for r in read_log(str(tmp_path)) if r["split"] == "train"] == [1, 2, 3, 4, 5]


def test_bad_config_fails_before_compiling_and_keeps_checkpoints(data_dir, tmp_path):
    trainer.train_and_evaluate(micro("glam", data_dir, steps=2), str(tmp_path))
    before = read_log(str(tmp_path))
    not_a_model = tmp_path / "not_a.model"
    not_a_model.write_bytes(b"this is not a protobuf")
    for field, value, message in [
            ("moe", dict(num_selected_experts=9), r"moe\.num_selected_experts=9"),
            ("moe", dict(router="top3"), r"moe\.router='top3'"),
            ("model", dict(num_heads=3, head_dim=None), r"model\.d_model=32 must be divisible"),
            ("data", dict(seq_length=1), r"data\.seq_length=1"),
            ("optimizer", dict(name="sgd"), r"optimizer\.name='sgd'"),
            ("optimizer", dict(learning_rate=-0.01), r"optimizer\.learning_rate=-0\.01 must"),
            ("optimizer", dict(learning_rate=float("nan")),
             r"optimizer\.learning_rate=nan must be a finite number"),
            ("optimizer", dict(schedule="bogus"), r"optimizer\.schedule='bogus'"),
            ("moe", dict(group_size=100),
             r"moe\.group_size=100 must divide the decoder's tokens per \(micro\)batch, "
             r".* = 4·32 = 128"),
            ("data", dict(eval_split="bogus"), r"split='bogus' is not a split"),
            ("data", dict(tfds_name="no_such_dataset"),
             r"data\.tfds_name='no_such_dataset' is not a tfds dataset"),
            ("data", dict(tokenizer="sentencepiece", spm_model_path=str(not_a_model)),
             r"data\.spm_model_path='.*not_a\.model' is not a SentencePiece model"),
            ("train", dict(eval_every=0), r"train\.eval_every=0"),
            ("moe", dict(num_experts=4), r"checkpoint .*2 was written with a different model "
                                         r"config: model/.*/experts/wi is \(.*8.*\) there but "
                                         r"\(.*4.*\) in this config"),
            ("train", dict(restore_step=7), r"train\.restore_step=7 is not a saved step .*"
                                             r"\(saved: 2\)")]:
        config = micro("glam", data_dir, steps=4)
        config[field].update(value)
        with pytest.raises(ConfigError, match=message) as err:
            trainer.train_and_evaluate(config, str(tmp_path))
        assert "\n" not in str(err.value)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
    assert len(read_log(str(tmp_path))) == len(before)
    with pytest.raises(ConfigError, match=r"--workdir .*metrics\.jsonl is a file"):
        trainer.train_and_evaluate(micro("glam", data_dir), str(tmp_path / "metrics.jsonl"))


def test_corrupt_checkpoint_names_the_way_back(data_dir, tmp_path):
    config = micro("glam", data_dir, steps=2)
    config.train.checkpoint_every = 1
    trainer.train_and_evaluate(config, str(tmp_path))
    state_dir = tmp_path / "checkpoints" / "2" / "state"
    for root, _, files in os.walk(state_dir):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"garbage")
    with pytest.raises(ConfigError, match=r"checkpoint .*2 cannot be restored .* resume from "
                                          r"step 1 with --config\.train\.restore_step=1") as err:
        trainer.train_and_evaluate(micro("glam", data_dir, steps=4), str(tmp_path))
    assert "\n" not in str(err.value)
    resumed = micro("glam", data_dir, steps=4)
    resumed.train.restore_step = 1
    trainer.train_and_evaluate(resumed, str(tmp_path))
    assert os.listdir(tmp_path / "checkpoints_set_aside") == ["2"]          # kept, moved aside
    assert [r["step"] for r in read_log(str(tmp_path)) if r["split"] == "train"] == [1, 2, 3, 4]


def test_a_state_that_is_not_finite_is_never_saved(data_dir, tmp_path, monkeypatch):
    """The loss is computed before the update: a step can leave NaN weights behind a finite
    loss (a learning rate of inf does). Its checkpoint must not be written."""
    def poison(model, metrics):
        nnx.update(model, jax.tree.map(lambda x: x * jnp.nan, nnx.state(model, nnx.Param)))
        return metrics

    real_step = after_step(monkeypatch, 2, poison)
    config = micro("glam", data_dir, steps=3)
    config.train.update(checkpoint_every=1, eval_every=3)
    with pytest.raises(trainer.TrainingDiverged,
                       match=r"not finite after step 2; not saved\. The last good checkpoint "
                             r"is step 1") as err:
        trainer.train_and_evaluate(config, str(tmp_path))
    assert "\n" not in str(err.value)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"]
    monkeypatch.setattr(trainer, "train_step", real_step)
    result = trainer.train_and_evaluate(config, str(tmp_path))   # resumes from the finite step 1
    assert np.isfinite(result["cross_entropy"])
    with Checkpointer(str(tmp_path), 3) as checkpoints:
        assert checkpoints.latest_step() == 3


def test_a_full_disk_gives_one_line_and_keeps_the_last_checkpoint(data_dir, tmp_path,
                                                                   monkeypatch):
    """The write of step 2 fails as a full disk makes it fail (injected: orbax's save raises
    ENOSPC); step 1 stays complete and the run resumes from it."""
    import errno
    import orbax.checkpoint as ocp
    real_save = ocp.CheckpointManager.save

    def full_disk(self, step, *args, **kwargs):
        if step == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
    config = micro("glam", data_dir, steps=3)
    config.train.update(checkpoint_every=1, eval_every=3)
    from moejax.checkpoints.store import CheckpointWriteFailed
    with pytest.raises(CheckpointWriteFailed, match=r"step 2 could not be written \(disk full "
                                                    r"at .*checkpoints\); the last complete "
                                                    r"checkpoint is step 1") as err:
        trainer.train_and_evaluate(config, str(tmp_path))
    assert "\n" not in str(err.value)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"]
    monkeypatch.setattr(ocp.CheckpointManager, "save", real_save)
    trainer.train_and_evaluate(config, str(tmp_path))                   # resumes from step 1
    assert [r["step"] for r in read_log(str(tmp_path)) if r["split"] == "train"] == [1, 2, 3]


def test_the_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    with WorkdirLock(str(tmp_path)) as first:
        assert first.held
        with pytest.raises(WorkdirBusy, match=rf"in use by process {os.getpid()} on host "
                                              rf"{socket.gethostname()}"):
            WorkdirLock(str(tmp_path)).acquire()
    assert not os.path.exists(tmp_path / LOCK_NAME)                # released on exit
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with open(tmp_path / LOCK_NAME, "w") as f:                       # left by a kill -9
        json.dump({"host": socket.gethostname(), "pid": dead.pid, "started": "x"}, f)
    with WorkdirLock(str(tmp_path)) as lock:
        assert lock.held and lock.stale["pid"] == dead.pid
    with open(tmp_path / LOCK_NAME, "w") as f:                       # another machine's
        json.dump({"host": "elsewhere", "pid": 1, "started": "x"}, f)
    with pytest.raises(WorkdirBusy, match=r"host elsewhere .*if that run is dead, delete"):
        WorkdirLock(str(tmp_path)).acquire()


def test_a_second_run_on_a_busy_workdir_refuses_before_building(data_dir, tmp_path):
    trainer.train_and_evaluate(micro("glam", data_dir, steps=1), str(tmp_path))
    before = read_log(str(tmp_path))
    with open(tmp_path / LOCK_NAME, "w") as f:                       # a live run: our parent
        json.dump({"host": socket.gethostname(), "pid": os.getppid(), "started": "x"}, f)
    with pytest.raises(WorkdirBusy, match=rf"process {os.getppid()}") as err:
        trainer.train_and_evaluate(micro("glam", data_dir, steps=2), str(tmp_path))
    assert "\n" not in str(err.value)
    assert read_log(str(tmp_path)) == before                         # nothing appended
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"]


def test_sigterm_saves_after_the_step_and_returns(data_dir, tmp_path, monkeypatch):
    after_step(monkeypatch, 2, lambda model, metrics: os.kill(os.getpid(), signal.SIGTERM)
               or metrics)
    handler = signal.getsignal(signal.SIGTERM)
    config = micro("glam", data_dir, steps=100)
    config.train.update(checkpoint_every=100, eval_every=100)
    trainer.train_and_evaluate(config, str(tmp_path))
    assert [r["step"] for r in read_log(str(tmp_path)) if r["split"] == "train"] == [1, 2]
    assert os.listdir(tmp_path / "checkpoints") == ["2"]
    assert signal.getsignal(signal.SIGTERM) == handler                  # restored on return
    assert {"loss.png", "expert_load.png"} <= set(os.listdir(tmp_path / "plots"))  # so far


def test_a_stop_during_start_up_trains_nothing(data_dir, tmp_path):
    with STOP:
        STOP.request(signal.SIGTERM)
        trainer.train_and_evaluate(micro("glam", data_dir, steps=3), str(tmp_path))
    assert not os.listdir(tmp_path / "checkpoints")
    assert [r for r in read_log(str(tmp_path)) if r["split"] == "train"] == []
    assert not STOP.requested                                         # reset when uninstalled


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(data_dir, tmp_path):
    workdir = tmp_path / "run"
    cmd = [sys.executable, "-m", "experiments.train", "--config=configs/glam.py:tiny",
           "--config.model.num_layers=2",
           f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
           "--config.data.seq_length=32", "--config.data.batch_size=4",
           "--config.mesh.num_devices=1",
           "--config.data.shuffle_buffer_size=8",
           "--config.model.d_model=32", "--config.model.num_heads=2", "--config.model.head_dim=16",
           "--config.model.d_ff=64", "--config.moe.hidden_dim=32",
           "--config.train.num_steps=100000", "--config.train.log_every=1",
           "--config.train.checkpoint_every=100000", "--config.train.eval_every=100000"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("step 3/"):
            proc.send_signal(signal.SIGINT)
            break
    _, rest = proc.communicate(timeout=120)
    assert proc.returncode == 0, "".join(lines) + rest
    assert "SIGINT: saved step" in rest and "Traceback" not in rest
    saved = os.listdir(workdir / "checkpoints")
    assert len(saved) == 1 and int(saved[0]) >= 3
    assert not os.path.exists(workdir / LOCK_NAME)


def test_a_damaged_log_never_stops_a_run(tmp_path, capsys):
    from moejax.train.logs import MetricsLog
    with open(tmp_path / "metrics.jsonl", "wb") as f:
        f.write(b'{"step": 1, "split": "train", "loss": 3.0}\n42\n{"foo": 1}\n\xff\xfe\n'
                b'{"step": 2, "split": "train", "loss": 2.5}\n{"step": 3, "split": "train"}\n'
                b'{"step": 4, "spl')                                    # killed mid-write
    log = MetricsLog(str(tmp_path), resume_step=2)
    assert log.last("loss") == 2.5
    log.write(3, "train", {"loss": 2.0})
    log.close()
    assert [(r["step"], r["loss"]) for r in read_log(str(tmp_path))] == [(1, 3.0), (2, 2.5),
                                                                          (3, 2.0)]
    err = capsys.readouterr().err
    assert err.count("skipped 3 damaged lines") == 1 and "Traceback" not in err


# --- the Python API ---------------------------------------------------------------------------

def _layer(**cfg):
    from moejax import MoeConfig, make_moe_layer
    return make_moe_layer(MoeConfig(num_experts=4, hidden_dim=8, **cfg), 16, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("args, message", [
    (dict(model_dim=0), r"model_dim=0 must be a positive int"),
    (dict(model_dim=-4), r"model_dim=-4 must be a positive int"),
    (dict(cfg={"num_experts": 4}), r"cfg must be a moejax\.MoeConfig, not dict"),
], ids=["zero-width", "negative-width", "dict-config"])
def test_bad_layer_arguments_give_one_line(args, message):
    from moejax import MoeConfig, make_moe_layer
    call = {**dict(cfg=MoeConfig(num_experts=4, hidden_dim=8), model_dim=16), **args}
    with pytest.raises(ConfigError, match=message):
        make_moe_layer(call["cfg"], call["model_dim"], rngs=nnx.Rngs(0))


@pytest.mark.parametrize("x, message", [
    (np.zeros((2, 0, 16), np.float32), r"no tokens to route"),
    (np.zeros((0, 4, 16), np.float32), r"no tokens to route"),
    (np.zeros((2, 4, 16), np.int32), r"dtype int32; expected a floating-point dtype"),
], ids=["empty-length", "empty-batch", "integers"])
def test_bad_layer_inputs_give_one_line(x, message):
    with pytest.raises(ConfigError, match=message):
        _layer()(jnp.asarray(x))


@pytest.mark.parametrize("router", ["top_k", "soft_moe"])
def test_statistics_of_inputs_that_are_not_finite_are_nan(router):
    layer = _layer(router=router)
    x = np.random.default_rng(0).normal(size=(2, 4, 16)).astype(np.float32)
    _, clean = layer(jnp.asarray(x))
    assert all(np.all(np.isfinite(v)) for v in clean.values())
    for poisoned in (np.full_like(x, np.nan), np.where(np.arange(16) == 3, np.inf, x)):
        _, stats = layer(jnp.asarray(poisoned))
        for name, value in stats.items():
            assert np.all(np.isnan(value)), (name, value)   # not plausible loads or drops


def test_statistics_are_float32_with_a_bfloat16_router():
    """Routing runs in the router's dtype; its losses and metrics do not round to it. The
    reference: the bfloat16 logits (bfloat16 inputs and weights, as Router computes them),
    then logsumexp² and the entropy in float64 NumPy."""
    layer = _layer(router_dtype="bfloat16", router_z_loss=1e-3)
    x = np.random.default_rng(1).normal(size=(2, 8, 16)).astype(np.float32)
    _, stats = layer(jnp.asarray(x), deterministic=True)
    w = np.asarray(layer.router.w[...])
    logits = np.asarray(jnp.einsum("gsd,de->gse", jnp.asarray(x, jnp.bfloat16),
                                   jnp.asarray(w, jnp.bfloat16)), np.float64)
    z = np.log(np.sum(np.exp(logits), axis=-1))
    for name in ("router_z_loss", "router_z", "router_entropy"):
        assert stats[name].dtype == jnp.float32, name
    np.testing.assert_allclose(stats["router_z_loss"], np.mean(z ** 2), rtol=1e-5)
    np.testing.assert_allclose(stats["router_z"], np.mean(z ** 2), rtol=1e-5)


def test_kill_9_then_resume_equals_an_uninterrupted_run(data_dir, tmp_path):
    """SIGKILL after step 5 of 6 (checkpoints every 2 steps): the rerun takes over the dead
    run's lock, resumes from step 4 and logs the same numbers as a run never interrupted."""
    straight = micro("glam", data_dir, steps=6)
    straight.train.checkpoint_every = 2
    trainer.train_and_evaluate(straight, str(tmp_path / "straight"))
    workdir = tmp_path / "killed"
    flags = [f"--config.{k}={v}" for k, v in {
        "model.num_layers": 2, "model.d_model": 32, "model.num_heads": 2, "model.head_dim": 16,
        "model.d_ff": 64, "moe.hidden_dim": 32, "data.data_dir": data_dir,
        "data.seq_length": 32, "data.batch_size": 4, "data.shuffle_buffer_size": 8,
        "mesh.num_devices": 1, "train.num_steps": 6, "train.log_every": 1,
        "train.eval_every": 6, "train.eval_batches": 1, "train.checkpoint_every": 2}.items()]
    proc = subprocess.Popen([sys.executable, "-m", "experiments.train",
                             "--config=configs/glam.py:tiny", f"--workdir={workdir}", *flags],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if line.startswith("step 5/"):
            proc.kill()
            break
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert os.path.exists(workdir / LOCK_NAME)                         # left behind
    trainer.train_and_evaluate(straight, str(workdir))
    a = [r for r in read_log(str(tmp_path / "straight")) if r["split"] == "train"]
    b = [r for r in read_log(str(workdir)) if r["split"] == "train"]
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    for ra, rb in zip(a, b):
        for key in ("loss", "grad_norm"):
            np.testing.assert_allclose(rb[key], ra[key], rtol=1e-6, err_msg=f"{key} {ra['step']}")


def test_sigterm_while_starting_up_exits_cleanly(data_dir, tmp_path):
    """A signal while JAX is still being imported is remembered and honoured before step 1."""
    proc = subprocess.Popen([sys.executable, "-m", "experiments.train",
                             "--config=configs/glam.py:tiny", f"--workdir={tmp_path / 'run'}",
                             f"--config.data.data_dir={data_dir}"],
                            cwd=ROOT, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)                                   # still importing
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "SIGTERM during start-up: stopped before training" in err and "Traceback" not in err
    assert not os.listdir(tmp_path / "run" / "checkpoints")
