"""The layer benchmark runs at tiny sizes and reports every variant (never asserts on time)."""

from experiments.benchmarks import layer
from experiments.benchmarks.table import Table


def test_layer_suite_reports_every_section_and_variant():
    table = layer.run(smoke=True)
    rows = table.rows
    routing = {(r["variant"], r["E"]) for r in rows if r["section"] == "routing"}
    for name, *_ in layer.ROUTING:
        assert (name, layer.SMOKE.experts[0]) in routing
    fine = [r for r in rows if r["section"] == "experts"]
    assert [(r["E"], r["k"]) for r in fine] == [(4, 1), (8, 2)] * 2   # E = 4·m, top-m
    tokens = [(r["variant"], r["tokens"]) for r in rows if r["section"] == "tokens"]
    assert len(tokens) == 2 * len(layer.SMOKE.token_sweep)
    for r in rows:
        assert r["ms"] > 0 and r["baseline_ms"] > 0 and r["ratio"] > 0
    # the reference rows are their own baseline
    assert fine[0]["ratio"] == fine[2]["ratio"] == 1.0
    assert all(r["ratio"] == 1.0 for r in rows if r["section"] == "tokens"
               and r["tokens"] == layer.SMOKE.tokens)
    text = table.format()
    assert text.count("\n| routing") == len(routing)


def test_table_prints_aligned_markdown_with_dashes_for_missing_cells():
    t = Table("title", [("a", "A", ""), ("b", "long B", ".2f")], notes=["a note"])
    t.add(a="x", b=1.234)
    t.add(a="yyyyyyyy")
    assert t.format().splitlines() == [
        "title", "",
        "| A        | long B |",
        "|----------|--------|",
        "| x        | 1.23   |",
        "| yyyyyyyy | –      |",
        "", "- a note"]
