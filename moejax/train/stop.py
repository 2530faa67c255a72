"""Stop requests: SIGTERM (TPU preemption, a scheduler) and SIGINT (Ctrl-C) become a flag.

The training loop checks the flag after every step, saves a checkpoint and exits cleanly; a
request during start-up stops the run before its first step. A second Ctrl-C stops at once
(KeyboardInterrupt), for when a step or a compile takes too long to wait for.

`STOP` is one per process. The trainer installs it itself; experiments/train.py also records
signals from its first line (importing JAX takes seconds) and hands them over with
`request`. Handlers can only be installed from the main thread; elsewhere requests are not
caught.
"""

from __future__ import annotations

import signal
import threading
from typing import Dict, Optional

NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT"}


class StopRequests:
    def __init__(self):
        self.signal_name: Optional[str] = None     # the first signal received
        self._previous: Dict[int, object] = {}
        self._users = 0

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def request(self, signum: int) -> None:
        self.signal_name = self.signal_name or NAMES[signum]

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt                 # the second Ctrl-C: stop now
        self.request(signum)

    def install(self) -> "StopRequests":
        """Catches both signals from now on (nested installs are counted)."""
        if self._users == 0 and threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in NAMES}
        self._users += 1
        return self

    def uninstall(self) -> None:
        self._users -= 1
        if self._users == 0:
            for s, handler in self._previous.items():
                signal.signal(s, handler)
            self._previous = {}
            self.signal_name = None

    def __enter__(self) -> "StopRequests":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.uninstall()

    def agreed(self) -> bool:
        """Whether any process was asked to stop: all of them must save (a collective)
        together, and they receive the signal at different steps."""
        import jax
        if jax.process_count() == 1:
            return self.requested
        import numpy as np
        from jax.experimental import multihost_utils
        flags = multihost_utils.process_allgather(np.array([self.requested], np.int32))
        return bool(np.any(flags))


STOP = StopRequests()
