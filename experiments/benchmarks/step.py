"""Suite `step`: training throughput (tokens/s) of the tiny Switch and ST-MoE configs against
their FLOP-matched dense baselines, on one device.

One timed call is one train_step (forward, backward, Adafactor update, bias updates), blocked
on its result; the MoE model and its baseline (the same config with model.moe_as_dense=True:
every MoE layer a dense FFN of width k·F, so the same per-token FLOPs) alternate, and each
side's median is taken. Tokens per step are batch · (encoder length + decoder length), the
same count for both models; the batches are random tokens of the span-corruption shapes.
"""

from __future__ import annotations

import dataclasses

import jax

from experiments.benchmarks import train_setup
from experiments.benchmarks.table import Table
from experiments.benchmarks.timing import side_by_side


@dataclasses.dataclass(frozen=True)
class Sizes:
    configs: tuple = ("switch", "st_moe")
    overrides: tuple = ()               # (dotted key, value) pairs applied to every config
    repeats: int = 30


FULL = Sizes()                          # the tiny configs as they train: B=16, L_in=128
SMOKE = Sizes(configs=("switch",), overrides=train_setup.SMOKE_OVERRIDES, repeats=2)


def measure(table: Table, family: str, sizes: Sizes) -> None:
    overrides = dict(sizes.overrides)
    moe = train_setup.build(train_setup.load_config(family, overrides))
    dense = train_setup.build(train_setup.load_config(family, {**overrides,
                                                               **train_setup.DENSE}))
    assert moe.tokens == dense.tokens
    t = side_by_side({"moe": moe.step_fn(), "dense": dense.step_fn()}, sizes.repeats)
    flops = {name: setup.compile().cost_analysis()["flops"]
             for name, setup in (("moe", moe), ("dense", dense))}
    moe_cfg = moe.model_cfg.moe
    table.add(config=train_setup.describe(family, moe_cfg), batch=moe.config.data.batch_size,
              tokens=moe.tokens, dense_width=moe_cfg.active_hidden_dim,
              moe_tok_s=moe.tokens / t["moe"], dense_tok_s=dense.tokens / t["dense"],
              ratio=t["dense"] / t["moe"], moe_params=moe.params / 1e6,
              dense_params=dense.params / 1e6, moe_gflops=flops["moe"] / t["moe"] / 1e9,
              dense_gflops=flops["dense"] / t["dense"] / 1e9)


def run(smoke: bool = False) -> Table:
    sizes = SMOKE if smoke else FULL
    table = Table(
        title=(f"train step tokens/s on {jax.default_backend()} (1 device), float32, Adafactor, "
               f"median of {sizes.repeats} steps alternating with the dense baseline"),
        columns=[("config", "config", ""), ("batch", "batch", "d"),
                 ("tokens", "tokens/step", "d"), ("dense_width", "dense FFN width", "d"),
                 ("moe_tok_s", "MoE tok/s", ".0f"), ("dense_tok_s", "dense tok/s", ".0f"),
                 ("ratio", "ratio MoE/dense", ".2f"), ("moe_params", "MoE params (M)", ".2f"),
                 ("dense_params", "dense params (M)", ".2f"),
                 ("moe_gflops", "MoE GFLOP/s", ".1f"), ("dense_gflops", "dense GFLOP/s", ".1f")])
    for family in sizes.configs:
        measure(table, family, sizes)
    table.notes += [
        "dense baseline: the same config with model.moe_as_dense=True (each MoE layer a dense "
        "FFN of width k·F, the experts' activation): equal FLOPs per token outside the router "
        "and the capacity slack (capacity factor 1.25: up to 25% more expert rows).",
        "tokens/step = batch · (encoder length + decoder length), the same for both models.",
        "GFLOP/s: XLA's cost analysis of the compiled step (forward, backward, optimizer; the "
        "empty capacity slots included) over the median step time. Divided by the device's "
        "peak it is the step's FLOPs utilisation (run this suite on the accelerator).",
        "target: tiny Switch >= 0.8x the dense baseline's tokens/s. For reference, Switch "
        "Transformer (Fedus et al. 2021, Table 1, TPU) trains Switch-Base at 1000 / 910 "
        "examples/s with capacity factor 1.0 / 1.25 against T5-Base's 1600: 0.63x / 0.57x.",
    ]
    return table
