"""Router precision and initialisation scale (Switch Tables 2 and 3).

Arms: the whole model in float32; the model in bfloat16 with the router in bfloat16 too;
"selective precision" (the model in bfloat16, the router's matmul, softmax and routing in
float32); and the initialisation scale (Switch Table 3): every weight
matrix at 0.1 (model.init_scale and moe.expert_init_scale) against every one at 1.0. The first
arm is the Switch config as shipped, whose experts alone start at 0.1.
"""

from __future__ import annotations

from typing import List, Optional

from experiments.recipes import paired
from experiments.recipes.gate import Gate
from experiments.recipes.recipe import (NO_WORSE, ON_TINY_LM, Outcome, Recipe, by_label, combine,
                                        markdown_table, paired_part, quality, within_part)
from experiments.recipes.report import fmt
from experiments.recipes.runs import Run
from experiments.recipes.summary import Summary, default_target

F32 = "float32 (init 0.1)"
BF16 = "bfloat16 router"
SELECTIVE = "selective precision"
INIT_01 = "float32, init 0.1 everywhere"
INIT_1 = "float32, init 1.0"
BF16_MODEL = "+model.dtype=bfloat16+moe.dtype=bfloat16"


def arms(size: str) -> List[Run]:
    return [Run(F32, "switch"),
            Run(BF16, "switch" + BF16_MODEL + "+moe.router_dtype=bfloat16"),
            Run(SELECTIVE, "switch" + BF16_MODEL),
            Run(INIT_01, "switch+model.init_scale=0.1"),
            Run(INIT_1, "switch+moe.expert_init_scale=1.0")]


def judge(summaries: List[Summary], gate: Optional[Gate] = None) -> Outcome:
    arm = by_label(summaries)
    rows = [[label, fmt(arm[label].mean("final_loss"), ".4f", arm[label].std("final_loss")),
             f"{len(arm[label].stable)}/{len(arm[label].seeds)}",
             fmt(arm[label].examples_per_second, ".1f"), paper]
            for label, paper in ((F32, "−1.718, 1160 ex/s"), (BF16, "−3.780 (diverged)"),
                                 (SELECTIVE, "−1.716, 1390 ex/s"),
                                 (INIT_01, "Table 3: −2.72 ± 0.01"),
                                 (INIT_1, "Table 3: −3.60 ± 0.68"))]
    section = ("### Switch Tables 2 and 3 side by side\n\n" + markdown_table(
        ["arm", "final val loss (± std over seeds)", "stable runs", "examples/s", "paper"], rows)
        + "\n\nPaper, Table 3: init 0.1 gives −2.72 ± 0.01 and init 1.0 gives −3.60 ± 0.68 "
        "over three runs each (32-expert Switch-Base after 3.5k steps), with every weight matrix "
        "scaled, as in the two init rows here. The first three rows use the Switch config as "
        "shipped: experts at 0.1, the rest at 1.0. On a CPU bfloat16 is emulated, so the "
        "bfloat16 arms are not faster here.")
    f32, bf16, sel, init01, init1 = (arm[x] for x in (F32, BF16, SELECTIVE, INIT_01, INIT_1))

    spread = (init01.std("final_loss"), init1.std("final_loss"))
    init_spread = None if None in spread else spread[1] > spread[0]
    verdict = combine([
        _bf16_part(gate, bf16, sel),
        within_part(gate, f"selective precision matches float32 quality (selective − float32 "
                          f"within ±{NO_WORSE})", sel, f32, NO_WORSE, both_sides=True),
        (f"init 1.0 diverges ({len(init1.seeds) - len(init1.stable)}/{len(init1.seeds)} runs)",
         True) if len(init1.stable) < len(init1.seeds) else
        paired_part(gate, "init 0.1 beats init 1.0", init01, init1, "init 0.1 − init 1.0"),
        (f"init 1.0 varies more between seeds (std {fmt(spread[1], '.4f')} vs "
         f"{fmt(spread[0], '.4f')})", init_spread)])
    return Outcome(verdict, default_target(summaries), sections=(section,))


def _bf16_part(gate: Optional[Gate], bf16: Summary, sel: Summary):
    """Held if a bfloat16-router run diverged, or (gated) if its loss is measurably above
    selective precision's; did not hold if it is measurably below or matches within NO_WORSE."""
    statement = "the bfloat16 router is unstable or worse than selective precision"
    if len(bf16.stable) < len(bf16.seeds):
        return (f"{statement}: {len(bf16.seeds) - len(bf16.stable)}/{len(bf16.seeds)} runs "
                f"diverged", True)
    diff = paired.paired_runs(bf16, sel)
    if diff is None or diff.half_width is None:
        return quality(gate, f"{statement} ({paired.describe(bf16, sel)})", None)
    ok = (True if diff.low > 0 else
          False if diff.high < 0 or (-NO_WORSE < diff.low and diff.high < NO_WORSE) else None)
    return quality(gate, f"{statement} (bfloat16 − selective {diff.text()})", ok)


RECIPE = Recipe(
    name="precision", title="Router precision and initialisation scale (Switch Tables 2, 3)",
    paper="Fedus, Zoph, Shazeer 2021, Switch Transformers (Tables 2 and 3)",
    claim="a bfloat16 router makes training unstable (it diverged), while casting only the "
          "router to float32 (selective precision) keeps float32 quality at bfloat16 speed; "
          "initialising weights at 0.1× the default scale gives better and more consistent "
          "quality than 1.0×.",
    arms=arms, judge=judge, tiny_steps=1200, gate_backbone="dense", gate_placement="switch",
    sizes=ON_TINY_LM,
    tiny_minutes=(114, "2026-12-01, the gate included, two runs at a time, sharing the cores "
                       "with TPU compiles and tests all along"))
