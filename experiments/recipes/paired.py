"""Paired comparisons over seeds: a 95% confidence interval for the mean difference.

Arms that share a seed share their data order and every weight outside the FFNs (common random
numbers, see README), so the difference between two arms is measured seed by seed and judged
by Student's t interval on those paired differences (n − 1 degrees of freedom):

    d_s = a_s − b_s,   mean ± t(0.975, n − 1) · std(d, ddof=1) / sqrt(n)

A claim that a is lower than b held if the whole interval lies below 0, did not hold if it
lies above 0, and is inconclusive (the interval's width stated) if it contains 0. A single
pair has no interval: its difference is reported, the verdict is inconclusive.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, Optional, Sequence

import numpy as np

from experiments.recipes.summary import RunResult, Summary

# Two-sided 95% quantiles of Student's t, t(0.975, df), df = 1..30 (to 3 decimals, as printed in
# any statistics table; tests check them against scipy). Beyond 30 the normal 1.960 is used.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile(df: int) -> float:
    """t(0.975, df): half the width of a 95% interval in standard errors."""
    if df < 1:
        raise ValueError(f"degrees of freedom {df} must be >= 1")
    return T_975[df - 1] if df <= len(T_975) else 1.960


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """The mean of a − b over paired seeds and its 95% interval (None for one pair)."""
    mean: float
    half_width: Optional[float]
    n: int

    @property
    def low(self) -> Optional[float]:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> Optional[float]:
        return None if self.half_width is None else self.mean + self.half_width

    def lower(self) -> Optional[bool]:
        """True if the interval excludes 0 below it (a is lower), False above, else None."""
        if self.half_width is None:
            return None
        if self.high < 0:
            return True
        if self.low > 0:
            return False
        return None

    def text(self, spec: str = "+.4f") -> str:
        """'−0.0123 [−0.0200, −0.0046], 3 seeds' or '−0.0123, 1 seed (no interval)'."""
        if self.half_width is None:
            return f"{format(self.mean, spec)}, {self.n} seed (no interval)"
        return (f"{format(self.mean, spec)} [{format(self.low, spec)}, "
                f"{format(self.high, spec)}], {self.n} seeds")


def paired_difference(a: Sequence[float], b: Sequence[float]) -> PairedDifference:
    """Mean and 95% t interval of a[i] − b[i]."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if d.size == 0:
        raise ValueError("no paired values")
    if d.size == 1:
        return PairedDifference(float(d[0]), None, 1)
    half = t_quantile(d.size - 1) * float(np.std(d, ddof=1)) / math.sqrt(d.size)
    return PairedDifference(float(np.mean(d)), half, int(d.size))


def by_seed(s: Summary) -> Dict[int, RunResult]:
    """An arm's runs by seed (by position where seeds are not recorded), for pairing."""
    return {(r.seed if r.seed is not None else i): r for i, r in enumerate(s.seeds)}


def paired_runs(a: Summary, b: Summary, field: str = "final_loss"
                ) -> Optional[PairedDifference]:
    """The paired difference of a field between two arms over the seeds both ran stably
    (paired by seed; by position where seeds are not recorded); None without any pair."""
    ka, kb = by_seed(a), by_seed(b)
    pairs = [(ka[k], kb[k]) for k in sorted(set(ka) & set(kb))
             if not ka[k].diverged and not kb[k].diverged
             and getattr(ka[k], field) is not None and getattr(kb[k], field) is not None]
    if not pairs:
        return None
    return paired_difference([getattr(x, field) for x, _ in pairs],
                             [getattr(y, field) for _, y in pairs])


def lower(a: Summary, b: Summary, field: str = "final_loss") -> Optional[bool]:
    """Whether a's field is lower than b's: the paired interval excludes 0 (True below,
    False above); None when it contains 0 or there is nothing to pair."""
    diff = paired_runs(a, b, field)
    return None if diff is None else diff.lower()


def describe(a: Summary, b: Summary, field: str = "final_loss", spec: str = "+.4f") -> str:
    """'a − b = −0.0123 [−0.0200, −0.0046], 3 seeds' for verdict texts (numbers as `spec`)."""
    diff = paired_runs(a, b, field)
    return "no stable pair of runs" if diff is None else diff.text(spec)
