r"""The sizing table of docs/LAUNCH.md: every paper's `base` config compiled for a TPU slice.

    python -m experiments.aot_sizing --out=DIR [--markdown=PATH] [--rows=switch,mixtral]

One `python -m experiments.aot` per row (ROWS in experiments/benchmarks/sizing.py: config,
topology, mesh and overrides; a fresh process each, so one row's compile cannot hold
another's memory), its figures in DIR/<row>.json; a row whose JSON exists is not compiled
again, so an interrupted run resumes.
A row that does not fit or does not compile keeps aot's one-line reason. Then a markdown table
(to --markdown, else stdout): mesh, per-chip memory of the chip's HBM, fits, all-to-all
elements against the capacity plan's minimum, predicted step time and MFU, compile time.
Needs libtpu (the test extra). Each row takes minutes on a 2-core CPU.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from experiments import cli
from experiments.benchmarks.sizing import ROWS, markdown, run_row

_OUT = flags.DEFINE_string("out", None, "Directory of the per-row JSON files.")
_MARKDOWN = flags.DEFINE_string("markdown", None, "Write the table here (default: stdout).")
_ROWS = flags.DEFINE_list("rows", None, "Only these rows (names of ROWS).")
flags.mark_flags_as_required(["out"])


def main(argv):
    del argv
    names = [row[0] for row in ROWS]
    unknown = sorted(set(_ROWS.value or ()) - set(names))
    if unknown:
        print(f"error: --rows: unknown {', '.join(unknown)} (known: {', '.join(names)})",
              file=sys.stderr)
        sys.exit(1)
    os.makedirs(_OUT.value, exist_ok=True)
    rows = [row for row in ROWS if not _ROWS.value or row[0] in _ROWS.value]
    figures = []
    for i, row in enumerate(rows, 1):
        print(f"row {i}/{len(rows)}: {row[0]}", file=sys.stderr, flush=True)
        figures.append(run_row(row, _OUT.value))
    import jax
    versions = f"jax {jax.__version__}"
    try:
        from importlib.metadata import version
        versions += f", libtpu {version('libtpu')}"
    except Exception:  # noqa: BLE001 -- the version is a label only
        pass
    text = markdown(figures, versions)
    if _MARKDOWN.value:
        with open(_MARKDOWN.value, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    cli.run(main)
