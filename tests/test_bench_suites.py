"""The train-step benchmark suites (experiments/benchmarks: step, comm, compile, memory) at
their --smoke sizes, in-process: every promised row, every cell filled with a finite number or
a label. comm is also checked against the capacity plan, computed here by hand. Nothing asserts
on timings.
"""

import importlib.util
import math

import pytest

from experiments.benchmarks.collectives import collectives, executions, parse_collectives, summarize
from moejax.plan import expert_capacity


def check_cells(table, rows: int, labels=("config", "mesh", "scan")):
    """rows rows; every column filled; numbers finite and positive (counts may be 0)."""
    assert len(table.rows) == rows
    for row in table.rows:
        for key, _, _ in table.columns:
            value = row.get(key)
            assert value is not None, (key, row)
            if key in labels:
                assert isinstance(value, str) and value
            else:
                assert isinstance(value, (int, float)) and math.isfinite(value), (key, row)
                assert value >= 0, (key, row)
    assert table.format().count("\n") >= rows + 2


def test_step_suite_reports_moe_and_dense_throughput():
    from experiments.benchmarks import step
    table = step.run(smoke=True)                         # smoke: Switch only (compile time)
    check_cells(table, 1)
    (row,) = table.rows
    assert row["config"].startswith("Switch tiny (top-1")
    assert row["tokens"] == 2 * (32 + 8)                 # batch · (encoder + decoder length)
    assert row["dense_width"] == 64                      # k · F
    assert row["moe_params"] > row["dense_params"] > 0
    for key in ("moe_tok_s", "dense_tok_s", "ratio"):
        assert row[key] > 0


def test_memory_suite_reports_moe_and_dense():
    """Right after the step test: the same Switch programs (compiled once per session)."""
    from experiments.benchmarks import compiled_memory as memory
    table = memory.run(smoke=True)
    check_cells(table, 2)
    assert [r["config"][:6] for r in table.rows] == ["Switch", "ST-MoE"]
    for row in table.rows:
        assert row["moe_temp"] > 0 and row["dense_temp"] > 0 and row["ratio"] > 0
        assert row["moe_params"] > row["dense_params"]          # the experts' weights
        assert row["moe_args"] > row["moe_params"]              # + optimizer state and batch


def test_comm_suite_all_to_all_bytes_are_the_plans_minimum():
    """Switch smoke sizes: batch 8, encoder 32 / decoder 8 tokens (one group per row), D=32,
    E=8 top-1, capacity factor 1.25, min_capacity 4, 8 batch shards (data=2 × expert=4)."""
    from experiments.benchmarks import comm
    table = comm.run(smoke=True)
    check_cells(table, 2)
    switch, mixtral = table.rows
    d, e, shards, f32 = 32, 8, 8, 4
    g_local = 8 // shards                                         # 8 rows = 8 groups
    c_enc = expert_capacity(32, e, 1, 1.25, 4)
    c_dec = expert_capacity(8, e, 1, 1.25, 4)
    assert (c_enc, c_dec) == (5, 4)                               # ceil(1.25·32/8), min 4
    plan = 4 * g_local * e * (c_enc + c_dec) * d * f32            # 4 exchanges per layer
    assert switch["min_bytes"] == plan
    assert switch["a2a_bytes"] == plan
    assert switch["ratio"] == 1.0
    assert switch["moe_layers"] == 2 and switch["a2a_ops"] == 4
    assert switch["ag_ops"] == switch["rs_ops"] == switch["cp_ops"] == 0
    assert switch["ar_ops"] > 0                                   # data-parallel gradients
    # Mixtral, 2 scanned layers, dropless on XLA:CPU: padded [|x|, T_l·min(k, E_l), D] buffers
    # (4 exchanges) and the int32 count matrix [|x|, E_l] per layer, both loop iterations.
    t_local, k, x, e_local = 8 * 32 // shards, 2, 4, 2
    padded = x * t_local * min(k, e_local) * d * f32
    assert mixtral["moe_layers"] == 2
    assert mixtral["a2a_int_bytes"] == 2 * x * e_local * 4
    assert mixtral["a2a_bytes"] == 2 * (4 * padded + x * e_local * 4)
    assert mixtral["min_bytes"] == 2 * 4 * t_local * k * d * f32


def test_compile_suite_reports_every_depth():
    """Smoke: the scanned depths only (every compile here is a fresh one, by design)."""
    from experiments.benchmarks import compile as compile_suite
    table = compile_suite.run(smoke=True)
    check_cells(table, 2)
    assert [(r["layers"], r["moe_layers"], r["scan"]) for r in table.rows] == [
        (2, 1, "scanned"), (4, 2, "scanned")]
    assert all(r["seconds"] > 0 and r["xla"] > 0 and r["trace"] > 0 for r in table.rows)


# A while loop of 3 iterations holding a (tuple) all-to-all and an all-reduce over groups of
# one device; outside it an all-gather (mesh-style groups) and an all-reduce (iota groups).
HLO = "\n".join([
    "HloModule m",
    "",
    "%add (a: f32[], b: f32[]) -> f32[] {",
    "  ROOT %s = f32[] add(f32[] %a, f32[] %b)",
    "}",
    "",
    "%body (p: (s32[], f32[2,8])) -> (s32[], f32[2,8]) {",
    "  %x = f32[2,8]{1,0} get-tuple-element((s32[], f32[2,8]) %p), index=1",
    "  %a2a = (f32[2,4]{1,0}, f32[2,4]{1,0}) all-to-all(%x, %x), channel_id=1, "
    "replica_groups={{0,1},{2,3}}",
    "  %ar = f32[2,8]{1,0} all-reduce(%x), channel_id=2, replica_groups={{0},{1},{2},{3}}, "
    "to_apply=%add",
    "  ROOT %t = (s32[], f32[2,8]) tuple(%i, %x)",
    "}",
    "",
    "%cond (p: (s32[], f32[2,8])) -> pred[] {",
    "  ROOT %c = pred[] constant(true)",
    "}",
    "",
    "ENTRY %main (x: f32[2,8]) -> f32[2,8] {",
    "  %w = (s32[], f32[2,8]) while(%t0), condition=%cond, body=%body, "
    'backend_config={"known_trip_count":{"n":"3"}}',
    "  %g = bf16[4,8]{1,0} all-gather(%y), replica_groups=mesh['axis_0'=2,'axis_1'=2] "
    "{'axis_1'}, dimensions={0}",
    "  ROOT %r = f32[2,8]{1,0} all-reduce(%x), replica_groups=[1,4]<=[4], to_apply=%add",
    "}",
    ""])


def test_collectives_count_loop_bodies_per_iteration():
    assert executions(HLO) == {"add": 4, "body": 3, "cond": 4, "main": 1}
    found = {c.name: c for c in parse_collectives(HLO)}
    a2a, ar, gather, root = found["a2a"], found["ar"], found["g"], found["r"]
    assert (a2a.op, a2a.dtypes, a2a.elements, a2a.nbytes) == ("all-to-all", ("f32",), 16, 64)
    assert (a2a.group_size, a2a.executions) == (2, 3)
    assert ar.trivial and ar.executions == 3
    assert (gather.dtypes, gather.nbytes, gather.group_size) == (("bf16",), 64, 2)
    assert (root.group_size, root.executions) == (4, 1)
    assert collectives(HLO) == [("all-to-all", 64), ("all-reduce", 64), ("all-gather", 64),
                                ("all-reduce", 64)]
    kinds = summarize(list(found.values()))
    assert kinds["all-to-all"] == {"ops": 3, "bytes": 192, "elements": 48, "trivial": 0}
    assert kinds["all-reduce"] == {"ops": 1, "bytes": 64, "elements": 16, "trivial": 3}


# How XLA:TPU prints a scanned loop (as libtpu 0.0.42 compiles one): no known_trip_count, a
# condition `counter < constant(5)`, an async all-gather split into a start and a done fusion
# that each print a copy of it (same channel_id), and two all-to-alls sharing channel 1.
TPU_HLO = "\n".join([
    "HloModule m",
    "",
    "%gather_start (p0: bf16[1,8]) -> bf16[4,8] {",
    "  %all-gather.1 = bf16[4,8]{1,0:T(8,128)} all-gather(%p0), channel_id=7, "
    "replica_groups=mesh['axis_0'=4] {'axis_0'}, dimensions={0}, "
    'backend_config={"async_collective_fusion_config":{"flag_start":"-1"}}',
    "  ROOT %cc = bf16[4,8]{1,0} custom-call(%all-gather.1)",
    "}",
    "",
    "%gather_done (p0: bf16[1,8]) -> bf16[4,8] {",
    "  ROOT %all-gather.2 = bf16[4,8]{1,0:T(8,128)} all-gather(%p0), channel_id=7, "
    "replica_groups=mesh['axis_0'=4] {'axis_0'}, dimensions={0}, "
    'backend_config={"async_collective_fusion_config":{"flag_start":"2"}}',
    "}",
    "",
    "%body (p: (s32[], bf16[1,8])) -> (s32[], bf16[1,8]) {",
    "  %one = s32[]{:T(128)} constant(1)",
    "  %s = bf16[4,8]{1,0} fusion(%x), kind=kCustom, calls=%gather_start",
    "  %d = bf16[4,8]{1,0} fusion(%x), kind=kCustom, calls=%gather_done",
    "  %a = bf16[4,2]{1,0} all-to-all(%y), channel_id=1, replica_groups={{0,1,2,3}}, "
    "dimensions={0}",
    "  %b = bf16[4,2]{1,0} all-to-all(%a), channel_id=1, replica_groups={{0,1,2,3}}, "
    "dimensions={0}",
    "  ROOT %t = (s32[], bf16[1,8]) tuple(%i, %x)",
    "}",
    "",
    "%cond (p: (s32[], bf16[1,8])) -> pred[] {",
    "  %i = s32[]{:T(128)} get-tuple-element(%p), index=0",
    "  %constant.52.clone.1 = s32[]{:T(128)} constant(5)",
    "  ROOT %lt.10 = pred[]{:T(512)} compare(%i, %constant.52.clone.1), direction=LT, "
    'metadata={op_name="jit(f)/while/cond/lt"}',
    "}",
    "",
    "ENTRY %main (x: bf16[1,8]) -> bf16[1,8] {",
    "  %w = (s32[], bf16[1,8]) while(%t0), condition=%cond, body=%body",
    "  ROOT %r = bf16[1,8]{1,0} get-tuple-element(%w), index=1",
    "}",
    ""])


def test_a_tpu_loop_counts_by_its_condition():
    """5 trips from `counter < 5`; the start/done copies of one all-gather count once, the
    two all-to-alls twice."""
    runs = executions(TPU_HLO)
    assert (runs["body"], runs["cond"], runs["gather_start"], runs["gather_done"]) == (5, 6, 5, 5)
    kinds = summarize(parse_collectives(TPU_HLO))
    assert kinds["all-gather"] == {"ops": 5, "bytes": 5 * 4 * 8 * 2, "elements": 5 * 32,
                                   "trivial": 0}
    assert kinds["all-to-all"]["ops"] == 2 * 5


def test_gpu_suite_skips_without_a_gpu_and_its_check_runs_anywhere(capsys):
    """The full gpu suite on CPU prints one line and no rows; its ragged_dot-against-blocks
    check at smoke sizes (jax.lax.ragged_dot on XLA:CPU against moejax.grouped) agrees on the
    output and every gradient; the peak table knows the H200 and not a CPU."""
    import jax

    from experiments.benchmarks import gpu
    from experiments.benchmarks.table import Table
    table = gpu.run(smoke=False)
    assert table.rows == [] and "skipped: no GPU" in capsys.readouterr().out
    check = Table("t", [("what", "what", "")])
    gpu.ragged_against_blocks(check, gpu.SMOKE, jax.devices()[0])
    assert [r["what"] for r in check.rows] == ["output", "experts/wi", "experts/wi_gate",
                                               "experts/wo", "router/w", "input"]
    assert all(r["rel_error"] <= gpu.AGREE and r["verdict"] == "agrees" for r in check.rows)
    h200 = type("Device", (), {"device_kind": "NVIDIA H200"})()
    assert gpu.peak_flops(h200) == 989.4e12 and gpu.peak_flops(jax.devices()[0]) is None


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="needs libtpu")
def test_tpu_gmm_suite_compiles_grouped_matmuls_for_a_tpu_chip():
    """Smoke sizes: M = 1024 rows, D = 128, F = 256, E = 8. Useful work by hand: forward,
    d lhs and d rhs, 2·M·D·F each; XLA:TPU's count of any implementation is at least that,
    and the megablox kernel's cost estimate is that to within 1% (it counts whole tiles:
    1.005 at these sizes with libtpu 0.0.42)."""
    from experiments.benchmarks import tpu_gmm
    table = tpu_gmm.run(smoke=True)
    useful = 3 * 2 * 1024 * 128 * 256
    assert [(r["impl"], r["rows"], r["experts"]) for r in table.rows] == [
        ("ragged_dot", 1024, 8), ("megablox gmm", 1024, 8)]
    for row in table.rows:
        assert row["status"] == "compiles"
        assert row["useful_tflop"] == useful / 1e12
        assert row["flop_ratio"] >= 0.999 and row["hbm_gb"] > 0 and row["roofline_ms"] > 0
    assert table.rows[1]["flop_ratio"] < 1.01
