"""WORKDIR/config.json: the resolved experiment config a run started with and the command line
that started it (like t5x's config.gin), rewritten at every start so it describes the latest
one. A run made by upcycling also records where its weights came from (`upcycled_from`).
"""

from __future__ import annotations

import json
import shlex
import sys
from typing import Any, Dict, Optional

from etils import epath

FILE = "config.json"


PROVENANCE = ("upcycled_from", "imported_from")


def write(workdir: str, config, **provenance: Optional[Dict[str, Any]]) -> str:
    """Writes WORKDIR/config.json; returns its path. provenance: where the run's first
    checkpoint came from (`upcycled_from` a dense run, `imported_from` a Hugging Face model
    directory), kept from an earlier config.json when not given."""
    path = epath.Path(workdir) / FILE
    before = read(workdir) or {}
    record = {"command": shlex.join([sys.executable] + sys.argv),
              "config": json.loads(config.to_json_best_effort())}
    for key in PROVENANCE:
        value = provenance.get(key) or before.get(key)
        if value:
            record[key] = value
    path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return str(path)


def read(workdir: str) -> Optional[Dict[str, Any]]:
    """WORKDIR/config.json as a dict; None where it is absent or unreadable (older runs)."""
    path = epath.Path(workdir) / FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
