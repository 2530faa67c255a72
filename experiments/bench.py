r"""Benchmarks printed as ratios measured side by side in one run (docs/PERFORMANCE.md).

    python -m experiments.bench --suite=layer|step|comm|compile|memory|gpu|tpu_gmm|all [--smoke]
        [--json=PATH] [--plot=PNG]

Suites (one module each in experiments/benchmarks/):
  layer    MoE layer fwd+bwd against a dense FFN of equal per-token FLOPs: routing families,
           dispatch kinds, fine-grained experts, token counts.
  step     training tokens/s of the tiny Switch and ST-MoE configs against their dense baselines.
  comm     collectives in the compiled HLO of a sharded train step on 8 virtual devices, against
           the capacity plan's minimum.
  compile  compile time of the train step against depth (scanned layers).
  memory   compiled temporary memory of the MoE train step against the dense baseline.
  gpu      on one GPU: dropless ragged_dot against the CPU blocks path, and a bf16 train step
           at GLaM-base width (MoE capacity / dropless / dense): step time, tokens/s, MFU.
           Without a GPU it prints one line and skips (CI never needs it).
  tpu_gmm  grouped matmuls (ragged_dot, megablox gmm) compiled for one TPU v5p chip from here
           (libtpu): XLA's FLOPs and HBM bytes against the useful work, a roofline time.
--smoke runs tiny sizes (what the tests run). The table is printed as Markdown; --json writes
{suite: {title, rows, notes}}; --plot=PNG draws the layer suite's ratios and targets.
"""

import importlib
import json
import os
import subprocess
import sys
import tempfile

from absl import app, flags, logging

from experiments import cli

SUITES = ("layer", "step", "comm", "compile", "memory", "gpu", "tpu_gmm")
# Suites that need several devices: on CPU they run with 8 virtual ones.
NEEDS_DEVICES = {"comm": 8}
# Each suite is experiments/benchmarks/<module>.py; the module is named for what it measures.
MODULES = {"memory": "compiled_memory"}

SMOKE_MARK = ("SMOKE RUN (micro sizes, one repeat: checks that the suite runs; its times and "
              "ratios measure nothing):")

_SUITE = flags.DEFINE_enum("suite", "layer", SUITES + ("all",), "Which benchmark to run.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Toy sizes: checks that a suite runs (about a minute "
                            "a suite on 2 cores, mostly compilation); its figures mean nothing.")
_JSON = flags.DEFINE_string("json", None, "Also write the results here.")
_PLOT = flags.DEFINE_string("plot", None, "Also draw the layer suite's ratios in this PNG.")


def run_in_subprocess(suite: str, json_path: str) -> dict:
    """One suite in a fresh process (its own device count and compile state)."""
    cmd = [sys.executable, "-m", "experiments.bench", f"--suite={suite}", f"--json={json_path}"]
    if _SMOKE.value:
        cmd.append("--smoke")
    if _PLOT.value and suite == "layer":
        cmd.append(f"--plot={_PLOT.value}")
    subprocess.run(cmd, check=True)
    with open(json_path, encoding="utf-8") as f:
        return json.load(f)


def add_virtual_devices(suite: str) -> None:
    """On CPU, the virtual devices a suite needs, set before jax starts its backend (the
    device count is read when it does)."""
    flags_now = os.environ.get("XLA_FLAGS", "")
    if (suite in NEEDS_DEVICES and "xla_force_host_platform_device_count" not in flags_now
            and os.environ.get("JAX_PLATFORMS", "cpu") == "cpu"):
        os.environ["XLA_FLAGS"] = (f"{flags_now} --xla_force_host_platform_device_count="
                                   f"{NEEDS_DEVICES[suite]}").strip()


def run_here(suite: str) -> dict:
    import jax
    needed = NEEDS_DEVICES.get(suite, 1)
    if jax.device_count() < needed:
        raise app.UsageError(
            f"--suite={suite} needs {needed} devices and jax sees {jax.device_count()}; on CPU set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={needed} (or run --suite=all)")
    module = importlib.import_module(f"experiments.benchmarks.{MODULES.get(suite, suite)}")
    table = module.run(smoke=_SMOKE.value)
    if _SMOKE.value:
        table.title = f"{SMOKE_MARK} {table.title}"
    print(table.format(), flush=True)
    if _PLOT.value and suite == "layer":
        from experiments.benchmarks.plot import layer_chart
        print(f"wrote {layer_chart(table, _PLOT.value)}")
    return {suite: table.to_json()}


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)   # jax logs at INFO each backend it cannot load
    results = {}
    if _SUITE.value == "all":
        for suite in SUITES:
            print(f"\n## {suite}\n", flush=True)
            with tempfile.TemporaryDirectory() as tmp:
                results.update(run_in_subprocess(suite, os.path.join(tmp, f"{suite}.json")))
    else:
        add_virtual_devices(_SUITE.value)
        results = run_here(_SUITE.value)
    cli.write_json(_JSON.value, results)


if __name__ == "__main__":
    cli.run(main)
