"""Cloud TPU chips: the figures a roofline prediction needs, and their slice topologies.

Per chip, from Google Cloud's TPU documentation (cloud.google.com/tpu/docs/v4, /v5e,
/v5p-training, /v6e; read 2026-11):

| chip | HBM | bf16 peak | HBM bandwidth | ICI bandwidth (bidirectional, per chip) |
|---|---|---|---|---|
| v4  | 32 GiB | 275 TFLOP/s | 1200 GB/s | 540 GB/s (*) |
| v5e | 16 GB  | 197 TFLOP/s |  819 GB/s | 400 GB/s |
| v5p | 95 GiB | 459 TFLOP/s | 2765 GB/s | 1200 GB/s |
| v6e | 32 GB  | 918 TFLOP/s | 1638 GB/s | 800 GB/s |

(*) The v4 page gives no per-chip ICI figure: 6 links of 45 GB/s each way (the per-link
figure of "How to Scale Your Model", jax-ml.github.io/scaling-book/tpus) = 540 GB/s.

Slices are named here by chip count, `v5p-64` = 64 chips (Cloud's accelerator types count
TensorCores for v4 and v5p, 2 per chip: Cloud's v5p-128 is 64 chips).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Dict, Tuple

from moejax.errors import ConfigError

GB, GIB = 1e9, 2 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    hbm_bytes: float
    bf16_flops: float              # peak, per second
    hbm_bandwidth: float           # bytes per second
    ici_bandwidth: float           # bytes per second, bidirectional, per chip
    dims: int                      # 3: 3-D torus (v4, v5p); 2: 2-D torus (v5e, v6e)


CHIPS: Dict[str, Chip] = {c.name: c for c in (
    Chip("v4", 32 * GIB, 275e12, 1200 * GB, 540 * GB, 3),
    Chip("v5e", 16 * GB, 197e12, 819 * GB, 400 * GB, 2),
    Chip("v5p", 95 * GIB, 459e12, 2765 * GB, 1200 * GB, 3),
    Chip("v6e", 32 * GB, 918e12, 1638 * GB, 800 * GB, 2),
)}


def slice_shape(chip: Chip, chips: int) -> Tuple[int, ...]:
    """The chip grid of a slice of `chips` chips: 3-D slices grow 2x2x1, 2x2x2, 2x2x4, 2x4x4,
    4x4x4, 4x4x8, ... (one axis doubled at a time, smallest first); 2-D ones 2x2, 2x4, 4x4,
    4x8, 8x8, 8x16, 16x16."""
    if chips < 4 or chips & (chips - 1):
        raise ConfigError(f"a {chip.name} slice of {chips} chips does not exist here: use a "
                          f"power of two >= 4")
    shape = [2, 2] + ([1] if chip.dims == 3 else [])
    while math.prod(shape) < chips:
        axis = min(range(len(shape)), key=lambda i: (shape[i], -i))
        shape[axis] *= 2
    return tuple(sorted(shape, key=lambda d: (d == 1, d)))       # 2x2x1, Google's order


def parse_topology(name: str) -> Tuple[Chip, Tuple[int, ...]]:
    """'v5p-64' -> (the v5p Chip, (4, 4, 4)); one ConfigError line for anything else."""
    match = re.fullmatch(r"(v4|v5e|v5p|v6e)-(\d+)", name.strip())
    if not match:
        raise ConfigError(f"--topology={name!r} is not <chip>-<chips> with chip one of "
                          f"{', '.join(CHIPS)} (e.g. v5p-64: 64 chips)")
    chip = CHIPS[match.group(1)]
    return chip, slice_shape(chip, int(match.group(2)))
