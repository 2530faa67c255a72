"""Suite `memory`: compiled memory of the MoE train step against the dense baseline.

XLA's buffer assignment of the compiled train step (compiled.memory_analysis(), one device):
temporary memory (every intermediate the step allocates: activations kept for the backward
pass, gradients, optimizer temporaries, the MoE dispatch buffers [G, E, C, D] and routing
tensors), arguments (parameters, optimizer state, batch) and outputs (the updated parameters
and optimizer state, metrics). The baseline is the same config with model.moe_as_dense=True
(each MoE layer a dense FFN of width k·F). Nothing runs: the step is only compiled.
"""

from __future__ import annotations

import dataclasses
from typing import Dict

import jax

from experiments.benchmarks import train_setup
from experiments.benchmarks.table import Table

MIB = 2 ** 20


@dataclasses.dataclass(frozen=True)
class Sizes:
    # (config family, overrides): the tiny configs as they train, and a 4x larger batch
    cases: tuple = (("switch", ()), ("st_moe", ()), ("switch", (("data.batch_size", 64),)))
    overrides: tuple = ()                   # applied to every case


FULL = Sizes()
SMOKE = Sizes(cases=(("switch", ()), ("st_moe", ())), overrides=train_setup.SMOKE_OVERRIDES)


def analyse(setup: train_setup.TrainSetup) -> Dict[str, float]:
    """Bytes of the compiled step's temporaries, arguments and outputs, and of parameters."""
    stats = setup.compile().memory_analysis()
    return {"temp": stats.temp_size_in_bytes, "args": stats.argument_size_in_bytes,
            "out": stats.output_size_in_bytes, "params": setup.param_bytes}


def run(smoke: bool = False) -> Table:
    sizes = SMOKE if smoke else FULL
    table = Table(
        title=(f"compiled train step memory on {jax.default_backend()} (1 device, float32, "
               "Adafactor): XLA memory_analysis() of the MoE model and its dense baseline"),
        columns=[("config", "config", ""), ("batch", "batch", "d"),
                 ("moe_temp", "MoE temp MiB", ".2f"), ("dense_temp", "dense temp MiB", ".2f"),
                 ("ratio", "temp ratio", ".2f"),
                 ("moe_args", "MoE args MiB", ".2f"), ("dense_args", "dense args MiB", ".2f"),
                 ("moe_out", "MoE out MiB", ".2f"), ("dense_out", "dense out MiB", ".2f"),
                 ("moe_params", "MoE params MiB", ".2f"),
                 ("dense_params", "dense params MiB", ".2f")])
    for family, overrides in sizes.cases:
        overrides = {**dict(sizes.overrides), **dict(overrides)}
        moe_setup = train_setup.build(train_setup.load_config(family, overrides))
        moe = analyse(moe_setup)
        dense = analyse(train_setup.build(train_setup.load_config(
            family, {**overrides, **train_setup.DENSE})))
        table.add(config=train_setup.describe(family, moe_setup.model_cfg.moe),
                  batch=moe_setup.config.data.batch_size,
                  moe_temp=moe["temp"] / MIB, dense_temp=dense["temp"] / MIB,
                  ratio=moe["temp"] / dense["temp"],
                  moe_args=moe["args"] / MIB, dense_args=dense["args"] / MIB,
                  moe_out=moe["out"] / MIB, dense_out=dense["out"] / MIB,
                  moe_params=moe["params"] / MIB, dense_params=dense["params"] / MIB)
    table.notes += [
        "temp: XLA's temporary allocation for one step after buffer reuse (its plan for the "
        "step's intermediates: activations saved for the backward pass, gradients, optimizer "
        "update temporaries, MoE routing tensors and [G, E, C, D] expert buffers); not "
        "arguments or outputs. args: parameters + optimizer state + batch; out: the updated "
        "parameters and optimizer state + metrics (the step does not donate its inputs, so "
        "both are live).",
        "dense baseline: model.moe_as_dense=True, each MoE layer a dense FFN of width k·F; its "
        "parameters are E/k times smaller in those layers, so args/out/params differ by the "
        "expert weights (Adafactor keeps factored second moments: small).",
    ]
    return table
