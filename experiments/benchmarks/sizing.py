"""The rows of experiments/aot_sizing.py and their table: each paper's `base` config compiled
for a TPU slice by one `python -m experiments.aot` process, its figures saved as JSON (the
library of the command; see there)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

# (row, config, topology, overrides). Slices hold the paper's batch: expert parallelism with
# each chip holding one or two experts (Mixtral's 8 experts: data 4 × expert 8); dense and
# Soft MoE data-parallel.
ROWS = (
    ("switch", "switch", "v5p-64", {"mesh.expert": 64}),
    ("gshard", "gshard", "v5p-64", {"mesh.expert": 64}),
    ("st_moe", "st_moe", "v5p-16", {"mesh.expert": 16}),
    ("st_moe+remat", "st_moe", "v5p-16", {"mesh.expert": 16, "model.remat": "full"}),
    ("expert_choice", "expert_choice", "v5p-32", {"mesh.expert": 32}),
    ("soft_moe", "soft_moe", "v5p-64", {}),
    ("glam", "glam", "v5p-64", {"mesh.expert": 64}),
    ("shazeer", "shazeer", "v5p-64", {"mesh.expert": 64}),
    ("mixtral", "mixtral", "v5p-32", {"mesh.expert": 8}),
    ("mixtral+remat", "mixtral", "v5p-32", {"mesh.expert": 8, "model.remat": "full"}),
    ("deepseek_v3", "deepseek_v3", "v5p-64", {"mesh.expert": 64}),
    ("deepseek_v3+remat", "deepseek_v3", "v5p-64", {"mesh.expert": 64, "model.remat": "full"}),
    ("dense", "dense", "v5p-16", {}),
    ("dense+remat", "dense", "v5p-16", {"model.remat": "full"}),
) + tuple(
    # Switch-Base cut to 2 + 2 layers (one MoE layer per stack) and unrolled, so XLA counts
    # every FLOP and byte: the three dispatches side by side, for the TPU compiler's verdict
    (f"switch 2+2 layers: {dispatch}", "switch", "v5p-64",
     {"mesh.expert": 64, "moe.dispatch": dispatch, "model.num_encoder_layers": 2,
      "model.num_decoder_layers": 2, "model.scan_layers": False})
    for dispatch in ("index", "einsum", "dropless"))


def file_name(row: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in row).strip("_") + ".json"


def aot_command(config: str, topology: str, overrides: Dict[str, Any], json_path: str
                ) -> List[str]:
    return [sys.executable, "-m", "experiments.aot", f"--config=configs/{config}.py:base",
            f"--topology={topology}", *(f"--config.{k}={v}" for k, v in overrides.items()),
            f"--json={json_path}"]


def run_row(row, out: str) -> Dict[str, Any]:
    """The row's figures: read if saved, else compiled now (and saved, failures included)."""
    name, config, topology, overrides = row
    path = os.path.join(out, file_name(name))
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    command = aot_command(config, topology, overrides, path + ".part")
    print(f"[{name}] {' '.join(command[1:])}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if os.path.exists(path + ".part"):
        with open(path + ".part", encoding="utf-8") as f:
            figures = json.load(f)
        os.remove(path + ".part")
    else:
        errors = [line for line in result.stderr.splitlines()
                  if line.startswith(("error:", "DOES NOT FIT"))]
        figures = {"topology": topology, "error": (errors or ["exit %d" % result.returncode])[-1]}
    figures.update(row=name, config=config, overrides=overrides,
                   wall_seconds=round(time.perf_counter() - start, 1))
    with open(path, "w", encoding="utf-8") as f:
        json.dump(figures, f, indent=1)
    print(f"[{name}] done in {figures['wall_seconds']:.0f} s", file=sys.stderr, flush=True)
    return figures


def a2a_cell(c: Dict[str, Any]) -> str:
    minimum = c.get("all_to_all_minimum_elements")
    moved = sum(v["elements"] for k, v in c["collectives"].items()
                if k in ("all-to-all", "ragged-all-to-all"))
    if not minimum:
        return "none" if not moved else f"{moved / 1e6:.0f} M"
    cell = f"{moved / 1e6:.0f} M / {minimum / 1e6:.0f} M = {moved / minimum:.2f}"
    if "ragged-all-to-all" in c["collectives"]:    # its result is the whole receive buffer
        cell += " (ragged: buffers, not rows sent)"
    return cell


def error_cell(error: str) -> str:
    """'**no**: 153.87G of temporaries > 95.73G HBM' for a compile-time out-of-memory, else
    the start of aot's error line."""
    sizes = re.findall(r"\((\d+(?:\.\d+)?G)\)", error)
    if "DOES NOT FIT" in error and len(sizes) == 2:
        return f"**no**: {sizes[0]} of temporaries > {sizes[1]} HBM"
    return f"**{error[:120]}**"


def table_row(f: Dict[str, Any]) -> str:
    overrides = ", ".join(f"`{k}={v}`" for k, v in f["overrides"].items()
                          if not k.startswith("mesh."))
    head = f"| {f['row']} | {f['topology']} |"
    if "error" in f:
        return head + f" {overrides} | — | {error_cell(f['error'])} | | | |"
    c, p, gib = f["per_chip"], f["prediction"], 2 ** 30
    mesh = " × ".join(f"{k}={v}" for k, v in f["mesh"].items() if v > 1) or "1 chip"
    memory = f"{c['total_bytes'] / gib:.1f} of {c['hbm_bytes'] / gib:.0f} GiB"
    step = f"{p['step_seconds'] * 1e3:.0f} ms, {100 * p['mfu']:.0f}%" if p["mfu"] else "n/a"
    return (head + f" {mesh} {overrides} | {memory} | {'yes' if f['fits'] else '**no**'} | "
            f"{a2a_cell(c)} | {step} | {f['compile_seconds']:.0f} s |")


def markdown(figures: List[Dict[str, Any]], versions: Optional[str] = None) -> str:
    lines = ["| config | slice | mesh | per-chip memory | fits | all-to-all elements per "
             "chip and step: compiled / plan minimum | predicted step, MFU | compile |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [table_row(f) for f in figures]
    if versions:
        lines.append(f"\n(compiled with {versions})")
    return "\n".join(lines)
