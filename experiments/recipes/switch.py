"""Switch Transformer (Fedus et al. 2021) scaling with experts: speed-up over a FLOP-matched
dense model.

Arms: the dense T5 baseline (configs/switch.py with model.moe_as_dense: every MoE layer a
dense FFN of the same per-token width) and Switch top-1 with E = 4, 8, 16, 32 experts, over
seeds that share their data and non-FFN weights. Per seed, the speed-up is the steps the dense
model took to reach its final validation loss over the steps the MoE took to reach it; an E
beats dense when the paired 95% interval of (MoE − dense) final loss lies below 0.
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from experiments.recipes import paired
from experiments.recipes.gate import Gate
from experiments.recipes.recipe import (INCONCLUSIVE, ON_TINY_LM, Outcome, Recipe, Verdict, combine,
                                        markdown_table, quality)
from experiments.recipes.runs import Run
from experiments.recipes.summary import Summary

EXPERTS = (4, 8, 16, 32)
DENSE = "dense (same FLOPs)"
GATE_BACKBONE = "dense"


def arms(size: str) -> List[Run]:
    return [Run(DENSE, "switch+model.moe_as_dense=True")] + [
        Run(f"Switch E={e}", f"switch+moe.num_experts={e}") for e in EXPERTS]


def judge(summaries: List[Summary], gate: Optional[Gate] = None) -> Outcome:
    dense, moes = summaries[0], summaries[1:]
    target = dense.mean("final_loss")
    if target is None:
        return Outcome(Verdict(INCONCLUSIVE, "the dense baseline diverged"), None)
    rows, speedups = [], []
    for s in moes:
        per_seed = seed_speedups(s, dense)
        reached = [x for x in per_seed if x is not None]
        speedup = float(np.mean(per_seed)) if per_seed and len(reached) == len(per_seed) else None
        seconds, dense_seconds = s.seconds_to(target), dense.seconds_to(target)
        speedups.append(speedup)
        rows.append([s.label, "diverged" if not s.stable else
                     f"{len(reached)}/{len(per_seed)}",
                     "—" if speedup is None else f"{speedup:.2f}×" + (
                         f" ± {np.std(per_seed, ddof=1):.2f}" if len(per_seed) > 1 else ""),
                     "—" if not (seconds and dense_seconds) else f"{dense_seconds / seconds:.2f}×"])
    section = ("### Speed-up to the dense model's final loss\n\n" + markdown_table(
        ["arm", "seeds reaching dense's final loss", "speed-up in steps (mean ± std over seeds)",
         "speed-up in time (mean curves)"], rows)
        + "\n\nPer seed, the speed-up is the steps the dense model took to reach its final loss "
        "over the steps the MoE of the same seed took to reach it. Paper (Switch-Base, "
        "2²⁰-token batches): 7.5× at 64 experts, gains from 2 experts on.")
    parts = [_beats_dense(gate, e, s, dense, x) for e, s, x in zip(EXPERTS, moes, speedups)]
    if all(ok is True for _, ok in parts) and None not in speedups:
        growth = float(np.corrcoef(np.log(EXPERTS), speedups)[0, 1]) if np.std(speedups) else 0
        parts.append(quality(gate, f"the speed-up grows with E (correlation with log E "
                                   f"{growth:.2f})", growth > 0.5 and speedups[-1] > speedups[0]))
    return Outcome(combine(parts), target, "the dense model's mean final loss", (section,))


def seed_speedups(moe: Summary, dense: Summary) -> List[Optional[float]]:
    """Per seed both ran stably: dense steps to its own final loss / MoE steps to it (None
    where the MoE never reached it)."""
    ours = paired.by_seed(moe)
    out = []
    for key, d in paired.by_seed(dense).items():
        m = ours.get(key)
        if m is None or m.diverged or d.diverged or d.final_loss is None:
            continue
        steps = m.steps_to(d.final_loss)
        out.append(d.steps_to(d.final_loss) / steps if steps else None)
    return out


def _beats_dense(gate: Optional[Gate], e: int, s: Summary, dense: Summary, speedup):
    """(statement, held?) for one E: the paired interval of (MoE − dense) final loss over
    seeds must lie below 0; one containing 0 is inconclusive whatever the speed-up says."""
    if not s.stable:
        return quality(gate, f"E={e} beats dense: diverged", None)
    better = paired.lower(s, dense)
    shown = "not reached" if speedup is None else f"{speedup:.2f}×"
    return quality(gate, f"E={e} beats dense: {shown} (final loss MoE − dense "
                         f"{paired.describe(s, dense)})", better)


RECIPE = Recipe(
    name="switch", title="Switch Transformer: speed-up over dense grows with experts",
    paper="Fedus, Zoph, Shazeer 2021, Switch Transformers (Figure 4, Section 3.1)",
    claim="at equal FLOPs per token, Switch (top-1) models reach the dense T5 model's quality "
          "in fewer steps, and the speed-up grows with the number of experts: 7.5× at 64 "
          "experts for Switch-Base, gains from as few as 2 experts.",
    arms=arms, judge=judge, tiny_steps=1200, gate_backbone=GATE_BACKBONE,
    gate_placement="switch", sizes=ON_TINY_LM)
