"""The layer benchmark runs at tiny sizes and reports every variant (never asserts on time);
the command line prints the table and writes JSON."""

import json
import os
import subprocess
import sys

import pytest

from experiments.benchmarks import layer
from experiments.benchmarks.plot import layer_chart
from experiments.benchmarks.table import Table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_layer_suite_reports_every_section_and_variant(tmp_path):
    table = layer.run(smoke=True)
    rows = table.rows
    routing = {(r["variant"], r["E"]) for r in rows if r["section"] == "routing"}
    for name, *_ in layer.ROUTING:
        assert (name, layer.SMOKE.experts[0]) in routing
    fine = [r for r in rows if r["section"] == "experts"]
    assert [(r["E"], r["k"]) for r in fine] == [(4, 1), (8, 2)] * 2   # E = 4·m, top-m
    tokens = [(r["variant"], r["tokens"]) for r in rows if r["section"] == "tokens"]
    assert len(tokens) == 2 * len(layer.SMOKE.token_sweep)
    for r in rows:
        assert r["ms"] > 0 and r["baseline_ms"] > 0 and r["ratio"] > 0
    text = table.format()
    assert text.count("\n| routing") == len(routing)
    png = layer_chart(table, str(tmp_path / "layer.png"))
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_table_prints_aligned_markdown_with_dashes_for_missing_cells():
    t = Table("title", [("a", "A", ""), ("b", "long B", ".2f")], notes=["a note"])
    t.add(a="x", b=1.234)
    t.add(a="yyyyyyyy")
    assert t.format().splitlines() == [
        "title", "",
        "| A        | long B |",
        "|----------|--------|",
        "| x        | 1.23   |",
        "| yyyyyyyy | –      |",
        "", "- a note"]


@pytest.mark.slow
def test_cli_prints_the_table_and_writes_json(tmp_path):
    """`python -m experiments.bench --suite=memory --smoke --json=...` (the cheapest suite)."""
    out = tmp_path / "memory.json"
    result = subprocess.run([sys.executable, "-m", "experiments.bench", "--suite=memory",
                             "--smoke", f"--json={out}"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert list(data) == ["memory"] and len(data["memory"]["rows"]) == 2
    assert "| Switch tiny" in result.stdout and "temp ratio" in result.stdout
    assert result.stdout.startswith("SMOKE RUN (micro sizes")        # not read as a measurement
    assert "Unable to initialize backend" not in result.stderr       # jax's INFO lines are off
