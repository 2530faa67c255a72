"""How fast training runs: step time without compilation or evaluation, tokens/s, model FLOP/s
and model FLOPs utilisation (MFU, PaLM: Chowdhery et al. 2022, Appendix B) against the
device's peak.

The peak is the datasheet's dense bf16 FLOP/s of one chip, by jax's device_kind: TPUs from
moejax.parallel.tpu_chips (Google Cloud's TPU pages); NVIDIA H100 SXM and H200 SXM 989.4
TFLOP/s (the H100 and H200 Tensor Core GPU datasheets; 1,979 with 2:4 sparsity), H100 PCIe
756, A100 312 (A100 datasheet, 624 sparse). CPUs have no entry: there only GFLOP/s is shown.
"""

from __future__ import annotations

import collections
from typing import Optional

from moejax.parallel.tpu_chips import CHIPS

GPU_BF16_PEAK = {"H200": 989.4e12, "H100 PCIe": 756e12, "H100": 989.4e12, "A100": 312e12}
# jax's device_kind of each TPU generation, most specific first ("TPU v5" is v5p)
TPU_KINDS = (("TPU v6 lite", "v6e"), ("TPU v5 lite", "v5e"), ("TPU v5p", "v5p"),
             ("TPU v5", "v5p"), ("TPU v4", "v4"))


def peak_flops(device) -> Optional[float]:
    """The datasheet's dense bf16 FLOP/s of one device; None when it is not in the tables."""
    kind = getattr(device, "device_kind", "")
    if getattr(device, "platform", "") == "tpu":
        return next((CHIPS[chip].bf16_flops for name, chip in TPU_KINDS if name in kind), None)
    return next((peak for name, peak in GPU_BF16_PEAK.items() if name in kind), None)


class StepTimer:
    """The mean duration of the last `window` timed steps. The trainer times only the train
    step itself, and not the first step of a process (it compiles), so evaluations,
    checkpoints and compilation do not distort the rate or the ETA."""

    def __init__(self, window: int = 20):
        self.times = collections.deque(maxlen=window)

    def add(self, seconds: float) -> None:
        self.times.append(seconds)

    @property
    def seconds(self) -> Optional[float]:
        return sum(self.times) / len(self.times) if self.times else None


def rates(step_seconds: Optional[float], tokens_per_step: int,
          flops_per_step: Optional[float], devices: int, peak: Optional[float]) -> dict:
    """{tokens_per_second, model_flops_per_second, mfu} for a train record; a key is left out
    where it is unknown (no timed step yet, FLOPs undefined, or no peak for this device)."""
    if not step_seconds:
        return {}
    out = {"step_seconds": step_seconds, "tokens_per_second": tokens_per_step / step_seconds}
    if flops_per_step:
        out["model_flops_per_second"] = flops_per_step / step_seconds
        if peak:
            out["mfu"] = flops_per_step / step_seconds / (peak * devices)
    return out
