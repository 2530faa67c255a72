"""Comparisons and reproduction recipes: the numbers they read from logs (checked against
hand-worked values), their verdicts on made-up outcomes, and every recipe end to end at
micro size (--smoke)."""

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments.recipes import RECIPES, load
from experiments.recipes import gate as gate_lib
from experiments.recipes import recipe as recipe_lib
from experiments.recipes import report, runs, summary
from moejax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- specs -------------------------------------------------------------------------------

def test_spec_overrides_are_typed_and_applied():
    config = runs.load_config("switch+moe.num_experts=16+moe.capacity_factor=1+"
                              "model.moe_as_dense=true", "tiny", {"train.num_steps": 7})
    assert config.moe.num_experts == 16
    assert config.moe.capacity_factor == 1.0 and isinstance(config.moe.capacity_factor, float)
    assert config.model.moe_as_dense is True
    assert config.train.num_steps == 7


@pytest.mark.parametrize("spec, message", [
    ("nonesuch", "is not a family in configs/"),
    ("switch+moe.num_expertz=4", "'moe.num_expertz' (in 'switch+moe.num_expertz=4') is not "
                                 "a config field"),
    ("switch+moe.num_experts", "is not key=value"),
    ("switch:huge", "config size 'huge' is not one of"),
])
def test_bad_specs_fail_with_one_line(spec, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        runs.load_config(spec, "tiny")
    assert "\n" not in str(err.value)


def test_budget_evaluates_about_twenty_times():
    b = runs.budget(1500)
    assert (b["train.num_steps"], b["train.eval_every"], b["train.log_every"]) == (1500, 75, 15)
    short = runs.budget(60)                 # not every step and twenty times: 6 evals, 12 logs
    assert (short["train.eval_every"], short["train.log_every"]) == (10, 5)
    assert runs.budget(4)["train.eval_every"] == runs.budget(4)["train.log_every"] == 4


# --- numbers read back from a run's log ---------------------------------------------------

def _write_run(directory, evals, train, tokens_per_step=100, examples_per_step=4):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "spec.json"), "w") as f:
        json.dump({"tokens_per_step": tokens_per_step, "examples_per_step": examples_per_step},
                  f)
    with open(os.path.join(directory, "metrics.jsonl"), "w") as f:
        for record in evals:
            f.write(json.dumps({"split": "eval", **record}) + "\n")
        for record in train:
            f.write(json.dumps({"split": "train", **record}) + "\n")
    return directory


def test_steps_to_target_interpolates_between_evaluations():
    curve = [(0, 5.0), (100, 3.0), (200, 2.0)]
    assert summary.steps_to_target(curve, 2.5) == pytest.approx(150.0)
    assert summary.steps_to_target(curve, 3.0) == pytest.approx(100.0)
    assert summary.steps_to_target(curve, 6.0) == 0.0
    assert summary.steps_to_target(curve, 1.9) is None


def test_read_run_hand_worked(tmp_path):
    load_a = [[0.5, 0.5], [0.75, 0.25]]        # CV per layer: 0 and 0.5 -> 0.25
    load_b = [[0.5, 0.5], [1.0, 0.0]]          # 0 and 1 -> 0.5
    d = _write_run(str(tmp_path / "a"), evals=[
        {"step": 0, "cross_entropy": 5.0},
        {"step": 40, "cross_entropy": 3.0, "moe/max_violation": [0.2, 0.6],
         "moe/experts_per_token": [[0, 1, 0, 0, 0], [0.5, 0.5, 0, 0, 0]]}], train=[
        {"step": 10, "cross_entropy": 4.0, "train_seconds": 1.0, "moe/dropped_fraction": [1, 1],
         "moe/tokens_per_expert": load_a, "moe/router_z": [9, 9]},
        {"step": 20, "cross_entropy": 3.5, "train_seconds": 2.0,
         "moe/dropped_fraction": [0.1, 0.3], "moe/tokens_per_expert": load_a,
         "moe/router_z": [1, 3], "moe/router_entropy": [0.0, 0.0]},
        {"step": 30, "cross_entropy": 3.2, "train_seconds": 3.0,
         "moe/dropped_fraction": [0.0, 0.2], "moe/tokens_per_expert": load_b,
         "moe/router_z": [3, 5], "moe/router_entropy": [np.log(2), 0.5 * np.log(2)]},
        {"step": 40, "cross_entropy": 3.0, "train_seconds": 5.0,
         "moe/dropped_fraction": [0.0, 0.0], "moe/tokens_per_expert": load_b,
         "moe/router_z": [1, 1], "moe/router_entropy": [0.0, np.log(2)]}])
    r = summary.read_run(d)
    assert r.final_loss == 3.0
    assert r.tokens_per_second == pytest.approx(30 * 100 / 4.0)     # steps 10..40 in 4 s
    # second half of the train records: steps 30 and 40
    assert r.dropped_fraction == pytest.approx(np.mean([0.1, 0.0]))
    assert r.load_cv == pytest.approx(0.5)
    assert r.max_violation == pytest.approx(0.4)
    assert r.router_z == pytest.approx(np.mean([4.0, 1.0]))
    # E = 2: entropies over ln 2 are 1 and 0.5 at step 30, 0 and 1 at step 40
    assert r.router_entropy == pytest.approx(np.mean([0.75, 0.5]))
    np.testing.assert_allclose(r.experts_per_token, [0.25, 0.75, 0, 0, 0])
    np.testing.assert_allclose(r.expert_load, load_b)
    assert r.seconds_at(35) == pytest.approx(4.0)
    assert r.steps_to(4.0) == pytest.approx(20.0)


def _summary(tmp_path, label, finals, curve_scale=1.0, diverged=()):
    seeds = []
    for seed, final in enumerate(finals):
        d = _write_run(str(tmp_path / label / str(seed)), evals=[
            {"step": 0, "cross_entropy": 6.0}, {"step": 100, "cross_entropy": 4.0},
            {"step": 200, "cross_entropy": final}],
            train=[{"step": s, "cross_entropy": 1.0, "train_seconds": s * curve_scale / 100}
                   for s in (100, 200)])
        if seed in diverged:
            open(os.path.join(d, runs.DIVERGED), "w").close()
        seeds.append(summary.read_run(d))
    return summary.Summary(label, seeds)


def test_seed_means_leave_diverged_runs_out_and_table_fills_every_column(tmp_path):
    a = _summary(tmp_path, "a", [3.0, 2.0, 9.0], diverged=(2,))
    b = _summary(tmp_path, "b", [3.5])
    assert a.mean("final_loss") == pytest.approx(2.5)
    assert a.std("final_loss") == pytest.approx(np.sqrt(0.5))     # sample std of 3.0 and 2.0
    assert summary.default_target([a, b]) == 3.5
    # a reaches 3.5: seed 0 at step 100 + 100·(4-3.5)/(4-3) = 150, seed 1 at 100 + 100·0.5/2
    assert a.steps_to(3.5) == pytest.approx((150 + 125) / 2)
    text = report.table([a, b], 3.5)
    row = text.splitlines()[2].split("|")[1:-1]
    assert [c.strip() for c in row][:4] == ["a", "2/3", "2.5000 ± 0.7071", "138"]
    assert "n/a (dense)" in text and all(c.strip() for c in row)


def test_default_target_is_one_every_stable_seed_reached(tmp_path):
    a = _summary(tmp_path, "a", [3.0, 4.0])          # mean 3.5, but one seed ends at 4.0
    b = _summary(tmp_path, "b", [3.2])
    target = summary.default_target([a, b])
    assert target == 4.0
    assert a.steps_to(target) is not None and b.steps_to(target) is not None


# --- end to end at micro size ---------------------------------------------------------------

def _check_report(workdir, labels):
    text = open(os.path.join(workdir, "report.md")).read()
    table = [line for line in text.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in table[0].split("|")[1:-1]]
    assert header[:2] == ["config", "stable runs"] and "max violation" in header
    rows = {c[0]: c for c in ([x.strip() for x in line.split("|")[1:-1]]
                              for line in table[1:len(labels) + 1])}
    assert sorted(rows) == sorted(labels)
    for row in rows.values():
        assert len(row) == len(header) and all(row), row
    for name in ("loss_vs_steps.png", "loss_vs_time.png"):
        assert os.path.getsize(os.path.join(workdir, name)) > 1000
    return text


@pytest.mark.slow
def test_compare_command_writes_the_report(data_dir, tmp_path):
    workdir = str(tmp_path / "cmp")
    cmd = [sys.executable, "-m", "experiments.compare", "--configs=switch,dense",
           f"--workdir={workdir}", "--steps=2", "--jobs=2",
           "--set=" + ",".join(f"{k}={v}" for k, v in {**recipe_lib.SMOKE,
                                                       "data.data_dir": data_dir}.items())]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    text = _check_report(workdir, ["switch", "dense"])
    assert "n/a (dense)" in text
    # two runs at once, each in its own process with its progress in its own log
    assert "training 2 runs, 2 at a time" in out.stdout + out.stderr
    # each run's own wall time, then the time since the first run started
    assert re.search(r"\(seed 0\): final loss \d+\.\d{4} in \d+\.\d min "
                     r"\[\d+\.\d min since the first started\]", out.stdout + out.stderr)
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(re.findall(r"\(seed 0\): final loss \d+\.\d{4}, done already",
                          again.stdout + again.stderr)) == 2
    for label in ("switch", "dense"):
        log = open(os.path.join(workdir, label, "seed_0", "train.log")).read()
        assert "step 2/2" in log
    assert os.path.exists(os.path.join(workdir, "expert_load.png"))
    bad = subprocess.run(cmd[:3] + ["--configs=switch+moe.num_experts=0", "--steps=2",
                                    f"--workdir={tmp_path / 'bad'}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1, bad.stderr[-2000:]
    assert bad.stderr.strip().splitlines()[-1].startswith("error: 'switch+moe.num_experts=0'")
    assert not os.path.exists(tmp_path / "bad")


# Recipes run end to end at micro size (--smoke): the main one with its validity gate, the
# one that trains in stages (upcycle) and one on a decoder-only paper config (loss_free). The
# others' arms are built and their training steps traced and lowered on shapes alone, without
# compiling (test_every_recipe_arm_builds_and_traces): training all of them took most of the
# suite's time.
END_TO_END = ("switch", "upcycle", "loss_free")


@pytest.mark.slow
@pytest.mark.parametrize("name", END_TO_END)
def test_recipe_smoke(name, data_dir, tmp_path, monkeypatch):
    """A recipe end to end at micro size; a smoke run never gives a verdict. The switch recipe
    also runs its validity gate (the others skip it: its two runs would double the time), on
    the tiny decoder-only LM its tiny size maps to."""
    rec = load(name)
    monkeypatch.setitem(recipe_lib.SMOKE, "data.data_dir", data_dir)
    with_gate = name == "switch"
    workdir = str(tmp_path / "recipe")
    path, verdict = recipe_lib.run_recipe(rec, workdir, smoke=True, gate=with_gate,
                                          gate_cache=str(tmp_path / "gate"), log=lambda *_: None)
    assert verdict.outcome == recipe_lib.SMOKE_RUN == "smoke run: no verdict"
    assert not any(word in verdict.why for word in ("Held", "Did not hold", "Inconclusive"))
    size = recipe_lib.config_size(rec, "tiny")
    text = _check_report(workdir, [a.label for a in rec.arms(size)])
    assert "Outcome at this scale: smoke run: no verdict." in text and rec.claim in text
    assert (recipe_lib.TINY_LM_NOTE in text) == (size == "tiny_lm")
    with open(os.path.join(workdir, "verdict.json")) as f:
        saved = json.load(f)
    assert saved["outcome"] == verdict.outcome and saved["smoke"] and saved["size"] == size
    if with_gate:
        gate = saved["gate"]
        assert gate["backbone"] == rec.gate_backbone and not gate["encoder_decoder"]
        assert np.isfinite(gate["width_gain"]) and gate["encoder_information"] is None
        # and at the arms' experts: every other FFN of the 4-layer LM
        assert gate["placement"] == "decoder layers 1, 3" and np.isfinite(gate["placement_gain"])
        assert "Validity gate (dense, the recipe's budget): width gain (8× d_ff)" in text
        again = recipe_lib.run_recipe(rec, workdir, smoke=True, gate=True,
                                      gate_cache=str(tmp_path / "gate"), log=lambda *_: None)
        assert again[1] == verdict                       # the cached gate, nothing retrained
    else:
        assert saved["gate"] is None
    if name == "upcycle":               # a finished staged recipe reruns: nothing retrained
        saved["wall_minutes"] = 100.0       # as if training had taken 100 minutes
        with open(os.path.join(workdir, "verdict.json"), "w") as f:
            json.dump(saved, f)
        logged = []
        again = recipe_lib.run_recipe(rec, workdir, smoke=True, gate=False, log=logged.append)
        assert again[1] == verdict
        assert sum("done already" in line for line in logged) == len(rec.arms(size))
        with open(os.path.join(workdir, "verdict.json")) as f:   # the re-judge adds its time
            assert 100.0 <= json.load(f)["wall_minutes"] < 101.0


@pytest.mark.parametrize("name", [n for n in RECIPES if n not in END_TO_END])
def test_every_recipe_arm_builds_and_traces(name, data_dir, monkeypatch):
    """Every arm of the recipes not run end to end, and its gate's backbone, at the smoke
    run's micro sizes: the config validates and its whole training step traces and lowers
    (what a smoke run would compile). The T5 papers' recipes whose families are causal run at
    tiny_lm, and expert choice with its future information logged; the routing comparison
    stays on the encoder-decoder."""
    from experiments.benchmarks import train_setup
    rec = load(name)
    size = recipe_lib.config_size(rec, "tiny")
    assert size == ("tiny" if name == "routing" else "tiny_lm")
    common = {**recipe_lib.overrides(rec, size, None, smoke=True), "data.data_dir": data_dir}
    arms = rec.arms(size) + [runs.Run("gate", rec.gate_backbone)]
    configs = runs.build_configs(arms, size=size, seeds=[0], common=common)
    assert len(configs) == len(arms)
    for (label, _), config in configs.items():
        setup = train_setup.build(config, abstract=True)
        want = "encoder_decoder" if size == "tiny" else "decoder"
        assert setup.model_cfg.arch == want, label
        assert "stablehlo" in setup.lower().as_text()[:2000], label


def test_results_doc_gathers_verdicts_and_copies_plots(tmp_path):
    runs_dir = tmp_path / "runs" / "switch"
    runs_dir.mkdir(parents=True)
    (runs_dir / "report.md").write_text(
        "# Switch title\n\n### Speed-up\n\n![a](loss_vs_steps.png)\n")
    (runs_dir / "loss_vs_steps.png").write_bytes(b"\x89PNG fake")
    (runs_dir / "verdict.json").write_text(json.dumps(
        {"title": "Switch title", "outcome": "held", "why": "because"}))
    out = tmp_path / "docs" / "RESULTS.md"
    done = subprocess.run([sys.executable, "-m", "experiments.results_doc",
                           f"--runs={tmp_path / 'runs'}", f"--out={out}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    assert "| [switch](#switch-title) | **held** | because |" in text
    assert "| capacity | not run yet | |" in text
    assert "## Switch title" in text and "#### Speed-up" in text      # one level down
    assert "![a](images/results/switch_loss_vs_steps.png)" in text
    assert (tmp_path / "docs" / "images" / "results" / "switch_loss_vs_steps.png").read_bytes() \
        == b"\x89PNG fake"
    again = subprocess.run([sys.executable, "-m", "experiments.results_doc",
                            f"--runs={tmp_path / 'runs'}", f"--out={out}"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "add --force to overwrite" in again.stderr
    assert out.read_text() == text
    # --keep: a new run of another recipe alone keeps switch's line and section from the page
    other = tmp_path / "later" / "capacity"
    other.mkdir(parents=True)
    (other / "report.md").write_text("# Capacity title\n\nfewer drops\n")
    (other / "verdict.json").write_text(json.dumps(
        {"title": "Capacity title", "outcome": "inconclusive", "why": "small"}))
    kept = subprocess.run([sys.executable, "-m", "experiments.results_doc",
                           f"--runs={tmp_path / 'later'}", f"--out={out}", "--force", "--keep"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert kept.returncode == 0, kept.stderr[-2000:]
    merged = out.read_text()
    assert "| [switch](#switch-title) | **held** | because |" in merged
    assert "| [capacity](#capacity-title) | **inconclusive** | small |" in merged
    assert "## Switch title\n\n#### Speed-up\n\n![a](images/results/switch_loss_vs_steps.png)" \
        in merged
    assert "## Capacity title\n\nfewer drops" in merged
    assert merged.index("## Switch title") < merged.index("## Capacity title")   # recipe order
    assert "| precision | not run yet | |" in merged
    # a recipe stopped part-way: its runs with records, finished at their own budgets
    for arm, last_eval in (("dense", 10), ("Switch_top-1", 5)):
        run_dir = tmp_path / "later" / "routing" / arm / "seed_0"
        run_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text(json.dumps({"config": {"train": {"num_steps": 10}}}))
        (run_dir / "metrics.jsonl").write_text("".join(
            json.dumps({"step": s, "split": "eval", "cross_entropy": 3.0}) + "\n"
            for s in (0, last_eval)))
    subprocess.run([sys.executable, "-m", "experiments.results_doc", f"--runs={tmp_path / 'later'}",
                    f"--out={out}", "--force", "--keep"], cwd=ROOT, check=True, timeout=120,
                   capture_output=True)
    assert ("| routing | part-way: 1 run finished (2 started), no verdict yet | |"
            in out.read_text())


def test_stored_config_matches_unless_a_value_differs():
    """A run made before a config field existed still matches while the field is at its
    default; any changed or removed value does not."""
    from moejax.train.config import base_config
    now = json.loads(base_config().to_json_best_effort())
    old = json.loads(json.dumps(now))
    del old["model"]["init_scale"]                       # a field added since that run
    as_json = lambda c: json.dumps(c, sort_keys=True)
    assert runs.same_config(as_json(old), as_json(now))
    assert runs.same_config(None, as_json(now))
    changed = json.loads(json.dumps(now))
    changed["model"]["init_scale"] = 0.1
    assert not runs.same_config(as_json(old), as_json(changed))   # added, but not at default
    steps = json.loads(json.dumps(now))
    steps["train"]["num_steps"] += 1
    assert not runs.same_config(as_json(now), as_json(steps))
    removed = json.loads(json.dumps(now))
    del removed["moe"]["router_init_std"]
    assert not runs.same_config(as_json(now), as_json(removed))


def test_a_run_directory_of_another_config_is_refused_before_anything_trains(tmp_path):
    """The last arm's directory holds a run made with another config: planning fails with one
    line naming it, so the arms before it are not trained first."""
    arms = [runs.Run("a", "dense"), runs.Run("b", "dense+model.d_ff=512")]
    other = runs.load_config("dense+model.d_ff=1024", "tiny", {"train.seed": 0})
    stale = runs.run_directory(str(tmp_path), arms[1], 0)
    os.makedirs(stale)
    with open(os.path.join(stale, "spec.json"), "w", encoding="utf-8") as f:
        json.dump({"config": other.to_json_best_effort(sort_keys=True)}, f)
    with pytest.raises(ConfigError, match=f"^{re.escape(stale)} holds a run of another config"):
        runs.plan_runs(arms, str(tmp_path), size="tiny", seeds=[0], common={})
    tasks, _ = runs.plan_runs(arms[:1], str(tmp_path), size="tiny", seeds=[0], common={})
    assert [t.run.label for t in tasks] == ["a"]


_ORPHAN_SCRIPT = '''
import multiprocessing, os, signal, sys, time
sys.path.insert(0, {root!r})

def worker(marker):
    from experiments.recipes import runs
    runs._stop_with_parent()
    signal.signal(signal.SIGTERM, lambda *_: (open(marker, "w").close(), os._exit(0)))
    open(marker + ".ready", "w").close()
    time.sleep(60)

if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    ctx.Process(target=worker, args=({marker!r},)).start()
    while not os.path.exists({marker!r} + ".ready"):
        time.sleep(0.1)
    os._exit(0)             # the parent dies without stopping its worker
'''


def test_workers_stop_when_their_parent_is_gone(tmp_path):
    """A comparison's worker processes get SIGTERM (the trainer saves and exits) once the
    process that started them has gone, e.g. killed: no orphaned runs."""
    marker = str(tmp_path / "stopped")
    script = tmp_path / "parent.py"
    script.write_text(_ORPHAN_SCRIPT.format(root=ROOT, marker=marker))
    subprocess.run([sys.executable, str(script)], timeout=60, check=True)
    deadline = time.time() + 20
    while not os.path.exists(marker) and time.time() < deadline:
        time.sleep(0.2)
    assert os.path.exists(marker)


def test_gate_cache_key_ignores_options_added_at_their_defaults():
    """A regime cached before moejax gained model.remat / train.grad_accum_steps keeps its key
    while they hold their defaults; a non-default value is another regime."""
    from experiments.recipes.gate import regime_key
    before = {"model": {"d_ff": 256}, "train": {"num_steps": 1200}}
    same = {"model": {"d_ff": 256, "remat": "none"},
            "train": {"num_steps": 1200, "grad_accum_steps": 1, "profile_steps": ""},
            "logging": {"wandb_project": "", "wandb_mode": "online"}}
    other = {"model": {"d_ff": 256, "remat": "full"}, "train": {"num_steps": 1200}}
    assert regime_key(json.dumps(before)) == regime_key(json.dumps(same))
    assert regime_key(json.dumps(before)) != regime_key(json.dumps(other))
    logged = json.loads(json.dumps(same))
    logged["logging"]["wandb_project"] = "p"
    assert regime_key(json.dumps(before)) != regime_key(json.dumps(logged))


def test_describe_lists_arms_runs_and_size():
    text = recipe_lib.describe(load("switch"), "tiny")
    assert "size: tiny (configs at size tiny_lm)" in text
    assert "steps per run: 1200; seeds: 0, 1, 2" in text
    assert "arms (15 runs, plus the validity gate's 3 unless cached):" in text
    assert text.count("switch+moe.num_experts=") == 4


def test_gate_only_prints_the_gate_of_finished_runs(tmp_path):
    """--gate_only reads the gate's finished runs from the cache (nothing retrained) and
    prints its figures: 8× every FFN gains 0.1, 8× only the arms' FFNs 0.02 (hand-made
    records), so the switch recipe's quality claims cannot be judged."""
    rec = load("switch")
    size = recipe_lib.config_size(rec, "tiny")
    plan = gate_lib.plan(rec.gate_backbone, size=size, seed=0, cache=str(tmp_path),
                         common=recipe_lib.overrides(rec, size, 10, False),
                         placement=rec.gate_placement)
    finals = {gate_lib.STANDARD: 3.0, gate_lib.WIDE: 2.9}
    for task in plan.tasks:
        os.makedirs(task.run_dir)
        with open(os.path.join(task.run_dir, "metrics.jsonl"), "w") as f:
            for step, loss in ((0, 6.0), (10, finals.get(task.run.label, 2.98))):
                f.write(json.dumps({"step": step, "split": "eval", "cross_entropy": loss}) + "\n")
    done = subprocess.run([sys.executable, "-m", "experiments.reproduce", "--paper=switch",
                           "--gate_only", "--steps=10", f"--gate_cache={tmp_path}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("done already") == 3
    assert ("width gain (8× d_ff) 0.100 nats in every FFN and 0.020 nats in the arms' sparse "
            "FFNs alone (decoder layers 1, 3) (needs >= 0.05 there); failed: quality claims are "
            "not testable at this budget") in done.stdout
