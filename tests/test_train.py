"""The trainer end to end on the embedded corpus at micro sizes."""

import json
import os
import sys

import numpy as np
import pytest

from experiments import config_files
from moejax.errors import ConfigError
from moejax.train import trainer
from moejax.train.logs import read_log

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

FAMILIES = ["dense", "switch", "gshard", "st_moe", "expert_choice", "soft_moe", "glam",
            "shazeer", "mixtral", "deepseek_v3", "base_layers", "hierarchical"]


def micro(family, data_dir, steps=3, **train):
    config = config_files.load(family, "tiny")
    config.model.update(d_model=32, num_heads=2, head_dim=16, d_ff=64)
    if config.model.arch == "decoder":
        config.model.num_layers = 2
    if config.model.moe_layout == "top":
        config.model.num_moe_layers = 1
    config.moe.hidden_dim = 16 if family == "deepseek_v3" else 32
    if config.moe.shared_hidden_dim:
        config.moe.shared_hidden_dim = 16
    config.data.update(data_dir=data_dir, seq_length=32, batch_size=4, shuffle_buffer_size=8)
    config.mesh.num_devices = 1          # the 8 virtual test devices are for the sharding tests
    config.train.update(num_steps=steps, log_every=1, eval_every=steps, eval_batches=1,
                        checkpoint_every=steps, eval_encoder_information=False, **train)
    return config


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_trains_a_few_steps(family, data_dir, tmp_path):
    config = micro(family, data_dir)
    result = trainer.train_and_evaluate(config, str(tmp_path))
    assert np.isfinite(result["cross_entropy"])
    records = read_log(str(tmp_path))
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) for r in train)
    if family != "dense":
        load = np.asarray(train[-1]["moe/tokens_per_expert"])          # [MoE layers, E]
        np.testing.assert_allclose(load.sum(-1), 1.0, rtol=1e-5)
    assert os.path.exists(tmp_path / "plots" / "loss.png")
    assert os.listdir(tmp_path / "tensorboard")
    assert os.path.isdir(tmp_path / "checkpoints" / "3")
    with open(tmp_path / "config.json", encoding="utf-8") as f:     # the resolved config
        record = json.load(f)
    assert record["config"] == json.loads(config.to_json_best_effort())
    assert record["command"].startswith(sys.executable)


def test_deepseek_bias_moves_against_the_load(data_dir, tmp_path):
    """Loss-free balancing: after a step, overloaded experts' biases went down by γ."""
    from flax import nnx
    from moejax.data import make_pipeline, make_tokenizer
    from moejax.models import build_model
    from moejax.train.config import resolve
    from moejax.train.optimizer import make_optimizer
    from moejax.train.step import train_step
    import jax
    import jax.numpy as jnp

    config = micro("deepseek_v3", data_dir)
    model = build_model(resolve(config, make_tokenizer(config.data).vocab_size),
                        rngs=nnx.Rngs(0))
    optimizer = make_optimizer(config.optimizer, model, 10)
    batch = jax.tree.map(jnp.asarray, next(make_pipeline(config.data, split="train", seed=0)))
    train_step(model, optimizer, batch, 1e-4)
    routers = [node for _, node in nnx.iter_graph(model)
               if type(node).__name__ == "Router" and hasattr(node, "selection_bias")]
    assert routers
    for router in routers:
        load = np.asarray(router.expert_load[...]).reshape(-1, 16)
        bias = np.asarray(router.selection_bias[...]).reshape(-1, 16)
        expected = 1e-3 * np.sign(load.mean(-1, keepdims=True) - load)
        np.testing.assert_allclose(bias, expected, atol=1e-9)
        assert np.abs(bias).sum() > 0


def test_a_model_overfits_a_fixed_batch(data_dir):
    from flax import nnx
    from moejax.data import make_pipeline, make_tokenizer
    from moejax.models import build_model
    from moejax.train.config import resolve
    from moejax.train.optimizer import make_optimizer
    from moejax.train.step import train_step
    import jax
    import jax.numpy as jnp

    config = micro("mixtral", data_dir)
    config.optimizer.update(name="adamw", learning_rate=3e-3, schedule="constant")
    model = build_model(resolve(config, make_tokenizer(config.data).vocab_size),
                        rngs=nnx.Rngs(0))
    optimizer = make_optimizer(config.optimizer, model, 200)
    batch = jax.tree.map(jnp.asarray, next(make_pipeline(config.data, split="train", seed=0)))
    losses = [float(train_step(model, optimizer, batch, 0.0)["cross_entropy"])
              for _ in range(150)]
    assert losses[-1] < 0.25 * losses[0], (losses[0], losses[-1])


def test_resume_gives_the_same_metrics_step_for_step(data_dir, tmp_path):
    straight = tmp_path / "straight"
    trainer.train_and_evaluate(micro("glam", data_dir, steps=6), str(straight))
    interrupted = tmp_path / "interrupted"
    trainer.train_and_evaluate(micro("glam", data_dir, steps=3), str(interrupted))
    trainer.train_and_evaluate(micro("glam", data_dir, steps=6), str(interrupted))
    a = [r for r in read_log(str(straight)) if r["split"] == "train"]
    b = [r for r in read_log(str(interrupted)) if r["split"] == "train"]
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    for ra, rb in zip(a, b):
        for key in ("loss", "cross_entropy", "moe_aux_loss", "grad_norm"):
            np.testing.assert_allclose(rb[key], ra[key], rtol=1e-6,
                                       err_msg=f"{key} step {ra['step']}")
        np.testing.assert_allclose(rb["moe/tokens_per_expert"], ra["moe/tokens_per_expert"],
                                   rtol=1e-6)


def test_metrics_log_resume_drops_later_and_partial_records(tmp_path):
    from moejax.train.logs import MetricsLog
    log = MetricsLog(str(tmp_path))
    for step in (0, 1, 2, 3):
        log.write(step, "train", {"loss": float(step)})
    log.close()
    with open(tmp_path / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 4, "spl')                                  # killed mid-write
    MetricsLog(str(tmp_path), resume_step=2).close()
    assert [r["step"] for r in read_log(str(tmp_path))] == [0, 1, 2]
    MetricsLog(str(tmp_path), resume_step=0).close()                 # a fresh start
    assert read_log(str(tmp_path)) == []


def test_expert_parallel_training_matches_one_device(data_dir, tmp_path):
    """The trainer (decoder, top-2) on a data=2 × expert=4 mesh (8 virtual devices, shard_map
    all_to_all in every MoE layer) follows the one-device run step for step."""
    losses = {}
    for name, mesh in [("one", dict(num_devices=1)), ("ep", dict(data=2, expert=4))]:
        config = micro("mixtral", data_dir, steps=2)
        config.data.batch_size = 8
        config.mesh.update(num_devices=-1, **mesh) if name == "ep" else config.mesh.update(mesh)
        trainer.train_and_evaluate(config, str(tmp_path / name))
        losses[name] = [r["loss"] for r in read_log(str(tmp_path / name))
                        if r["split"] == "train"]
    np.testing.assert_allclose(losses["ep"], losses["one"], rtol=1e-5)


def test_mesh_that_does_not_fit_the_batch_fails_before_compiling(data_dir, tmp_path):
    config = micro("switch", data_dir)
    config.mesh.update(num_devices=-1, data=2, expert=4)          # batch_size 4 < 8 shards
    with pytest.raises(ConfigError, match=r"data.batch_size=4 must be divisible by the "
                                          r"mesh's 8 batch shards"):
        trainer.train_and_evaluate(config, str(tmp_path))
    assert not os.path.exists(tmp_path / "checkpoints")


@pytest.mark.parametrize("family", ["mixtral", "switch"])
def test_empty_batch_looks_like_a_real_batch_of_padding(family, data_dir):
    """What a process feeds when its share of the eval split has run out (multi-host)."""
    from moejax.data import make_pipeline
    config = micro(family, data_dir)
    pipeline = make_pipeline(config.data, split=config.data.eval_split, seed=0, num_epochs=1)
    real, empty = next(pipeline), pipeline.empty_batch()
    assert sorted(empty) == sorted(real)
    for key in real:
        assert empty[key].shape == real[key].shape and empty[key].dtype == real[key].dtype
        assert not empty[key].any()


def test_a_run_logs_rates_writes_a_profile_and_feeds_wandb(data_dir, tmp_path, monkeypatch):
    """One micro run (3 steps) checks what a run records besides its losses:
    - learning_rate is the rate of that update (cosine warm-up over 2 steps from 0 to 0.01,
      by hand: 0, 0.005, 0.01 for updates 1, 2, 3); step time and rates appear from step 2 on
      (step 1 compiles, so it is not timed) and agree with each other; no MFU on CPU;
    - train.profile_steps='2:3' leaves a jax.profiler trace (xplane.pb) in W/profile;
    - logging.wandb_project sends each record to the W&B run (offline mode here), per-layer
      values by layer name. wandb is not installed in the test environment: a recording
      stand-in takes its place."""
    import importlib.util
    import types
    from moejax.data import make_tokenizer
    from moejax.models import init_model
    from moejax.models.flops import train_flops_per_example
    from moejax.train.config import resolve
    calls = {"init": [], "log": [], "finish": 0}

    class Run:
        def log(self, values, step):
            calls["log"].append((step, values))

        def finish(self):
            calls["finish"] += 1

    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: calls["init"].append(kwargs) or Run()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "wandb" else real_find_spec(name, *a))
    config = micro("glam", data_dir, steps=3, profile_steps="2:3")
    config.optimizer.update(schedule="cosine", warmup_steps=2, learning_rate=0.01)
    config.logging.update(wandb_project="moejax-test", wandb_mode="offline")
    trainer.train_and_evaluate(config, str(tmp_path))
    records = read_log(str(tmp_path))
    train = [r for r in records if r["split"] == "train"]
    assert [r["learning_rate"] for r in train] == pytest.approx([0.0, 0.005, 0.01])
    assert "step_seconds" not in train[0]
    cfg = resolve(config, make_tokenizer(config.data).vocab_size)
    rows, length = config.data.batch_size, config.data.seq_length
    flops = rows * train_flops_per_example(init_model(cfg, 0), cfg, {"decoder": length})
    for r in train[1:]:
        assert r["tokens_per_second"] == pytest.approx(rows * length / r["step_seconds"])
        assert r["model_flops_per_second"] == pytest.approx(flops / r["step_seconds"])
        assert "mfu" not in r
    traces = [f for _, _, files in os.walk(tmp_path / "profile") for f in files
              if f.endswith(".xplane.pb")]
    assert traces
    (init,) = calls["init"]
    assert init["project"] == "moejax-test" and init["mode"] == "offline"
    assert init["config"]["train"]["num_steps"] == 3 and init["dir"] == str(tmp_path)
    assert [step for step, _ in calls["log"]] == [r["step"] for r in records]
    step, values = calls["log"][1]                                     # the step-1 train record
    assert values["train/loss"] == pytest.approx(records[1]["loss"])
    assert values["train/moe/dropped_fraction/decoder_layer_1"] == pytest.approx(
        records[1]["moe/dropped_fraction"][0])
    assert calls["finish"] == 1


def test_bad_profile_steps_and_a_missing_wandb_are_one_line(data_dir, tmp_path):
    import importlib.util
    for bad in ("3:2", "0:2", "5", "a:b"):
        with pytest.raises(ConfigError, match="train.profile_steps"):
            trainer.train_and_evaluate(micro("glam", data_dir, profile_steps=bad),
                                       str(tmp_path / "bad"))
    assert not os.path.exists(tmp_path / "bad" / "checkpoints")
    if importlib.util.find_spec("wandb") is None:
        config = micro("glam", data_dir)
        config.logging.wandb_project = "p"
        with pytest.raises(ConfigError, match="needs wandb: pip install wandb"):
            trainer.train_and_evaluate(config, str(tmp_path / "nowandb"))


def test_progress_line_uses_the_timed_step_not_the_wall_clock():
    from moejax.train.logs import Progress
    progress = Progress(total_steps=100, tokens_per_step=2048)
    assert progress.line(1, 3.0, None).endswith("? steps/s | ETA ?")
    line = progress.line(40, 3.0, 0.5)                       # 60 steps left at 0.5 s each
    assert "2.00 steps/s" in line and "4.1k tokens/s" in line and line.endswith("ETA 0m30s")


def test_plots_of_a_run_with_one_train_record(tmp_path):
    """One train record: the expert load is bars (a heat map needs two steps), one shared
    scale; the loss axis is zoomed past the step-0 evaluation's ln V."""
    import json
    from moejax.train import plots
    records = [{"step": 0, "split": "eval", "cross_entropy": 6.3},
               {"step": 30, "split": "train", "cross_entropy": 2.5,
                "moe/tokens_per_expert": [[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]]},
               {"step": 30, "split": "eval", "cross_entropy": 2.4}]
    with open(tmp_path / "metrics.jsonl", "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))
    plt = plots._pyplot()
    fig = plots._load_figure(plt, np.asarray([records[1]["moe/tokens_per_expert"]]), [30],
                             ["encoder layer 1", "decoder layer 1"])
    bars = [[p.get_height() for p in ax.patches] for ax in fig.axes]
    np.testing.assert_allclose(bars, [[0.4, 0.8, 1.2, 1.6], [1.0] * 4])   # fraction · E
    assert fig.axes[0].get_ylim() == fig.axes[1].get_ylim()
    assert fig.axes[0].get_ylabel().startswith("encoder layer 1")
    plt.close(fig)
    fig = plots._loss_figure(plt, records, "run")
    assert fig.axes[0].get_ylim()[1] < 3.0                                # 6.3 is off the axis
    plt.close(fig)
    assert len(plots.plot_run(str(tmp_path), ["encoder layer 1", "decoder layer 1"])) == 2
