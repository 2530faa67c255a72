"""Ahead-of-time TPU sizing: slice shapes, the collective census of compiled HLO, and (where
libtpu is installed) a real compile for a 4-chip and an 8-chip slice."""

import importlib.util
import json
import math

import pytest

from experiments import config_files
from experiments.benchmarks import aot
from moejax.errors import ConfigError
from moejax.parallel.tpu_chips import CHIPS, parse_topology
from moejax.train.state_memory import state_memory

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
        "all-to-all": {"count": 1, "bytes": 4 * 8 * 128 * 2, "elements": 4 * 8 * 128},
        "all-reduce": {"count": 1, "bytes": (10 + 20) * 4,       # the -start, not the -done
                       "elements": 10 + 20},
        "all-gather": {"count": 1, "bytes": 4 * 16 * 4, "elements": 4 * 16},
        "ragged-all-to-all": {"count": 1, "bytes": 64 * 32 * 2, "elements": 64 * 32},
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


NO_LIBTPU = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                               reason='libtpu is not installed (pip install "jax[tpu]")')


def switch_tiny_all_to_all_elements(shards):
    """Switch tiny by hand: batch 96, 24 encoder / 6 decoder tokens, one routing group per row,
    D = 128, E = 8, top-1, capacity factor 1.25, min capacity 4; one MoE layer per stack.
    Each layer sends its [G_local, E, C, D] buffer 4 times (out, back; both transposed)."""
    g_local = 96 // shards
    c_encoder = max(4, math.ceil(1.25 * 24 / 8))                  # 4
    c_decoder = min(6, max(4, math.ceil(1.25 * 6 / 8)))           # 4 (at most S = 6)
    return 4 * g_local * 8 * (c_encoder + c_decoder) * 128


@NO_LIBTPU
@pytest.mark.parametrize("family, topology, expert", [("switch", "v5e-4", 4),
                                                      ("mixtral", "v5p-8", 8)])
def test_a_tiny_config_compiles_for_a_tpu_slice(family, topology, expert):
    """The whole train step compiled by XLA:TPU: its all-to-alls against the plan by hand, its
    parameter and optimizer bytes per chip against the shapes-only estimate of
    experiments.memory, and its arguments = that state + one small batch."""
    config = config_files.load(family, "tiny", {"mesh.expert": expert})
    figures = aot.analyse(config, topology, log=lambda s: None)
    chips = int(topology.split("-")[1])
    assert figures["chips"] == chips and figures["fits"]
    assert figures["mesh"]["expert"] == expert
    c = figures["per_chip"]
    a2a = c["collectives"]["all-to-all"]
    if family == "switch":                   # capacity buffers, both MoE layers
        assert a2a["count"] == 2 * 4
        assert a2a["elements"] == c["all_to_all_minimum_elements"] == (
            switch_tiny_all_to_all_elements(chips))
        assert "all-reduce" in c["collectives"]            # data-parallel gradients
    else:                                    # dropless on TPU: the real ragged exchange
        layers, t_local, k, d = 4, 16 * 128 // chips, 2, 128
        assert c["collectives"]["ragged-all-to-all"]["count"] == 4 * layers
        assert a2a["elements"] == a2a["count"] * expert        # the [E] row counts
        assert c["all_to_all_minimum_elements"] == layers * 4 * t_local * k * d
    state = state_memory(config, chips)
    assert c["parameter_bytes"] == state["parameters"]["all"]["per_device"]
    assert c["optimizer_state_bytes"] == state["optimizer"]["per_device"]
    extra = c["argument_bytes"] - c["parameter_bytes"] - c["optimizer_state_bytes"]
    assert 0 <= extra < 256 * 1024                        # the batch, the step, the rng
    assert c["flops"] > 0 and c["total_bytes"] <= c["hbm_bytes"]


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


def test_sizing_rows_resume_and_tabulate(tmp_path, monkeypatch):
    """A row whose JSON exists is read, not compiled again; a table row shows the mesh,
    memory, fits, all-to-all elements against the plan minimum, prediction and compile time;
    a failed row keeps aot's one-line reason."""
    from experiments.benchmarks import sizing as aot_sizing
    gib = 2 ** 30
    saved = {"topology": "v5p-64", "mesh": {"data": 1, "expert": 64}, "fits": True,
             "compile_seconds": 125.0, "row": "switch", "config": "switch",
             "overrides": {"mesh.expert": 64},
             "per_chip": {"total_bytes": 30.9 * gib, "hbm_bytes": 95 * gib,
                          "all_to_all_minimum_elements": 400e6,
                          "collectives": {"all-to-all": {"count": 48, "bytes": 1, "elements":
                                                         500e6}}},
             "prediction": {"step_seconds": 0.026, "mfu": 0.27}}
    (tmp_path / "switch.json").write_text(json.dumps(saved))
    monkeypatch.setattr(aot_sizing.subprocess, "run", lambda *a, **k: pytest.fail("compiled"))
    figures = aot_sizing.run_row(aot_sizing.ROWS[0], str(tmp_path))
    assert figures == saved
    failed = {"row": "mixtral", "topology": "v5p-32", "overrides": {"mesh.expert": 8},
              "error": "error: DOES NOT FIT on v5p-32: E1000: CompileTimeHbmOom: Ran out of "
                       "memory on HBM, the total memory required for HLO temporaries "
                       "(280.57G) exceeds available HBM (95.73G). HLO module: jit_train_step."}
    table = aot_sizing.markdown([figures, failed]).splitlines()
    assert table[2] == ("| switch | v5p-64 | expert=64  | 30.9 of 95 GiB | yes | "
                        "500 M / 400 M = 1.25 | 26 ms, 27% | 125 s |")
    assert table[3] == ("| mixtral | v5p-32 |  | — | **no**: 280.57G of temporaries > 95.73G "
                        "HBM | | | |")
