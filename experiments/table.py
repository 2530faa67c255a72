r"""One table and the comparison plots over runs that already exist.

    python -m experiments.table --runs=/tmp/moejax/switch_tiny,/tmp/moejax/dense_tiny
    python -m experiments.table --runs_glob='/tmp/moejax/compare/*' --out=/tmp/moejax/table

A run is any workdir with a metrics.jsonl (made by train, upcycle, compare or reproduce); a
directory without one is searched for runs below it, so a compare or reproduce workdir can be
given whole. Runs that compare/reproduce trained as seeds of one arm (their spec.json) form one
row with means ± standard deviations over seeds; any other run is a row of its own, named by
its path. The columns are compare's: final validation loss, steps and tokens to the target
loss (--target_loss, default the worst final loss, which every row reached), tokens/s, dropped
fraction, load CV, max violation, router entropy and encoder information. Prints the Markdown
table; --out=DIR also writes DIR/table.md, DIR/table.csv and loss_vs_steps.png,
loss_vs_time.png and expert_load.png.
"""

from __future__ import annotations

import glob
import os
import sys

from absl import flags

from experiments import cli
from experiments.recipes import report, summary
from experiments.recipes.summary import find_runs, group_runs
from moejax.errors import ConfigError, check

_RUNS = flags.DEFINE_list("runs", None, "Workdirs (or directories holding runs), comma-separated.")
_GLOB = flags.DEFINE_string("runs_glob", None, "A glob pattern of workdirs, e.g. 'DIR/*'.")
_OUT = flags.DEFINE_string("out", None, "Also write table.md, table.csv and the plots here.")
_TARGET = flags.DEFINE_float("target_loss", None, "Validation loss for 'steps to target' "
                             "(default: the worst final loss, which every row reached).")
_TITLE = flags.DEFINE_string("title", "Runs", "Title of table.md.")


def main(argv):
    del argv
    try:
        check(bool(_RUNS.value) or bool(_GLOB.value), "give --runs=W1,W2,... or --runs_glob")
        paths = list(_RUNS.value or [])
        if _GLOB.value:
            matched = sorted(p for p in glob.glob(_GLOB.value) if os.path.isdir(p))
            check(bool(matched), f"--runs_glob={_GLOB.value!r} matches no directory")
            paths += matched
        directories, labels = group_runs(find_runs(paths))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    summaries = summary.summarize(directories, labels)
    target = _TARGET.value if _TARGET.value is not None else summary.default_target(summaries)
    text = report.table(summaries, target)
    print(text)
    if _OUT.value:
        os.makedirs(_OUT.value, exist_ok=True)
        command = "python -m experiments.table " + " ".join(sys.argv[1:])
        markdown = report.write_report(
            _OUT.value, _TITLE.value, summaries, target, command, filename="table.md",
            target_note="given" if _TARGET.value is not None else report.DEFAULT_TARGET_NOTE)
        csv_path = report.write_csv(summaries, target, os.path.join(_OUT.value, "table.csv"))
        print(f"wrote {markdown}, {csv_path} and the plots")


if __name__ == "__main__":
    cli.run(main)
