"""The benchmark runs at tiny sizes and reports every variant (never asserts on time)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_layer_suite_reports_every_variant(tmp_path):
    out = tmp_path / "layer.json"
    subprocess.run([sys.executable, "-m", "experiments.bench", "--suite=layer", "--tokens=64",
                    "--group_size=32", "--d_model=16", "--hidden=16", "--experts=4",
                    "--repeats=1", f"--json={out}"], cwd=ROOT, check=True, timeout=300)
    rows = json.loads(out.read_text())
    variants = {(r["k"], r["variant"]) for r in rows}
    for k in (1, 2):
        for name in ("dense FFN (hidden k·F)", "index", "einsum", "dropless/blocks",
                     "dropless/ragged_dot"):
            assert (k, name) in variants
    assert all(r["seconds"] > 0 and r["ratio"] > 0 for r in rows)
