r"""Train several configs on identical data, seeds and budget; write a report with plots.

    python -m experiments.compare --configs=switch,switch+model.moe_as_dense=True \
        --workdir=/tmp/moejax/compare [--steps=1500] [--seeds=0,1] [--size=tiny]

A config spec is a family in configs/ (or a .py file), an optional :size, and '+'-joined
dotted overrides: `switch:base`, `switch+moe.num_experts=16+moe.capacity_factor=1.0`.
--set=key=value,... applies to every config (e.g. --set=data.batch_size=32). Each (config, seed)
trains with the normal trainer in WORKDIR/<label>/seed_<s> (re-running resumes; finished runs
are kept), then WORKDIR/report.md gets a table (final validation loss, steps and tokens to the
target loss, tokens/s, dropped fraction, load coefficient of variation, max violation, router
entropy over ln E, encoder information) and loss_vs_steps.png, loss_vs_time.png and
expert_load.png. --jobs runs that many at once, each in its own process (default: 2 at tiny size
on a machine with 2+ cores; each run's progress then goes to its train.log).
"""

import shlex
import sys

from absl import flags, logging

from experiments import cli
from experiments.recipes import report, runs, summary
from moejax.errors import ConfigError

_CONFIGS = flags.DEFINE_list("configs", None, "Config specs to compare (see above).")
_LABELS = flags.DEFINE_list("labels", None, "Names for the configs in the report (default: "
                            "the specs).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the runs and the report.")
_STEPS = flags.DEFINE_integer("steps", None, "Training steps of every run (default: each "
                              "config's train.num_steps).")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds (model init, data order, routing noise).")
_SIZE = flags.DEFINE_string("size", "tiny", "Size of the specs that name none.")
_SET = flags.DEFINE_list("set", [], "key=value overrides applied to every config.")
_TARGET = flags.DEFINE_float("target_loss", None, "Validation loss for 'steps to target' "
                             "(default: the worst final loss, which every arm reached).")
_JOBS = flags.DEFINE_integer("jobs", None, "Runs trained at once, each in its own process "
                             "(default: 2 at tiny size on 2+ cores, else 1).")
_TITLE = flags.DEFINE_string("title", "Comparison", "Title of the report.")
flags.mark_flags_as_required(["configs", "workdir"])


def common_overrides() -> dict:
    overrides = {}
    for item in _SET.value:
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"--set item {item!r} is not key=value")
        overrides[key] = runs.parse_value(value)
    if _STEPS.value is not None:
        if _STEPS.value < 1:
            raise ConfigError(f"--steps={_STEPS.value} must be >= 1")
        overrides.update(runs.budget(_STEPS.value))
    return overrides


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    try:
        arms = runs.parse_runs(_CONFIGS.value, _LABELS.value)
        seeds = runs.parse_seeds(_SEEDS.value)
        jobs = runs.auto_jobs(_SIZE.value) if _JOBS.value is None else _JOBS.value
        directories = runs.train_runs(arms, _WORKDIR.value, size=_SIZE.value, seeds=seeds,
                                      common=common_overrides(), jobs=jobs)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    summaries = summary.summarize(directories, [a.label for a in arms])
    target = _TARGET.value if _TARGET.value is not None else summary.default_target(summaries)
    path = report.write_report(
        _WORKDIR.value, _TITLE.value, summaries, target,
        command=" ".join(["python -m experiments.compare"] + [shlex.quote(a)
                                                             for a in sys.argv[1:]]),
        target_note="given" if _TARGET.value is not None else report.DEFAULT_TARGET_NOTE)
    print(f"report: {path}")


if __name__ == "__main__":
    cli.run(main)
