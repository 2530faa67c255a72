"""experiments/evaluate.py: a checkpoint evaluated without training gives the trainer's own
eval numbers for that step, and the eval-capacity sweep moves drops the way capacity says."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments.checkpoint_eval import evaluate_checkpoint, split_overrides
from moejax.errors import ConfigError
from moejax.train import trainer
from moejax.train.logs import read_log
from moejax.train.loss import token_accuracy
from test_train import ROOT, micro


@pytest.fixture(scope="module")
def switch_run(data_dir, tmp_path_factory):
    """A micro Switch encoder-decoder trained 3 steps (eval at step 3)."""
    workdir = str(tmp_path_factory.mktemp("switch_run"))
    config = micro("switch", data_dir)
    config.train.eval_encoder_information = True
    trainer.train_and_evaluate(config, workdir)
    return workdir


def test_evaluate_equals_the_trainers_eval_at_that_step(switch_run):
    logged = [r for r in read_log(switch_run) if r["split"] == "eval" and r["step"] == 3][0]
    results = evaluate_checkpoint(switch_run)
    assert results["step"] == 3 and results["moe_layers"]
    (ours,) = results["evaluations"]
    for key in ("cross_entropy", "accuracy", "encoder_information"):
        assert ours[key] == pytest.approx(logged[key], rel=1e-6, abs=1e-7), key
    # per-layer metrics by name, the same numbers as the log's [layers, E] arrays
    load = np.array([ours["moe/tokens_per_expert"][n] for n in results["moe_layers"]])
    np.testing.assert_allclose(load, logged["moe/tokens_per_expert"], rtol=1e-6)


def test_capacity_sweep_drops_fewer_tokens_at_larger_factors(switch_run):
    one = {"moe.min_capacity": 1}                  # the stored config's 4 would hide the sweep
    results = evaluate_checkpoint(switch_run, overrides=one, capacity_factors=[0.25, 64.0])
    low, high = [e["moe/dropped_fraction"] for e in results["evaluations"]]
    assert [e["eval_capacity_factor"] for e in results["evaluations"]] == [0.25, 64.0]
    # encoder groups are the micro config's 32 tokens, E = 8, k = 1: at factor 0.25 each
    # expert has ceil(0.25·32/8) = 1 slot, so at most 8 of 32 tokens are served
    assert low["encoder layer 1"] >= 0.75
    # at f ≥ E every expert has a slot for every token of its group: nothing is dropped
    assert all(v == 0.0 for v in high.values())


def test_token_accuracy_against_a_loop():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 7)).astype(np.float32)
    targets = rng.integers(0, 7, size=(3, 5))
    targets[0, :3] = logits[0, :3].argmax(-1)                         # some hits for sure
    weights = rng.integers(0, 2, size=(3, 5)).astype(np.float32)
    weights[0, :3] = 1
    hits = total = 0.0
    for b in range(3):
        for t in range(5):
            total += weights[b, t]
            hits += weights[b, t] * float(np.argmax(logits[b, t]) == targets[b, t])
    assert float(token_accuracy(logits, targets, weights)) == pytest.approx(hits / total)


def test_overrides_are_typed_and_bad_ones_are_one_line():
    rest, overrides = split_overrides(["prog", "--workdir=W", "--config.moe.dispatch=einsum",
                                       "--config.train.eval_batches=3"])
    assert rest == ["prog", "--workdir=W"]
    assert overrides == {"moe.dispatch": "einsum", "train.eval_batches": 3}
    with pytest.raises(ConfigError, match="--config.<field>=<value>"):
        split_overrides(["--config.moe.dispatch"])


def test_the_command_writes_json_and_names_a_bad_field(switch_run, tmp_path):
    out = str(tmp_path / "eval.json")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-m", "experiments.evaluate", f"--workdir={switch_run}",
         "--config.moe.dispatch=einsum", f"--json={out}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| cross-entropy | accuracy |" in done.stdout
    with open(out, encoding="utf-8") as f:
        written = json.load(f)
    assert written["overrides"] == {"moe.dispatch": "einsum"}
    bad = subprocess.run(
        [sys.executable, "-m", "experiments.evaluate", f"--workdir={switch_run}",
         "--config.moe.capacity_factr=2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        f"error: 'moe.capacity_factr' (in '{switch_run} step 3') is not a config field"]
