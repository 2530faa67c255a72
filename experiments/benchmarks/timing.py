"""Wall-clock medians of compiled functions, measured side by side.

Ratios are what the suites report: this machine is shared and noisy, so a variant and its
baseline are timed in alternation (round after round) and each side's median is taken, which
keeps slow spells from landing on one side only.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Dict

import jax


def once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def side_by_side(fns: Dict[str, Callable[[], object]], repeats: int) -> Dict[str, float]:
    """{name: median seconds} of zero-argument compiled calls, after one warm-up call each
    (the compile), timed round-robin `repeats` times."""
    for fn in fns.values():
        jax.block_until_ready(fn())
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(once(fn))
    return {name: statistics.median(t) for name, t in times.items()}
