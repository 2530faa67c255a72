"""Sparse Upcycling (Komatsuzaki et al. 2022) and the checkpoint inspector, at micro sizes."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from experiments import config_files
from moejax import ConfigError, MoeConfig
from moejax.checkpoints import info, upcycle, upcycle_workdir
from moejax.checkpoints.report import format_summary, summarize
from moejax.checkpoints.store import Checkpointer, restore_into, to_saveable
from moejax.data import make_tokenizer
from moejax.models import ModelConfig, build_model
from moejax.train import trainer
from moejax.train.config import resolve
from moejax.train.logs import read_log
from moejax.train.optimizer import make_optimizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DENSE_T5 = ModelConfig(arch="encoder_decoder", vocab_size=64, d_model=16, num_heads=2, d_ff=32,
                       num_encoder_layers=4, num_decoder_layers=2, moe_layout="none")
DENSE_LM = ModelConfig(arch="decoder", vocab_size=64, d_model=16, num_heads=2, d_ff=32,
                       num_layers=3, activation="geglu", moe_layout="none")
E = 4


def moe_version(dense: ModelConfig, **kw) -> ModelConfig:
    """`dense` with FFNs 1, 3 (T5 encoder; 1 of the decoder) or 0, 2 (decoder-only) sparse."""
    layout = ({"moe_layout": "every", "moe_every": 2} if dense.arch == "encoder_decoder" else
              {"moe_layout": "list", "moe_layer_list": (0, 2)})
    moe = MoeConfig(num_experts=E, hidden_dim=dense.d_ff, activation=dense.activation,
                    min_capacity=1, **kw)
    return dataclasses.replace(dense, moe=moe, **layout)


@nnx.jit
def forward(model, *tokens):
    return model(*tokens, deterministic=True)[0]


def logits(model, cfg):
    """Logits [B, L, V] of fixed random tokens (and decoder tokens), eval mode."""
    rng = np.random.default_rng(0)
    tokens = [jnp.asarray(rng.integers(1, cfg.vocab_size, (2, 16)))]
    if cfg.arch == "encoder_decoder":
        tokens.append(jnp.asarray(rng.integers(1, cfg.vocab_size, (2, 8))))
    return np.asarray(forward(model, *tokens))


def get(tree, path):
    for key in path:
        tree = tree[key]
    return np.asarray(tree)


def upcycled_logits(dense_cfg, moe_cfg):
    """(dense logits, fresh MoE logits, upcycled MoE logits, dense dict, upcycled dict)."""
    dense = build_model(dense_cfg, rngs=nnx.Rngs(3))        # random: every layer differs
    model = build_model(moe_cfg, rngs=nnx.Rngs(7))
    fresh = logits(model, moe_cfg)
    restore_into(model, upcycle.upcycle_model(to_saveable(nnx.state(dense)),
                                              to_saveable(nnx.state(model)), dense_cfg, moe_cfg))
    return (logits(dense, dense_cfg), fresh, logits(model, moe_cfg),
            nnx.to_pure_dict(nnx.state(dense)), nnx.to_pure_dict(nnx.state(model)))


@pytest.mark.parametrize("dense_cfg,moe_kw,expert_path,dense_path", [
    # top-2, renormalized gates, capacity 2·2·S/4 = S slots: no token is dropped. Encoder
    # layer 3 = super-block (dense, moe) repeat 1, position 1 <- dense encoder layer 3.
    (DENSE_T5, {"num_selected_experts": 2, "renormalize_gates": True, "eval_capacity_factor": 2.0},
     ("encoder", "segments", 0, "blocks", "layers", 1, "ffn", "experts", "wi", 1),
     ("encoder", "segments", 0, "blocks", "layers", 0, "ffn", "wi", 3)),
    # GEGLU decoder-only, dropless top-2 renormalized; layer 2 is segment 2 (moe, dense, moe)
    (DENSE_LM, {"num_selected_experts": 2, "renormalize_gates": True, "dispatch": "dropless"},
     ("layers", "segments", 2, "blocks", "layers", 0, "ffn", "experts", "wi_gate", 0),
     ("layers", "segments", 0, "blocks", "layers", 0, "ffn", "wi_gate", 2)),
], ids=["encoder_decoder_top2", "decoder_dropless_top2"])
def test_upcycled_model_computes_the_dense_function(dense_cfg, moe_kw, expert_path, dense_path):
    moe_cfg = moe_version(dense_cfg, **moe_kw)
    want, fresh, got, dense, moe = upcycled_logits(dense_cfg, moe_cfg)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.abs(fresh - want).max() > 1e-2                # a fresh MoE model is another function
    for e in range(E):                                      # every expert: that layer's FFN
        np.testing.assert_array_equal(get(moe, expert_path)[e], get(dense, dense_path))
    neighbour = dense_path[:-1] + (dense_path[-1] - 1,)
    assert np.abs(get(dense, neighbour) - get(dense, dense_path)).max() > 1e-3   # layers differ


def test_switch_top1_gates_below_one_change_the_output():
    """Negative control: Switch top-1 scales each token's expert output by its softmax
    probability (< 1), so the upcycled model is not the dense one until it trains."""
    moe_cfg = moe_version(DENSE_T5, num_selected_experts=1, eval_capacity_factor=4.0)
    want, _, got, _, _ = upcycled_logits(DENSE_T5, moe_cfg)
    assert np.abs(got - want).max() > 1e-3


# --------------------------------------------------------------------------- optimizer state

OPTIMIZER = {"learning_rate": 0.01, "schedule": "rsqrt", "warmup_steps": 10,
             "weight_decay": 0.0, "b1": 0.9, "b2": 0.99, "grad_clip_norm": 0.0}


def abstract_state(cfg, name):
    """Shapes of (optimizer dict, parameter dict)."""

    def make():
        model = build_model(cfg, rngs=nnx.Rngs(0))
        opt = make_optimizer(ml_collections.ConfigDict({**OPTIMIZER, "name": name}), model, 100)
        return to_saveable(nnx.state(opt)), nnx.to_pure_dict(nnx.state(model, nnx.Param))

    return jax.eval_shape(make)


def leaf_index(params, path):
    """Position of a parameter in jax.tree.leaves order (the per-matrix optimizer's list)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(params)
    return [tuple(k.key for k in p) for p, _ in leaves].index(tuple(path))


def slot(opt, params, name, path, part):
    """The optimizer state `part` (mu/nu for AdamW, v/count for Adafactor) of one parameter."""
    if name == "adamw":
        return get(opt, ("opt_state", 0, part) + tuple(path))
    return get(opt, ("opt_state", 0, leaf_index(params, path), 0, part))


@pytest.mark.parametrize("name,parts", [("adamw", ("mu", "nu")), ("adafactor", ("v", "count"))])
def test_optimizer_state_carry_and_reset(name, parts):
    moe_cfg = moe_version(DENSE_T5, num_selected_experts=2, renormalize_gates=True)
    dense_abs, dense_params = abstract_state(DENSE_T5, name)
    moe_abs, moe_params = abstract_state(moe_cfg, name)
    rng = np.random.default_rng(0)                     # a dense run 7 steps in
    dense = jax.tree.map(lambda x: np.full(x.shape, 7, x.dtype) if np.issubdtype(
        x.dtype, np.integer) else rng.standard_normal(x.shape).astype(x.dtype), dense_abs)
    template = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), moe_abs)   # fresh
    carry, reset = (upcycle.upcycle_optimizer(dense, template, dense_params, moe_params,
                                              DENSE_T5, moe_cfg, mode)
                    for mode in ("carry", "reset"))
    layer = ("encoder", "segments", 0, "blocks", "layers")       # encoder layer 3: repeat 1
    experts, router = layer + (1, "ffn", "experts", "wi"), layer + (1, "ffn", "router", "w")
    dense_ffn = layer + (0, "ffn", "wi")                          # dense layer 3: index 3
    attention = ("decoder", "segments", 1, "blocks", "layers", 0, "attn", "q")    # layer 1
    dense_attention = ("decoder", "segments", 0, "blocks", "layers", 0, "attn", "q")
    for part in parts:
        want = slot(dense, dense_params, name, dense_ffn, part)[3]
        assert np.abs(want).max() > 0
        got = slot(carry, moe_params, name, experts, part)[1]                  # [E, ...]
        for e in range(E):
            np.testing.assert_array_equal(got[e], want)
        np.testing.assert_array_equal(slot(carry, moe_params, name, router, part), 0)
        np.testing.assert_array_equal(slot(carry, moe_params, name, attention, part)[0],
                                      slot(dense, dense_params, name, dense_attention, part)[1])
        np.testing.assert_array_equal(slot(reset, moe_params, name, experts, part), 0)
    schedule = ("opt_state", 2 if name == "adamw" else 1, "count")
    for tree in (carry, reset):                              # the step counters carry over
        assert int(tree["step"]) == 7 and int(get(tree, schedule)) == 7


# --------------------------------------------------------------------------- end to end

def glam(data_dir, steps, **model):
    """GLaM tiny at micro size: 2 layers (FFN 1 sparse), GEGLU, top-2 of 4 experts with
    renormalized gates; eval capacity 2·2·S/4 = S slots, so no token is dropped at eval and
    the upcycled model's first evaluation is the dense model's last."""
    config = config_files.load("glam", "tiny")
    config.model.update(num_layers=2, d_model=32, num_heads=2, head_dim=16, d_ff=64, **model)
    config.moe.update(hidden_dim=64, num_experts=E, eval_capacity_factor=2.0)
    config.data.update(data_dir=data_dir, seq_length=32, batch_size=4, shuffle_buffer_size=8)
    config.mesh.num_devices = 1
    config.train.update(num_steps=steps, log_every=1, eval_every=steps, eval_batches=1,
                        checkpoint_every=steps)
    return config


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
    """A dense decoder trained 3 steps, upcycled to GLaM and trained on to step 5."""
    root = tmp_path_factory.mktemp("upcycle")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer.plots, "plot_run", lambda *args: [])   # not under test here
        trainer.train_and_evaluate(glam(data_dir, 3, moe_layout="none"), str(root / "dense"))
        config = glam(data_dir, 5)
        plan = upcycle_workdir.prepare(config, str(root / "dense"), str(root / "moe"),
                                       train=True)
        upcycle_workdir.write(plan)
        trainer.train_and_evaluate(config, str(root / "moe"))
    return root


def restored(workdir, step):
    """(parameter dict, optimizer dict) of a checkpoint, restored like the trainer does."""
    config = info.read_config(workdir, step)
    model = build_model(resolve(config, make_tokenizer(config.data).vocab_size),
                        rngs=nnx.Rngs(params=0, dropout=1, routing=2))    # the trainer's streams
    optimizer = make_optimizer(config.optimizer, model, config.train.num_steps)
    with Checkpointer(workdir, 3) as checkpoints:
        checkpoints.restore(step, model, optimizer)
    return nnx.to_pure_dict(nnx.state(model, nnx.Param)), to_saveable(nnx.state(optimizer))


def test_upcycled_run_continues_from_the_dense_step(runs):
    dense, moe = str(runs / "dense"), str(runs / "moe")
    assert info.steps(moe) == [3, 5]
    assert info.read_data_state(moe, 3) == info.read_data_state(dense, 3)
    records = read_log(moe)
    assert [r["step"] for r in records if r["split"] == "train"] == [4, 5]
    first_eval = next(r for r in records if r["split"] == "eval")
    dense_eval = [r for r in read_log(dense) if r["split"] == "eval"][-1]
    assert first_eval["step"] == dense_eval["step"] == 3
    np.testing.assert_allclose(first_eval["cross_entropy"], dense_eval["cross_entropy"],
                               rtol=1e-5)
    # the trained (non-zero) Adafactor statistics of dense layer 1's wo are the experts' of
    # MoE layer 1 (segment 1), and the step count is the dense run's
    dense_params, dense_opt = restored(dense, 3)
    moe_params, moe_opt = restored(moe, 3)
    want = slot(dense_opt, dense_params, "adafactor",
                ("layers", "segments", 0, "blocks", "layers", 0, "ffn", "wo"), "v")[1]
    got = slot(moe_opt, moe_params, "adafactor",
               ("layers", "segments", 1, "blocks", "layers", 0, "ffn", "experts", "wo"), "v")
    assert np.abs(want).max() > 0
    for e in range(E):
        np.testing.assert_array_equal(got[0, e], want)
    assert int(moe_opt["step"]) == int(dense_opt["step"]) == 3


def test_the_upcycled_run_names_its_dense_source(runs):
    """W/config.json (kept when the MoE run trains on) and inspect_checkpoint's summary both
    name the dense workdir and step the weights came from."""
    dense, moe = str(runs / "dense"), str(runs / "moe")
    source = {"dense_workdir": dense, "step": 3, "optimizer_state": "carry"}
    with open(os.path.join(moe, "config.json"), encoding="utf-8") as f:
        record = json.load(f)
    assert record["upcycled_from"] == source
    assert record["config"]["train"]["num_steps"] == 5
    summary = summarize(moe)
    assert summary["upcycled_from"] == source
    assert f"upcycled from {dense} step 3 (optimizer state carry)" in format_summary(summary)
    assert summarize(dense)["upcycled_from"] is None


MISMATCHES = [
    ({"moe": {"hidden_dim": 48}},
     (r"^upcycle: decoder layer 1 ffn/experts/wi needs \(32, 48\) per expert but the dense "
      r"checkpoint's layers/segments/0/blocks/layers/0/ffn/wi is \(32, 64\)$")),
    ({"model": {"num_layers": 4}},
     (r"^upcycle: the dense model has 2 decoder layers but the MoE config has 4 "
      r"\(model\.num_layers=4\)")),
    ({"model": {"d_model": 48, "head_dim": 24}},
     (r"^upcycle: embed/embedding needs \((\d+), 48\) but the dense checkpoint's "
      r"embed/embedding is \(\1, 32\)$")),
    ({"moe": {"activation": "relu"}},
     r"^upcycle: moe\.activation='relu' differs from the dense FFN's 'geglu'"),
    ({"moe": {"num_shared_experts": 1}}, r"^upcycle: moe\.num_shared_experts=1"),
    ({"model": {"extra_dense_ffn_after_moe": True}},
     r"^upcycle: model\.extra_dense_ffn_after_moe=True"),
    ({"data": {"batch_size": 8}}, r"^upcycle: data\.batch_size=8 differs from the dense"),
    ({"train": {"num_steps": 3}},
     r"^upcycle: train\.num_steps=3 must exceed the dense checkpoint's step 3"),
]


@pytest.mark.parametrize("override,message", MISMATCHES)
def test_mismatches_fail_with_one_line_before_building(runs, data_dir, tmp_path, override,
                                                       message):
    config = glam(data_dir, 5)
    for section, values in override.items():
        config[section].update(values)
    with pytest.raises(ConfigError, match=message) as err:
        upcycle_workdir.prepare(config, str(runs / "dense"), str(tmp_path / "moe"), train=True)
    assert "\n" not in str(err.value)
    assert not os.path.exists(tmp_path / "moe")


def test_cli_refuses_a_workdir_with_checkpoints(runs):
    cmd = [sys.executable, "-m", "experiments.upcycle", "--config=configs/glam.py:tiny",
           f"--dense_workdir={runs / 'dense'}", f"--workdir={runs / 'moe'}"]
    proc = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"error: upcycle: {runs / 'moe' / 'checkpoints'} is not empty (steps 3, 5)")


def test_inspector_lists_the_checkpoint(runs, tmp_path):
    moe = str(runs / "moe")
    summary = summarize(moe)
    assert summary["steps"] == [3, 5] and summary["step"] == 5
    config = info.read_config(moe, 5)
    model = nnx.eval_shape(lambda: build_model(
        resolve(config, make_tokenizer(config.data).vocab_size), rngs=nnx.Rngs(0)))
    params = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    shapes = {"/".join(str(k.key) for k in p): list(x.shape) for p, x in params[0]}
    assert summary["total_parameters"] == sum(int(np.prod(s)) for s in shapes.values())
    assert {r["path"]: r["shape"] for r in summary["parameters"]} == shapes
    assert summary["config"]["moe"]["num_experts"] == E
    assert summary["config"]["moe_layers"] == ["decoder layer 1"]
    last = [r for r in read_log(moe) if r["split"] == "train"][-1]
    experts = summary["experts"]
    assert experts["step"] == 5 and len(experts["layers"]) == 1
    for layer, load in zip(experts["layers"], last["moe/tokens_per_expert"]):
        np.testing.assert_allclose(layer["tokens_per_expert"], load)
    assert json.loads(json.dumps(summary))["total_parameters"] == summary["total_parameters"]
    text = format_summary(summary)
    assert "steps present: 3, 5; showing step 5" in text
    assert f"total parameters: {summary['total_parameters']:,}" in text
    assert "    ffn/experts/wi" in text and "(1, 4, 32, 64)" in text
    assert "decoder layer 1: tokens per expert [" in text
    early = summarize(moe, 3)                     # no train record at or before step 3
    assert early["step"] == 3 and early["experts"] is None
    with pytest.raises(ConfigError, match=r"^step 4 is not in .* \(steps: 3, 5\)$"):
        summarize(moe, 4)
    with pytest.raises(ConfigError, match=r"^no checkpoints in "):
        summarize(str(tmp_path / "nothing"))


def test_inspector_cli_reports_a_damaged_checkpoint_in_one_line(runs, tmp_path):
    import shutil
    workdir = tmp_path / "copy"
    shutil.copytree(runs / "dense", workdir)
    state = workdir / "checkpoints" / "3" / "state"
    for name in os.listdir(state):
        if os.path.isfile(state / name):
            (state / name).write_bytes(b"garbage")
    cmd = [sys.executable, "-m", "experiments.inspect_checkpoint", f"--workdir={workdir}"]
    proc = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: checkpoint {state} cannot be read"), proc.stderr
