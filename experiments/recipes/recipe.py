"""A paper reproduction: the paper's claim, the arms that test it, and how to judge the outcome.

A recipe trains its arms like `compare` (identical data, seeds and steps), writes the standard
report, adds its own tables, and ends with one verdict line: held / did not hold / inconclusive
/ not testable at this budget, and why. `size` picks the configs' size (tiny on a laptop CPU;
base/large on a pod); the step budget is the recipe's for tiny and the configs' own otherwise.

Quality claims (one arm's loss against another's) are judged on paired 95% intervals over
seeds (experiments/recipes/paired.py), and only where the validity gate
(experiments/recipes/gate.py) shows that the regime can show an FFN-capacity effect at all;
where it cannot, they read "not testable at this budget" with the gate's figures. Mechanics
claims (drops, balance, max violation, router logits, speed) need no gate. A smoke run trains
micro models for a few steps and never gives a verdict.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from experiments.recipes import gate as gate_lib
from experiments.recipes import paired, report, runs, summary
from experiments.recipes.gate import Gate
from experiments.recipes.runs import Run
from experiments.recipes.summary import Summary

HELD, NOT_HELD, INCONCLUSIVE = "held", "did not hold", "inconclusive"
NOT_TESTABLE = "not testable at this budget"
SMOKE_RUN = "smoke run: no verdict"
OUTCOMES = (HELD, NOT_HELD, INCONCLUSIVE, NOT_TESTABLE)
UNTESTABLE = "untestable"       # a part's value: a quality claim the gate ruled out
# nats: what a claim that one arm "matches" or is "no worse than" another allows, the paired
# interval lying within it (a definition of the claim at this scale, not a noise allowance)
NO_WORSE = 0.02

# --smoke: micro models and a few steps, to check that a recipe runs end to end (the tests).
SMOKE = {"model.d_model": 32, "model.num_heads": 2, "model.head_dim": 16, "model.d_ff": 64,
         "moe.hidden_dim": 64,
         "data.seq_length": 32, "data.batch_size": 4, "data.shuffle_buffer_size": 8,
         "train.eval_batches": 1, "mesh.num_devices": 1,
         "train.eval_encoder_information": False}     # one eval program to compile, not two
SMOKE_STEPS = 2


@dataclasses.dataclass(frozen=True)
class Verdict:
    outcome: str          # HELD, NOT_HELD or INCONCLUSIVE
    why: str


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a recipe's judge returns: the verdict, the target loss and extra report sections."""
    verdict: Verdict
    target: Optional[float]
    target_note: str = report.DEFAULT_TARGET_NOTE
    sections: Tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    paper: str                                   # citation
    claim: str                                   # what the paper found, in one paragraph
    arms: Callable[[str], List[Run]]             # size -> arms
    # judge(summaries, gate) -> Outcome; gate None: not measured (quality judged regardless)
    judge: Callable[[List[Summary], Optional[Gate]], Outcome]
    tiny_steps: int
    # the standard dense model of the arms' backbone, a spec; the validity gate measures there
    gate_backbone: str
    # a spec whose layout makes sparse the FFNs the arms do (their experts' places); where it
    # leaves some FFNs dense, the gate's width gain is measured at those places alone
    gate_placement: str = ""
    seeds: Tuple[int, ...] = (0, 1, 2)
    common: Tuple[Tuple[str, Any], ...] = ()     # overrides for every arm
    # A recipe that is more than independent runs (upcycling) trains its arms itself:
    # train(recipe, workdir, size, seeds, common, log) -> {(label, seed): run directory}.
    train: Optional[Callable[..., Dict[Tuple[str, int], str]]] = None
    # speed claims: the arms train one at a time on an otherwise idle machine (the gate's
    # runs, which are not timed, may still share it)
    timed: bool = False
    # a requested size -> the configs' size the recipe runs at, where they differ: the T5
    # papers' recipes run "tiny" as "tiny_lm", the tiny decoder-only LM (configs/common.py)
    sizes: Tuple[Tuple[str, str], ...] = ()
    # wall minutes of the whole recipe at tiny size (gate included) measured on the 2-core
    # CPU, with its date; None: not measured in the current regime
    tiny_minutes: Optional[Tuple[float, str]] = None


# The T5-backbone recipes whose arms can run in a causal decoder: judged on the tiny LM.
ON_TINY_LM = (("tiny", "tiny_lm"),)
TINY_LM_NOTE = ("Backbone: the tiny decoder-only byte LM with gated-GELU FFNs (configs at "
                "size tiny_lm), not the paper's T5 encoder-decoder with ReLU FFNs: 8× wider "
                "FFNs gain 0.096 nats there in 1200 steps, against 0.051 in the tiny T5 with "
                "gated-GELU FFNs and 0.01-0.03 in either backbone with ReLU FFNs, so an MoE's "
                "extra FFN capacity can show most there (docs/RESULTS.md).")


def config_size(recipe: Recipe, size: str) -> str:
    """The configs' size for a requested one (recipe.sizes; else the same)."""
    return dict(recipe.sizes).get(size, size)


def overrides(recipe: Recipe, size: str, steps: Optional[int], smoke: bool) -> Dict[str, Any]:
    common = dict(recipe.common)
    if smoke:
        common.update(SMOKE)
    steps = SMOKE_STEPS if smoke else steps or (recipe.tiny_steps if runs.is_tiny(size) else None)
    if steps is not None:
        common.update(runs.budget(steps))
    return common


def run_recipe(recipe: Recipe, workdir: str, *, size: str = "tiny", steps: Optional[int] = None,
               seeds: Optional[Sequence[int]] = None, smoke: bool = False, gate: bool = True,
               gate_cache: Optional[str] = None, jobs: Optional[int] = None, command: str = "",
               log=print) -> Tuple[str, Verdict]:
    """Trains the recipe's arms (and the validity gate's runs, unless gate=False) in workdir,
    `jobs` runs at a time (None: runs.auto_jobs, one for a smoke run), writes workdir/report.md
    and verdict.json."""
    started = time.perf_counter()
    asked, size = size, config_size(recipe, size)
    arms = recipe.arms(size)
    if seeds or smoke:                     # the given seeds (or one, for a smoke run) for all
        arms = [dataclasses.replace(a, seeds=None) for a in arms]
    seeds = tuple(seeds) if seeds else ((recipe.seeds[0],) if smoke else recipe.seeds)
    common = overrides(recipe, size, steps, smoke)
    if jobs is None:                       # micro smoke models gain nothing from two processes
        jobs = 1 if smoke else runs.auto_jobs(size)
    log(f"{recipe.title}: {len(arms)} arms x {len(seeds)} seeds -> {workdir}")
    # a staged recipe plans and checks its own runs (their budgets differ by stage)
    tasks, directories = ([], {}) if recipe.train is not None else runs.plan_runs(
        arms, workdir, size=size, seeds=seeds, common=common)
    gate_plan = gate_lib.plan(recipe.gate_backbone, size=size, seed=seeds[0], common=common,
                              cache=gate_cache, placement=recipe.gate_placement) if gate else None
    if gate_plan is not None:
        log(f"validity gate: {recipe.gate_backbone} -> {gate_plan.directory}")
    gate_tasks = list(gate_plan.tasks) if gate_plan else []
    if recipe.train is not None:           # trained in stages by the recipe itself
        runs.execute(gate_tasks, jobs=jobs, log=log)
        directories = recipe.train(recipe, workdir, size=size, seeds=seeds, common=common,
                                   log=log)
    elif recipe.timed:
        runs.execute(gate_tasks, jobs=jobs, log=log)
        runs.execute(tasks, jobs=1, log=log)
    else:
        runs.execute(gate_tasks + tasks, jobs=jobs, log=log)
    measured = gate_plan.read() if gate_plan else None
    summaries = summary.summarize(directories, [a.label for a in arms])
    outcome = recipe.judge(summaries, measured)
    verdict = outcome.verdict
    if measured is not None:
        verdict = Verdict(verdict.outcome, f"{verdict.why} Validity gate: {measured.text()}.")
    if smoke:                              # micro models, a few steps: no evidence either way
        verdict = Verdict(SMOKE_RUN, "a smoke run checks that the recipe runs end to end; "
                                     "its numbers are not evidence for or against the claim")
    verdict_line = f"**Outcome at this scale: {verdict.outcome}.** {verdict.why}"
    backbone = TINY_LM_NOTE if size == "tiny_lm" and asked != size else ""
    intro = "\n\n".join(p for p in [f"{recipe.paper}", f"Paper's claim: {recipe.claim}", backbone,
                                     verdict_line, gate_section(measured, gate)] if p)
    path = report.write_report(workdir, recipe.title, summaries, outcome.target, command,
                               intro=intro, sections=outcome.sections,
                               target_note=outcome.target_note)
    minutes = earlier_minutes(workdir) + (time.perf_counter() - started) / 60
    with open(os.path.join(workdir, "verdict.json"), "w", encoding="utf-8") as f:
        json.dump({"recipe": recipe.name, "title": recipe.title, "claim": recipe.claim,
                   **dataclasses.asdict(verdict), "size": size, "smoke": smoke,
                   "seeds": list(seeds), "command": command, "jobs": jobs,
                   "wall_minutes": round(minutes, 1),
                   "gate": None if measured is None else measured.to_json()}, f, indent=1)
    log(f"{recipe.name}: {verdict.outcome} ({verdict.why})")
    return path, verdict


def run_gate(recipe: Recipe, *, size: str = "tiny", steps: Optional[int] = None,
             seed: Optional[int] = None, gate_cache: Optional[str] = None,
             jobs: Optional[int] = None, log=print) -> Gate:
    """The validity gate alone at the recipe's regime (its runs cached like run_recipe's):
    whether the recipe's quality claims can be judged, before hours on its arms."""
    size = config_size(recipe, size)
    gate_plan = gate_lib.plan(recipe.gate_backbone, size=size,
                              seed=recipe.seeds[0] if seed is None else seed,
                              common=overrides(recipe, size, steps, False), cache=gate_cache,
                              placement=recipe.gate_placement)
    log(f"validity gate of {recipe.name}: {recipe.gate_backbone} -> {gate_plan.directory}")
    runs.execute(gate_plan.tasks, jobs=runs.auto_jobs(size) if jobs is None else jobs, log=log)
    return gate_plan.read()


def earlier_minutes(workdir: str) -> float:
    """The wall minutes that earlier invocations in `workdir` recorded in verdict.json (0 if
    none): a resumed recipe, or one judged again after its runs finished, records the sum, so
    a re-judge does not replace hours of training with its own seconds. (An invocation that
    stopped before writing its verdict is not counted.)"""
    try:
        with open(os.path.join(workdir, "verdict.json"), encoding="utf-8") as f:
            return float(json.load(f).get("wall_minutes") or 0.0)
    except (OSError, ValueError, TypeError, AttributeError):
        return 0.0


def gate_section(measured: Optional[Gate], enabled: bool) -> str:
    """The report's paragraph on the validity gate."""
    if measured is None:
        return ("Validity gate: not run (--nogate); quality claims were judged without "
                "checking that this regime can show an FFN-capacity effect." if not enabled
                else "")
    verdict = ("passed: quality claims are judged" if measured.passed else
               "failed: quality claims are not testable at this budget")
    return (f"Validity gate ({measured.backbone}, the recipe's budget): {measured.text()}; "
            f"{verdict}. See experiments/recipes/gate.py.")


def quality(gate: Optional[Gate], statement: str, ok: Optional[bool]):
    """A part of a verdict that compares quality: judged as is where the gate passed (or was
    not run), UNTESTABLE where it failed."""
    return (statement, ok if gate is None or gate.passed else UNTESTABLE)


# nats per token: what an arm whose router sees the whole sequence (expert choice, Soft MoE,
# BASE in a causal decoder) may take from later tokens at any seed (future information,
# moejax/train/evaluation.py) for its loss to be compared with causal arms'. A causal arm's is
# 0 exactly; a leak this small moves a loss by less than the seeds' spread.
MAX_FUTURE_INFORMATION = 0.01


def leak_checked(part, arm: Summary):
    """A quality part (statement, ok) about `arm`, whose router sees later tokens: as it is
    where the arm logged future information below MAX_FUTURE_INFORMATION at every stable
    seed, else UNTESTABLE with the figure (its loss could be low by reading the future)."""
    statement, ok = part
    leaks = [r.future_information for r in arm.stable]
    if leaks and all(x is not None and x < MAX_FUTURE_INFORMATION for x in leaks):
        return statement, ok
    figure = ("not logged" if not leaks or None in leaks else
              f"up to {max(leaks):.4f} nats per token")
    return (f"{statement}; but {arm.label} takes information from later tokens "
            f"(future information {figure}; needs < {MAX_FUTURE_INFORMATION} at every seed)",
            UNTESTABLE)


def paired_part(gate: Optional[Gate], statement: str, a: Summary, b: Summary,
                difference: str, field: str = "final_loss"):
    """'a beats b' as a gated part: held if the paired 95% interval of a − b lies below 0,
    did not hold if above, inconclusive if it contains 0. The statement ends with
    '(<difference> <mean> [<low>, <high>], <n> seeds)', difference naming a − b."""
    return quality(gate, f"{statement} ({difference} {paired.describe(a, b, field)})",
                   paired.lower(a, b, field))


def within_part(gate: Optional[Gate], statement: str, a: Summary, b: Summary, margin: float,
                both_sides: bool = False, field: str = "final_loss"):
    """'a is no worse than b (by more than margin)' as a gated part, on the paired 95%
    interval of a − b: held if it lies below +margin (both_sides: inside ±margin, 'matches'),
    did not hold if it lies wholly beyond the margin, else inconclusive. The margin says what
    the claim means by 'no worse'; it is not a noise allowance."""
    diff = paired.paired_runs(a, b, field)
    text = f"{statement} ({'no stable pair of runs' if diff is None else diff.text()})"
    if diff is None or diff.half_width is None:
        return quality(gate, text, None)
    if both_sides:
        ok = (True if -margin < diff.low and diff.high < margin else
              False if diff.low > margin or diff.high < -margin else None)
    else:
        ok = True if diff.high < margin else False if diff.low > margin else None
    return quality(gate, text, ok)


def combine(parts) -> Verdict:
    """One verdict from (statement, True/False/None/UNTESTABLE) parts of a claim: did not hold
    if any failed, else not testable at this budget if a quality part was ruled out by the
    gate, else inconclusive if any is undecided, else held."""
    held = [t for t, ok in parts if ok is True]
    failed = [t for t, ok in parts if ok is False]
    unsure = [t for t, ok in parts if ok is None]
    untestable = [t for t, ok in parts if ok is UNTESTABLE]
    why = " ".join(f"{name}: " + "; ".join(items) + "." for name, items in
                   (("Held", held), ("Did not hold", failed), ("Inconclusive", unsure),
                    ("Not testable at this budget", untestable)) if items)
    outcome = (NOT_HELD if failed else NOT_TESTABLE if untestable else
               INCONCLUSIVE if unsure else HELD)
    return Verdict(outcome, why)


def by_label(summaries: Sequence[Summary]) -> Dict[str, Summary]:
    return {s.label: s for s in summaries}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def describe(recipe: Recipe, size: str) -> str:
    """What --paper=NAME would run: claim, arms, size, steps, seeds, runs and measured time."""
    config_size = dict(recipe.sizes).get(size, size)
    arms = recipe.arms(config_size)
    steps = recipe.tiny_steps if runs.is_tiny(size) else "each config's train.num_steps"
    per_arm = [len(a.seeds or recipe.seeds) for a in arms]
    gate_runs = len(gate_lib.gate_runs(recipe.gate_backbone, config_size, {},
                                       recipe.gate_placement))
    lines = [f"{recipe.name}: {recipe.title}", f"paper: {recipe.paper}",
             f"claim: {recipe.claim}",
             f"size: {size}" + (f" (configs at size {config_size})" if config_size != size
                                else ""),
             f"steps per run: {steps}; seeds: {', '.join(map(str, recipe.seeds))}",
             f"arms ({sum(per_arm)} runs, plus the validity gate's {gate_runs} unless "
             f"cached):"]
    lines += [f"  {a.label:28s} {a.spec}" + (f" + {len(a.overrides)} overrides"
                                              if a.overrides else "") for a in arms]
    if recipe.timed:
        lines.append("timed: arms train one at a time on an otherwise idle machine")
    if runs.is_tiny(size):
        lines.append("measured time on a 2-core CPU: " + (
            f"{recipe.tiny_minutes[0]:.0f} minutes ({recipe.tiny_minutes[1]})"
            if recipe.tiny_minutes else "not measured in the current regime"))
    return "\n".join(lines)
