"""Benchmark suites of `python -m experiments.bench` (one module per suite).

Every suite is a function `run(smoke: bool) -> Table`: the full sizes quoted in
docs/PERFORMANCE.md, or tiny sizes (`smoke`) that the tests run to check that it reports.
"""
