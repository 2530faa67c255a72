"""Capacity factor against drops, quality and speed, for top-1 and top-2 (Switch Table 1).

Arms: Switch (top-1) and the top-2 "MoE" of Switch Table 1, each with a training capacity
factor of 1.0, 1.25 and 2.0 (evaluation at 2.0 for all, as in the paper). The arms train one
at a time on an otherwise idle machine; speed claims are judged like quality claims, on the
paired 95% interval of the tokens/s difference over seeds, because the run-to-run noise of
a CPU (up to 16% between seeds of one arm, docs/RESULTS.md) exceeds the differences that
k and the capacity factor make at tiny size.
"""

from __future__ import annotations

from typing import List, Optional

from experiments.recipes import paired
from experiments.recipes.gate import Gate
from experiments.recipes.recipe import (ON_TINY_LM, Outcome, Recipe, Verdict, by_label, combine,
                                        markdown_table, quality)
from experiments.recipes.report import fmt
from experiments.recipes.runs import Run
from experiments.recipes.summary import Summary, default_target

FACTORS = (1.0, 1.25, 2.0)
K = (1, 2)
# Switch Table 1 (T5-Base backbone, 128 experts): (neg. log perplexity, examples/s).
PAPER = {(1, 1.0): (-1.561, 1000), (1, 1.25): (-1.553, 910), (1, 2.0): (-1.554, 860),
         (2, 1.0): (-1.572, 860), (2, 1.25): (-1.559, 790), (2, 2.0): (-1.547, 840)}


def label(k: int, cf: float) -> str:
    return f"top-{k} cf={cf:g}"


def arms(size: str) -> List[Run]:
    return [Run(label(k, cf), f"switch+moe.num_selected_experts={k}+moe.capacity_factor={cf}")
            for k in K for cf in FACTORS]


def judge(summaries: List[Summary], gate: Optional[Gate] = None) -> Outcome:
    arm = by_label(summaries)
    rows = []
    for k in K:
        for cf in FACTORS:
            s = arm[label(k, cf)]
            loss, speed = PAPER[k, cf]
            rows.append([label(k, cf), fmt(s.mean("dropped_fraction"), ".4f"),
                         fmt(s.mean("final_loss"), ".4f"), fmt(s.examples_per_second, ".1f"),
                         f"{loss}", f"{speed}"])
    section = ("### Switch Table 1 side by side\n\n" + markdown_table(
        ["arm", "dropped fraction", "final val loss", "examples/s",
         "paper: neg. log perplexity", "paper: examples/s"], rows)
        + "\n\nThe paper's columns are Switch-Base/MoE-Base with 128 experts on TPU; only the "
        "directions compare, not the values.")
    def ordered(values):
        """None if a value is missing, else whether they never increase."""
        return None if None in values else all(a >= b for a, b in zip(values, values[1:]))

    keys = [(k, cf) for k in K for cf in FACTORS]
    quality_text = ", ".join(f"{label(*key)} {fmt(arm[label(*key)].mean('final_loss'), '.4f')}"
                             for key in keys)
    parts = [(f"top-{k} drops fewer tokens as the capacity factor grows",
              ordered([arm[label(k, cf)].mean("dropped_fraction") for cf in FACTORS]))
             for k in K]
    per_factor = [faster(arm, (1, cf), (2, cf)) for cf in FACTORS]
    parts.append((f"top-1 is faster than top-2 at every capacity factor (tokens/s, top-1 − "
                  f"top-2: {speed_text(arm, FACTORS)})",
                  False if False in per_factor else None if None in per_factor else True))
    parts.append((f"top-1 at cf 1.0 is faster than at cf 2.0 (tokens/s "
                  f"{difference(arm, (1, 1.0), (1, 2.0))})", faster(arm, (1, 1.0), (1, 2.0))))
    parts.append(quality(gate, "Switch at cf 1.0 and 1.25 gives the best quality for its speed "
                               "(every arm not measurably slower has a measurably higher loss: "
                               "paired 95% intervals)", frontier(arm, keys, [(1, 1.0), (1, 1.25)])))
    verdict = combine(parts)
    verdict = Verdict(verdict.outcome, f"{verdict.why} Final validation losses: {quality_text}.")
    return Outcome(verdict, default_target(summaries), sections=(section,))


def faster(arm, a, b) -> Optional[bool]:
    """Whether arm a ((k, cf)) trains more tokens/s than arm b: the paired 95% interval of
    a − b over seeds excludes 0 (True above it, False below), None if it contains 0 or a
    speed is missing. Seed s of every arm ran one at a time on the same idle machine, so the
    interval carries the machine's run-to-run noise."""
    slower = paired.lower(arm[label(*a)], arm[label(*b)], "tokens_per_second")
    return None if slower is None else not slower


def difference(arm, a, b) -> str:
    return paired.describe(arm[label(*a)], arm[label(*b)], "tokens_per_second", "+.0f")


def speed_text(arm, factors) -> str:
    return "; ".join(f"cf {cf:g} {difference(arm, (1, cf), (2, cf))}" for cf in factors)


def frontier(arm, keys, on) -> Optional[bool]:
    """Whether the arms `on` ((k, cf) pairs) lie on the speed-quality frontier: False if an
    arm that is not measurably slower than one of them has a measurably lower loss, True if
    every such arm has a measurably higher loss, None otherwise (or if a speed is missing)."""
    if any(arm[label(*key)].mean("tokens_per_second") is None for key in keys):
        return None
    judged = [paired.lower(arm[label(*other)], arm[label(*key)]) for key in on
              for other in keys if other != key and faster(arm, key, other) is not True]
    if True in judged:
        return False
    return True if all(j is False for j in judged) else None


RECIPE = Recipe(
    name="capacity", title="Capacity factor: drops, quality and speed (Switch Table 1)",
    paper="Fedus, Zoph, Shazeer 2021, Switch Transformers (Table 1)",
    claim="a larger capacity factor drops fewer tokens but is slower per example; top-1 "
          "routing is faster than top-2 at every capacity factor, and Switch at cf 1.0-1.25 "
          "gives the best quality for its speed (cf 1.0: −1.561 at 1000 examples/s vs top-2 "
          "cf 2.0: −1.547 at 840).",
    arms=arms, judge=judge, tiny_steps=1200, gate_backbone="dense", gate_placement="switch",
    timed=True, sizes=ON_TINY_LM,
    tiny_minutes=(120, "2026-12-02, the gate included (40 of them, beside a test run); the 18 "
                       "timed arms took 80 one at a time on an otherwise idle machine"))
