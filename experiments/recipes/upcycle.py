"""Sparse Upcycling (Komatsuzaki et al. 2022): a dense checkpoint made into an MoE, against
continuing the dense model and against an MoE trained from scratch, for the same extra steps.

Stages, per seed: the dense T5 (configs/dense.py) trains for N steps ("dense pretrained"); from
its checkpoint, the dense model continues for N more steps ("continued dense") and, upcycled
(python -m experiments.upcycle: every expert a copy of its layer's dense FFN, fresh routers,
optimizer state carried), a top-2 MoE trains for the same N more steps ("upcycled MoE"); the
same MoE also trains N steps from scratch ("MoE from scratch"). The MoE is configs/switch.py
with top-2, renormalised gates and an evaluation capacity of every token, so right after
upcycling it evaluates exactly as the dense checkpoint does.
"""

from __future__ import annotations

import os
import shutil
from typing import Dict, List, Optional, Tuple

from experiments.recipes import runs as runs_lib
from experiments.recipes.gate import Gate
from experiments.recipes.recipe import (ON_TINY_LM, Outcome, Recipe, by_label, combine,
                                        markdown_table, paired_part)
from experiments.recipes.report import fmt
from experiments.recipes.runs import Run
from experiments.recipes.summary import Summary

PRETRAINED = "dense pretrained"
CONTINUED = "continued dense"
UPCYCLED = "upcycled MoE"
SCRATCH = "MoE from scratch"
MOE = "switch+moe.num_selected_experts=2+moe.renormalize_gates=True"


def arms(size: str) -> List[Run]:
    experts = runs_lib.load_config("switch", size).moe.num_experts
    # evaluation capacity factor E/k: every expert has a slot for every token, nothing drops
    moe = (("moe.eval_capacity_factor", experts / 2),)
    return [Run(PRETRAINED, "dense"), Run(CONTINUED, "dense"),
            Run(UPCYCLED, MOE, overrides=moe), Run(SCRATCH, MOE, overrides=moe)]


def train(recipe: Recipe, workdir: str, *, size: str, seeds, common, log=print
          ) -> Dict[Tuple[str, int], str]:
    """The stages above; the continued and upcycled runs train to twice the pretraining
    steps, from the pretrained checkpoint."""
    from moejax.data import make_tokenizer
    from moejax.checkpoints import upcycle as upcycle_lib
    from moejax.checkpoints import upcycle_workdir
    from moejax.train.config import resolve

    pre, cont, up, scratch = arms(size)
    configs = runs_lib.build_configs([pre, scratch], size=size, seeds=seeds, common=common)
    steps = configs[pre.label, seeds[0]].train.num_steps
    longer = {**common, "train.num_steps": 2 * steps}
    configs.update(runs_lib.build_configs([cont, up], size=size, seeds=seeds, common=longer))
    first = seeds[0]
    upcycle_lib.check_compatible(                       # before anything trains
        *(resolve(configs[r.label, first], make_tokenizer(configs[r.label, first].data)
                  .vocab_size) for r in (pre, up)))
    directories = {}
    for seed in seeds:                  # every run_dir checked before the first run trains
        for run in (pre, cont, up, scratch):
            directories[run.label, seed] = runs_lib.run_directory(workdir, run, seed)
            runs_lib.check_same_config(directories[run.label, seed], configs[run.label, seed])
    for seed in seeds:
        source = directories[pre.label, seed]

        def one(run, start=None, seed=seed):
            runs_lib.train_one(run, configs[run.label, seed], directories[run.label, seed],
                               size=size, seed=seed, log=log, prefix=f"[seed {seed}] ",
                               start=start)

        def copy_checkpoint(run_dir, source=source):
            # copied under a temporary name and renamed: an interrupted copy is no checkpoint
            partial = f"{run_dir}/checkpoints/.copying"
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(f"{source}/checkpoints/{steps}", partial)
            os.replace(partial, f"{run_dir}/checkpoints/{steps}")

        def upcycle(run_dir, source=source, seed=seed):
            upcycle_workdir.write(upcycle_workdir.prepare(
                configs[up.label, seed], source, run_dir, step=steps, train=True))

        one(pre)
        if runs_lib.is_diverged(source):
            for run in (cont, up):
                runs_lib.mark_diverged(directories[run.label, seed],
                                       f"the dense pretrained run {source} diverged")
        else:
            one(cont, copy_checkpoint)
            one(up, upcycle)
        one(scratch)
    return directories


def judge(summaries: List[Summary], gate: Optional[Gate] = None) -> Outcome:
    arm = by_label(summaries)
    pre, cont, up, scratch = (arm[x] for x in (PRETRAINED, CONTINUED, UPCYCLED, SCRATCH))
    target = cont.mean("final_loss")
    rows = []
    for s in (pre, cont, up, scratch):
        run = s.stable[0] if s.stable else None
        start = run.eval_curve[0] if run and run.eval_curve else None
        rows.append([s.label, "—" if start is None else f"{start[0]} ({start[1]:.4f})",
                     fmt(s.mean("final_loss"), ".4f"), fmt(s.mean("tokens_per_second"), ".0f")])
    extra = None
    if up.stable and target is not None and up.steps_to(target) is not None:
        start_step = up.stable[0].eval_curve[0][0]
        extra = up.steps_to(target) - start_step
    section = ("### Starting points and extra training\n\n" + markdown_table(
        ["arm", "first evaluation: step (val loss)", "final val loss", "tokens/s"], rows)
        + "\n\nThe upcycled model's first evaluation is the dense checkpoint's function: its "
          "experts are copies, its gates sum to one and evaluation drops nothing. "
        + ("" if extra is None else
           f"The upcycled MoE reached the continued dense model's final loss after "
           f"{extra:.0f} of its extra steps."))
    verdict = combine([
        paired_part(gate, "the upcycled MoE beats continued dense training for the same extra "
                          "steps", up, cont, "upcycled − continued"),
        paired_part(gate, "the upcycled MoE beats the MoE trained from scratch for those steps",
                    up, scratch, "upcycled − scratch")])
    return Outcome(verdict, target, "the continued dense model's final loss", (section,))


RECIPE = Recipe(
    name="upcycle", title="Sparse upcycling vs continued dense training and MoE from scratch",
    paper="Komatsuzaki et al. 2022, Sparse Upcycling: Training Mixture-of-Experts from Dense "
          "Checkpoints (Figures 2 and 5)",
    claim="initialising an MoE from a dense checkpoint (experts as copies of the dense MLP, "
          "fresh router) and training on beats continuing to train the dense model for the "
          "same extra compute, and beats an MoE trained from scratch on a limited budget.",
    arms=arms, judge=judge, tiny_steps=1200, train=train, gate_backbone="dense", gate_placement=MOE,
    sizes=ON_TINY_LM, tiny_minutes=(116, "2026-12-02, the gate cached, sharing the cores with "
                                         "another recipe and a test suite; an estimated 55 "
                                         "alone"))
