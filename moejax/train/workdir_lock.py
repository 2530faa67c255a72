"""One training run per workdir: WORKDIR/.lock names the host and process that holds it.

Two runs on one workdir would both append to metrics.jsonl and overwrite each other's
checkpoints. The lock is a file created atomically (O_CREAT | O_EXCL) holding
{"host", "pid", "started"}; a second run refuses with one line naming the holder. A lock left
by a process that died (kill -9, a crashed machine) on this host is taken over; one held by
another host cannot be checked from here, and the message says how to clear it. Object-store
workdirs (gs://) have no atomic create, so they are not locked; only process 0 of a
multi-host run takes the lock.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Optional

from moejax.errors import ConfigError

LOCK_NAME = ".lock"


class WorkdirBusy(ConfigError):
    """Another live run holds the workdir."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:                  # someone else's process: alive
        return True
    return True


def _read(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            holder = json.load(f)
        return holder if isinstance(holder, dict) else None
    except (OSError, ValueError):
        return None                           # vanished, or half-written / damaged


def _create(path: str) -> bool:
    """Creates the lock file with our identity; False if it already exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"host": socket.gethostname(), "pid": os.getpid(),
                   "started": time.strftime("%Y-%m-%d %H:%M:%S")}, f)
    return True


class WorkdirLock:
    """Context manager holding WORKDIR/.lock for this process (see the module docstring)."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.path = os.path.join(os.path.abspath(workdir), LOCK_NAME)
        self.enabled = enabled
        self.held = False
        self.stale: Optional[dict] = None      # the dead holder we took over from, if any

    def __enter__(self) -> "WorkdirLock":
        if self.enabled:
            self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        for _ in range(3):                     # lost a race for a stale lock: look again
            if _create(self.path):
                self.held = True
                return
            holder = _read(self.path)
            if holder is None:                 # unreadable: a writer died mid-write, or racing
                time.sleep(0.2)
                holder = _read(self.path)
                if holder is None:
                    self._remove_stale({"pid": "?", "host": "?"})
                    continue
            here = holder.get("host") == socket.gethostname()
            pid = holder.get("pid")
            if here and isinstance(pid, int) and not _alive(pid):
                self._remove_stale(holder)
                continue
            where = (f"process {pid} on host {holder.get('host')} (since "
                     f"{holder.get('started', '?')})")
            advice = ("wait for it to finish or stop it (kill -TERM saves and exits)" if here
                      else f"if that run is dead, delete {self.path}")
            raise WorkdirBusy(f"workdir {os.path.dirname(self.path)} is in use by {where}; "
                              f"{advice}, or use another --workdir")
        raise WorkdirBusy(f"could not take the lock {self.path}: other runs keep taking it")

    def _remove_stale(self, holder: dict) -> None:
        self.stale = holder
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass

    def release(self) -> None:
        if self.held:
            holder = _read(self.path)
            if holder and holder.get("pid") == os.getpid():
                os.remove(self.path)
            self.held = False
