"""Switch Transformer (Fedus et al. 2021) scaling with experts: speed-up over a FLOP-matched
dense model.

Arms: the dense T5 baseline (configs/switch.py with model.moe_as_dense: every MoE layer a
dense FFN of the same per-token width) and Switch top-1 with E = 4, 8, 16, 32 experts. Target:
the dense model's final validation loss; speed-up = dense steps / steps the MoE needs for it.
"""

from __future__ import annotations

from typing import List

import numpy as np

from experiments.recipes.recipe import (INCONCLUSIVE, NOISE, Outcome, Recipe, Verdict,
                                        combine, lower, markdown_table)
from experiments.recipes.runs import Run
from experiments.recipes.summary import Summary

EXPERTS = (4, 8, 16, 32)
DENSE = "dense (same FLOPs)"


def arms(size: str) -> List[Run]:
    return [Run(DENSE, "switch+model.moe_as_dense=True")] + [
        Run(f"Switch E={e}", f"switch+moe.num_experts={e}") for e in EXPERTS]


def judge(summaries: List[Summary]) -> Outcome:
    dense, moes = summaries[0], summaries[1:]
    target = dense.mean("final_loss")
    if target is None:
        return Outcome(Verdict(INCONCLUSIVE, "the dense baseline diverged"), None)
    dense_steps = dense.steps_to(target)
    dense_seconds = dense.seconds_to(target)
    rows, speedups = [], []
    for s in moes:
        steps = s.steps_to(target)
        speedup = dense_steps / steps if steps else None
        seconds = s.seconds_to(target)
        speedups.append(speedup)
        rows.append([s.label, "diverged" if not s.stable else
                     "not reached" if steps is None else f"{steps:.0f}",
                     "—" if speedup is None else f"{speedup:.2f}×",
                     "—" if not (seconds and dense_seconds) else f"{dense_seconds / seconds:.2f}×"])
    section = ("### Speed-up to the dense model's final loss\n\n" + markdown_table(
        ["arm", "steps to dense final loss", "speed-up in steps", "speed-up in time"], rows)
        + f"\n\nThe dense model took {dense_steps:.0f} steps to reach {target:.4f}. "
        "Paper (Switch-Base, 2²⁰-token batches): 7.5× at 64 experts, gains from 2 experts on.")
    parts = [_beats_dense(e, s, x, target) for e, s, x in zip(EXPERTS, moes, speedups)]
    if all(ok for _, ok in parts):
        growth = float(np.corrcoef(np.log(EXPERTS), speedups)[0, 1]) if np.std(speedups) else 0
        parts.append((f"the speed-up grows with E (correlation with log E {growth:.2f})",
                      growth > 0.5 and speedups[-1] > speedups[0]))
    return Outcome(combine(parts), target, "the dense model's final loss", (section,))


def _beats_dense(e: int, s: Summary, speedup, dense_loss: float):
    """(statement, held?) for one E: a final loss within NOISE of the dense model's is a tie
    (inconclusive), whichever side of it the MoE ended."""
    if not s.stable:
        return f"E={e} beats dense: diverged", None
    loss = s.mean("final_loss")
    if lower(loss, dense_loss) is None:
        return (f"E={e} beats dense: a tie ({loss:.4f} vs {dense_loss:.4f}, within {NOISE})",
                None)
    return (f"E={e} beats dense: " + ("not reached" if speedup is None else f"{speedup:.2f}×"),
            speedup is not None and speedup > 1.0)


RECIPE = Recipe(
    name="switch", title="Switch Transformer: speed-up over dense grows with experts",
    paper="Fedus, Zoph, Shazeer 2021, Switch Transformers (Figure 4, Section 3.1)",
    claim="at equal FLOPs per token, Switch (top-1) models reach the dense T5 model's quality "
          "in fewer steps, and the speed-up grows with the number of experts: 7.5× at 64 "
          "experts for Switch-Base, gains from as few as 2 experts.",
    arms=arms, judge=judge, tiny_steps=1500)
