"""A jax.profiler trace of chosen training steps (train.profile_steps = "START:END").

Steps START to END (1-based, as in the log) are traced into WORKDIR/profile: a
plugins/profile/<run>/<host>.xplane.pb file that TensorBoard's profile plugin and xprof read
(`tensorboard --logdir WORKDIR/profile`, with `pip install tensorboard-plugin-profile`). Skip
step 1 (it compiles): e.g. "5:8". Only process 0 traces.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

import jax

from moejax.errors import check


def parse_steps(spec: str) -> Optional[Tuple[int, int]]:
    """'5:8' -> (5, 8); '' -> None; anything else one ConfigError line."""
    if not spec:
        return None
    start, colon, end = str(spec).partition(":")
    ok = colon and start.strip().isdigit() and end.strip().isdigit()
    check(bool(ok) and 1 <= int(start) <= int(end),
          f"train.profile_steps={spec!r} must be 'START:END' with 1 <= START <= END "
          "(steps as the log numbers them), e.g. '5:8'")
    return int(start), int(end)


class StepProfiler:
    """Starts the trace before step START runs and stops it after step END (or on close)."""

    def __init__(self, spec: str, workdir: str, log=print):
        self.steps = parse_steps(spec) if jax.process_index() == 0 else None
        self.directory = os.path.join(workdir, "profile")
        self.log = log
        self.active = False

    def before(self, step: int) -> None:
        """Called before step `step` (1-based) runs."""
        if self.steps and step == self.steps[0] and not self.active:
            jax.profiler.start_trace(self.directory)
            self.active = True

    def after(self, step: int) -> None:
        """Called once step `step` has finished (its outputs read)."""
        if self.active and step >= self.steps[1]:
            self.close()
            self.log(f"profile of steps {self.steps[0]}-{self.steps[1]}: {self.directory} "
                     f"(tensorboard --logdir {self.directory})")

    def close(self) -> None:
        if self.active:
            jax.profiler.stop_trace()
            self.active = False
