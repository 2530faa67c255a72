"""experiments/table.py: the table over existing workdirs equals their metrics.jsonl."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments.recipes import report, summary
from moejax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_run(directory, finals, seed=0, label=None, batch=(4, 32)):
    """A workdir as train (config.json) or compare (spec.json, when label is given) leaves it:
    evaluations with the losses `finals` at steps 0, 10, 20, ..., train records timed."""
    os.makedirs(directory)
    records = []
    for i, loss in enumerate(finals):
        records.append({"step": 10 * i, "split": "train", "cross_entropy": loss + 0.1,
                        "train_seconds": 2.0 * i})
        records.append({"step": 10 * i, "split": "eval", "cross_entropy": loss})
    with open(os.path.join(directory, "metrics.jsonl"), "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))
    config = {"data": {"batch_size": batch[0], "seq_length": batch[1]},
              "train": {"seed": seed}, "model": {"arch": "decoder"}}
    with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
        json.dump({"command": "python -m experiments.train", "config": config}, f)
    if label:
        with open(os.path.join(directory, "spec.json"), "w", encoding="utf-8") as f:
            json.dump({"label": label, "seed": seed, "tokens_per_step": batch[0] * batch[1],
                       "examples_per_step": batch[0], "config": json.dumps(config)}, f)
    return str(directory)


def test_table_rows_equal_the_runs_logs(tmp_path):
    a = fake_run(tmp_path / "a", [6.0, 3.0, 2.5])
    b = fake_run(tmp_path / "b", [6.0, 3.5, 2.75])
    arm = [fake_run(tmp_path / "cmp" / "moe" / f"seed_{s}", [6.0, 3.0, f], seed=s,
                    label="moe") for s, f in ((0, 2.0), (1, 2.2))]
    directories, labels = summary.group_runs(summary.find_runs([a, b, str(tmp_path / "cmp")]))
    assert labels == [a, b, "moe (cmp)"]
    assert directories[("moe (cmp)", 1)] == arm[1]
    summaries = summary.summarize(directories, labels)
    target = summary.default_target(summaries)
    assert target == 2.75                                     # the worst final loss
    rows = report.table(summaries, target).splitlines()[2:]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    spread = np.std([2.0, 2.2], ddof=1)
    assert [c[2] for c in cells] == ["2.5000", "2.7500", f"2.1000 ± {spread:.4f}"]
    # steps to 2.75: a between steps 10 (3.0) and 20 (2.5), linearly 15; b exactly at 20
    assert [c[3] for c in cells[:2]] == ["15", "20"]
    # tokens/s from config.json's 4 × 32 tokens a step: 10 steps per 2 s
    assert cells[0][5] == f"{4 * 32 * 10 / 2.0:.0f}"
    report.write_csv(summaries, target, str(tmp_path / "t.csv"))
    with open(tmp_path / "t.csv", encoding="utf-8") as f:
        assert [row[2] for row in csv.reader(f)][1:] == [c[2] for c in cells]


def test_bad_paths_are_one_line(tmp_path):
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ConfigError, match="holds no run"):
        summary.find_runs([str(tmp_path / "empty")])
    with pytest.raises(ConfigError, match="is not a directory"):
        summary.find_runs([str(tmp_path / "missing")])


def test_the_command_writes_table_csv_and_plots(tmp_path):
    fake_run(tmp_path / "runs" / "a", [6.0, 3.0, 2.5])
    fake_run(tmp_path / "runs" / "b", [6.0, 3.5, 2.75])
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "experiments.table",
                           f"--runs_glob={tmp_path / 'runs' / '*'}", f"--out={out}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| final val loss |" in done.stdout
    assert {"table.md", "table.csv", "loss_vs_steps.png"} <= set(os.listdir(out))
