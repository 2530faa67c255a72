"""Ahead-of-time TPU sizing: slice shapes, the collective census of compiled HLO, and (where
libtpu is installed) a real compile for a 4-chip and an 8-chip slice."""

import importlib.util

import pytest

from experiments import config_files
from experiments.benchmarks import aot
from moejax.errors import ConfigError
from moejax.parallel.tpu_chips import CHIPS, parse_topology

HLO = """
ENTRY %main () -> f32[4,16] {
  %all-to-all.3 = bf16[4,8,128]{2,1,0} all-to-all(bf16[4,8,128]{2,1,0} %x), dimensions={0}
  %all-reduce-start.1 = (f32[10]{0}, f32[20]{0}) all-reduce-start(f32[10]{0} %a, f32[20]{0} %b)
  %all-reduce-done.1 = (f32[10]{0}, f32[20]{0}) all-reduce-done(%all-reduce-start.1)
  %ag = f32[4,16]{1,0} all-gather(f32[1,16]{1,0} %y), dimensions={0}
  %rag = bf16[64,32]{1,0} ragged-all-to-all(bf16[64,32]{1,0} %p, bf16[64,32]{1,0} %o, ...)
  ROOT %add = f32[4,16]{1,0} add(%ag, %ag)
}
"""


def test_collectives_are_counted_with_their_bytes():
    assert aot.collectives(HLO) == {
        "all-to-all": {"count": 1, "bytes": 4 * 8 * 128 * 2},
        "all-reduce": {"count": 1, "bytes": (10 + 20) * 4},       # the -start, not the -done
        "all-gather": {"count": 1, "bytes": 4 * 16 * 4},
        "ragged-all-to-all": {"count": 1, "bytes": 64 * 32 * 2},
    }


@pytest.mark.parametrize("name, shape", [("v5p-4", (2, 2, 1)), ("v5p-8", (2, 2, 2)),
                                         ("v5p-64", (4, 4, 4)), ("v4-128", (4, 4, 8)),
                                         ("v5e-8", (2, 4)), ("v6e-256", (16, 16))])
def test_slices_have_google_s_shapes(name, shape):
    chip, got = parse_topology(name)
    assert got == shape and chip is CHIPS[name.split("-")[0]]


@pytest.mark.parametrize("name", ["v5p", "v7-8", "v5p-6", "v5e-2", "tpu-8"])
def test_bad_topologies_give_one_line(name):
    with pytest.raises(ConfigError, match=r"topology|does not exist"):
        parse_topology(name)


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                    reason='libtpu is not installed (pip install "jax[tpu]==<jax version>")')
@pytest.mark.parametrize("topology", ["v5e-4", "v5p-8"])
def test_a_tiny_config_compiles_for_a_tpu_slice(topology):
    config = config_files.load("switch", "tiny")
    figures = aot.analyse(config, topology, log=lambda s: None)
    chips = int(topology.split("-")[1])
    assert figures["chips"] == chips and figures["fits"]
    c = figures["per_chip"]
    assert 0 < c["parameter_bytes"] <= c["argument_bytes"] <= c["total_bytes"]
    assert c["flops"] > 0 and "all-reduce" in c["collectives"]      # data-parallel gradients


def test_compile_time_out_of_memory_is_one_does_not_fit_line():
    """XLA stops a program that cannot fit before there is a memory analysis; its message
    (as libtpu 0.0.42 words it for DeepSeek-V3 at 1M tokens on v5p-256, fsdp 4) becomes one
    line with the figures in it."""
    message = ("Traceback ...\njax.errors.JaxRuntimeError: RESOURCE_EXHAUSTED: Ran out of "
               "memory on HBM, the total memory required for HLO temporaries (222.19G) exceeds "
               "available HBM (95.74G).\nmore")
    line = aot.does_not_fit(message, "v5p-256")
    assert "\n" not in line
    assert line.startswith("DOES NOT FIT on v5p-256: Ran out of memory on HBM, the total "
                           "memory required for HLO temporaries (222.19G) exceeds available "
                           "HBM (95.74G).")
    assert "--config.train.grad_accum_steps" in line
