r"""Paper reproductions, one command each: trains the arms, writes a report with the verdict.

    python -m experiments.reproduce --paper=switch --workdir=/tmp/moejax/repro/switch
    python -m experiments.reproduce --paper=list          # the recipes and their claims

Recipes (experiments/recipes/<name>.py):
  switch         Switch top-1 vs the FLOP-matched dense model, E = 4..32: speed-up to the
                 dense model's loss, growing with E (Fedus et al. 2021)
  capacity       capacity factor 1.0 / 1.25 / 2.0 for top-1 and top-2: drops, quality,
                 examples/s (Switch Table 1)
  precision      float32 / bfloat16 / selective-precision router; init scale 0.1 vs 1.0
                 (Switch Tables 2 and 3)
  stability      ST-MoE router z-loss vs none under an aggressive learning rate, several seeds
  expert_choice  expert choice (cf 2) vs top-1 and top-2 at equal compute (Zhou et al. 2022)
  loss_free      DeepSeek-V3 bias balancing vs an auxiliary loss: max violation, quality
  routing        every routing family on one backbone, side by side
  upcycle        dense -> upcycled MoE vs continued dense vs MoE from scratch
                 (Komatsuzaki et al. 2022)

--size picks the configs' size (tiny: 2-core CPU; base and large follow the papers, for a pod);
--steps and --seeds override the recipe's budget (quality claims need >= 2 seeds for an
interval, 3 by default); --smoke runs micro models for a few steps (checks that a recipe
works: each arm compiles its own micro model, so a few minutes on 2 cores; no verdict).
--describe prints the arms, steps, seeds and measured time. Re-running resumes: finished arms
are kept.

Before judging quality, each recipe runs the validity gate (experiments/recipes/gate.py) at
its backbone and budget: a dense model against one with 8x wider FFNs, and against one with
only the FFNs the recipe's arms make sparse 8x wider (that width gain must be >= 0.05 nats),
and, for encoder-decoders, the loss with encoders shuffled across the batch (the encoder
information must be >= 0.3 nats half-way and at the end). Where it fails, quality claims read
"not testable at this budget". --gate_only runs the gate alone and prints its figures (no
--workdir needed): whether a recipe can tell, before hours on its arms. Quality claims are
judged on paired 95% intervals over seeds.
WORKDIR/report.md holds the tables, the plots and a verdict line (held / did not hold /
inconclusive / not testable at this budget, and why); WORKDIR/verdict.json the same as data.
"""

import shlex
import sys

from absl import flags, logging

from experiments import cli
from experiments.recipes import RECIPES, load, runs
from experiments.recipes.recipe import describe, gate_section, run_gate, run_recipe
from moejax.errors import ConfigError

_PAPER = flags.DEFINE_enum("paper", None, RECIPES + ("list",), "Which reproduction to run.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the runs and the report.")
_SIZE = flags.DEFINE_string("size", "tiny", "Config size: tiny, base, large.")
_STEPS = flags.DEFINE_integer("steps", None, "Training steps per arm (default: the recipe's).")
_SEEDS = flags.DEFINE_list("seeds", None, "Seeds (default: the recipe's).")
_SMOKE = flags.DEFINE_bool("smoke", False, "Micro models, a few steps: checks the recipe runs "
                           "(no verdict).")
_GATE = flags.DEFINE_bool("gate", True, "Run the validity gate (a dense model and ones with 8x "
                          "wider FFNs, all of them and those the arms make sparse, at the "
                          "recipe's budget) before judging quality claims; --nogate judges "
                          "them unchecked.")
_GATE_ONLY = flags.DEFINE_bool("gate_only", False, "Run the validity gate alone, print its "
                               "figures and whether the recipe's quality claims can be judged.")
_JOBS = flags.DEFINE_integer("jobs", None, "Runs trained at once, each in its own process "
                             "(default: 2 at tiny size on 2+ cores, else 1).")
_GATE_CACHE = flags.DEFINE_string("gate_cache", None, "Where the gate's runs are kept, shared "
                                  "by recipes with the same regime (default: $MOEJAX_GATE_CACHE "
                                  "or ~/.cache/moejax/gate).")
_DESCRIBE = flags.DEFINE_bool("describe", False, "Print what --paper=NAME runs (arms, steps, "
                               "seeds, runs, measured time) and exit.")
flags.mark_flag_as_required("paper")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if _PAPER.value == "list":
        for name in RECIPES:
            r = load(name)
            print(f"{name:14s} {r.title}\n{'':14s} {r.paper}: {r.claim}\n")
        return
    if _DESCRIBE.value:
        print(describe(load(_PAPER.value), _SIZE.value))
        return
    if _GATE_ONLY.value:
        try:
            measured = run_gate(load(_PAPER.value), size=_SIZE.value, steps=_STEPS.value,
                                gate_cache=_GATE_CACHE.value, jobs=_JOBS.value)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)
        print(gate_section(measured, True))
        return
    if not _WORKDIR.value:
        print("error: --workdir is required", file=sys.stderr)
        sys.exit(1)
    command = " ".join(["python -m experiments.reproduce"] + [shlex.quote(a)
                                                             for a in sys.argv[1:]])
    try:
        if _STEPS.value is not None and _STEPS.value < 1:
            raise ConfigError(f"--steps={_STEPS.value} must be >= 1")
        seeds = runs.parse_seeds(_SEEDS.value) if _SEEDS.value else None
        path, _ = run_recipe(load(_PAPER.value), _WORKDIR.value, size=_SIZE.value,
                             steps=_STEPS.value, seeds=seeds, smoke=_SMOKE.value,
                             gate=_GATE.value, gate_cache=_GATE_CACHE.value, jobs=_JOBS.value,
                             command=command)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    print(f"report: {path}")


if __name__ == "__main__":
    cli.run(main)
