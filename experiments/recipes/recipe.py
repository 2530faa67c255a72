"""A paper reproduction: the paper's claim, the arms that test it, and how to judge the outcome.

A recipe trains its arms like `compare` (identical data, seeds and steps), writes the standard
report, adds its own tables, and ends with one verdict line: held / did not hold / inconclusive
at this scale, and why. `size` picks the configs' size (tiny on a laptop CPU; base/large on a
pod); the step budget is the recipe's for tiny and the configs' own otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from experiments.recipes import report, runs, summary
from experiments.recipes.runs import Run
from experiments.recipes.summary import Summary

HELD, NOT_HELD, INCONCLUSIVE = "held", "did not hold", "inconclusive"

# --smoke: micro models and a few steps, to check that a recipe runs end to end (the tests).
SMOKE = {"model.d_model": 32, "model.num_heads": 2, "model.head_dim": 16, "model.d_ff": 64,
         "moe.hidden_dim": 64,
         "data.seq_length": 32, "data.batch_size": 4, "data.shuffle_buffer_size": 8,
         "train.eval_batches": 1, "mesh.num_devices": 1}
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
    judge: Callable[[List[Summary]], Outcome]
    tiny_steps: int
    seeds: Tuple[int, ...] = (0,)
    common: Tuple[Tuple[str, Any], ...] = ()     # overrides for every arm
    # A recipe that is more than independent runs (upcycling) trains its arms itself:
    # train(recipe, workdir, size, seeds, common, log) -> {(label, seed): run directory}.
    train: Optional[Callable[..., Dict[Tuple[str, int], str]]] = None


def overrides(recipe: Recipe, size: str, steps: Optional[int], smoke: bool) -> Dict[str, Any]:
    common = dict(recipe.common)
    if smoke:
        common.update(SMOKE)
    steps = SMOKE_STEPS if smoke else steps or (recipe.tiny_steps if size == "tiny" else None)
    if steps is not None:
        common.update(runs.budget(steps))
    return common


def run_recipe(recipe: Recipe, workdir: str, *, size: str = "tiny", steps: Optional[int] = None,
               seeds: Optional[Sequence[int]] = None, smoke: bool = False,
               command: str = "", log=print) -> Tuple[str, Verdict]:
    """Trains the recipe's arms in workdir, writes workdir/report.md and verdict.json."""
    arms = recipe.arms(size)
    if seeds or smoke:                     # the given seeds (or one, for a smoke run) for all
        arms = [dataclasses.replace(a, seeds=None) for a in arms]
    seeds = tuple(seeds) if seeds else ((recipe.seeds[0],) if smoke else recipe.seeds)
    common = overrides(recipe, size, steps, smoke)
    log(f"{recipe.title}: {len(arms)} arms x {len(seeds)} seeds -> {workdir}")
    if recipe.train is not None:
        directories = recipe.train(recipe, workdir, size=size, seeds=seeds, common=common,
                                   log=log)
    else:
        directories = runs.train_runs(arms, workdir, size=size, seeds=seeds, common=common,
                                      log=log)
    summaries = summary.summarize(directories, [a.label for a in arms])
    outcome = recipe.judge(summaries)
    verdict_line = f"**Outcome at this scale: {outcome.verdict.outcome}.** {outcome.verdict.why}"
    intro = "\n\n".join([f"{recipe.paper}", f"Paper's claim: {recipe.claim}", verdict_line])
    path = report.write_report(workdir, recipe.title, summaries, outcome.target, command,
                               intro=intro, sections=outcome.sections,
                               target_note=outcome.target_note)
    with open(os.path.join(workdir, "verdict.json"), "w", encoding="utf-8") as f:
        json.dump({"recipe": recipe.name, "title": recipe.title, "claim": recipe.claim,
                   **dataclasses.asdict(outcome.verdict), "size": size, "smoke": smoke,
                   "command": command}, f, indent=1)
    log(f"{recipe.name}: {outcome.verdict.outcome} ({outcome.verdict.why})")
    return path, outcome.verdict


# Final validation losses closer than this count as a tie. A floor, not a measurement: at tiny
# size, seeds that differ only in their initialisation are 0.2 nats apart after 40 steps, and
# how far apart they end is what the multi-seed runs measure (see docs/RESULTS.md).
NOISE = 0.01


def lower(a: Optional[float], b: Optional[float], margin: float = NOISE) -> Optional[bool]:
    """Whether loss a beats loss b: True below b − margin, False above b + margin, None
    (inconclusive) in between or when either is missing."""
    if a is None or b is None or abs(a - b) <= margin:
        return None
    return a < b


def combine(parts) -> Verdict:
    """One verdict from (statement, True/False/None) parts of a claim: held if all held, did
    not hold if any failed, inconclusive otherwise."""
    held = [t for t, ok in parts if ok is True]
    failed = [t for t, ok in parts if ok is False]
    unsure = [t for t, ok in parts if ok is None]
    why = " ".join(f"{name}: " + "; ".join(items) + "." for name, items in
                   (("Held", held), ("Did not hold", failed), ("Inconclusive", unsure)) if items)
    return Verdict(NOT_HELD if failed else INCONCLUSIVE if unsure else HELD, why)


def by_label(summaries: Sequence[Summary]) -> Dict[str, Summary]:
    return {s.label: s for s in summaries}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
