"""Every routing family on one backbone, side by side.

One backbone for all (the tiny T5 encoder-decoder of configs/switch.py, gated-GELU FFNs at
tiny size, MoE in every other encoder FFN: expert choice and Soft MoE need the whole sequence,
so none of the arms puts experts in the causal decoder) and each family's whole `moe` section
from its own config: router, k, gate order, capacity factors, balance losses, shared and
fine-grained experts. Only the FFN activation stays the backbone's, and ST-MoE's extra dense
FFN after each MoE layer is left out, so the arms differ in routing alone.
"""

from __future__ import annotations

from typing import List, Optional

from experiments import config_files
from experiments.recipes.gate import Gate
from experiments.recipes.recipe import (Outcome, Recipe, by_label, combine, markdown_table,
                                        paired_part)
from experiments.recipes.report import fmt
from experiments.recipes.runs import Run
from experiments.recipes.summary import Summary, default_target
from moejax.config import MoeConfig

FAMILIES = {"shazeer": "Shazeer noisy top-2", "switch": "Switch top-1",
            "gshard": "GShard top-2 (random 2nd)", "glam": "GLaM top-2",
            "st_moe": "ST-MoE top-2", "expert_choice": "expert choice cf=2",
            "mixtral": "Mixtral top-2", "deepseek_v3": "DeepSeek-V3", "soft_moe": "Soft MoE",
            "base_layers": "BASE balanced (Sinkhorn)",
            "hierarchical": "hierarchical top-1 of 2 groups"}
DENSE = "dense"
BACKBONE = "switch+model.moe_stacks=encoder"
KEEP_BACKBONE = ("activation", "causal", "allow_non_causal_routing", "dtype")


def moe_section(family: str, size: str) -> tuple:
    """The family's moe fields as overrides (all of them, so no field of the backbone's own
    router survives)."""
    config = config_files.load(family, size)
    return tuple((f"moe.{key}", value) for key, value in config.moe.items()
                 if key not in KEEP_BACKBONE)


def arms(size: str) -> List[Run]:
    """The dense baseline first, so that a recipe stopped part-way has it for every family
    already trained (36 runs take over three hours on two cores)."""
    return [Run(DENSE, "dense")] + [Run(label, BACKBONE, overrides=moe_section(family, size))
                                     for family, label in FAMILIES.items()]


def judge(summaries: List[Summary], gate: Optional[Gate] = None) -> Outcome:
    arm = by_label(summaries)
    size = summaries[0].seeds[0].size or "tiny"
    dense_loss = arm[DENSE].mean("final_loss")
    rows = []
    for family, label in FAMILIES.items():
        s = arm[label]
        fields = dict((k.split(".", 1)[1], v) for k, v in moe_section(family, size))
        width = "E·slots·F/S" if family == "soft_moe" else str(
            MoeConfig.from_dict(fields).active_hidden_dim)
        delta = (None if dense_loss is None or s.mean("final_loss") is None
                 else s.mean("final_loss") - dense_loss)
        rows.append([label, fields["router"], fields["num_experts"], width,
                     fmt(s.mean("final_loss"), ".4f"), fmt(delta, "+.4f")])
    section = ("### Families\n\n" + markdown_table(
        ["arm", "router", "E", "expert units per token", "final val loss", "vs dense"], rows)
        + "\n\nThe dense model's FFN has d_ff units per token in every layer; top-2 families "
          "spend twice a top-1 family's expert FLOPs, so this is a side-by-side view, not an "
          "equal-compute race (see the switch and expert_choice recipes for those).")
    parts = [paired_part(gate, f"{label} beats the dense model", arm[label], arm[DENSE],
                         "MoE − dense") for label in FAMILIES.values()]
    return Outcome(combine(parts), default_target(summaries), sections=(section,))


RECIPE = Recipe(
    name="routing", title="All routing families side by side",
    paper="Shazeer et al. 2017; Lepikhin et al. 2020 (GShard); Fedus et al. 2021 (Switch); Du "
          "et al. 2021 (GLaM); Zoph et al. 2022 (ST-MoE); Zhou et al. 2022 (expert choice); "
          "Jiang et al. 2024 (Mixtral); DeepSeek-AI 2024 (V3); Puigcerver et al. 2023 (Soft MoE); "
          "Lewis et al. 2021 and Clark et al. 2022 (BASE, S-BASE); Jordan & Jacobs 1994 (HME)",
    claim="each paper reports its sparse model beating a dense model of the same per-token "
          "compute; side by side on one backbone, every family should beat the dense baseline.",
    arms=arms, judge=judge, tiny_steps=1200, gate_backbone="dense",
    gate_placement=BACKBONE,
    tiny_minutes=(243, "2026-12-02, over two sessions (13 runs, then 23 from docs/runs), two at "
                       "a time beside other jobs most of the time; two at a time alone, a pair "
                       "takes about 8 minutes, so about 2.5 hours with the gate cached"))
