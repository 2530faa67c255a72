"""A benchmark's result: a titled table of rows, printed aligned and written as JSON."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Sequence, Tuple


@dataclasses.dataclass
class Table:
    """title: one line saying what was measured, on what; columns: (key, header, format)."""
    title: str
    columns: Sequence[Tuple[str, str, str]]
    rows: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    notes: List[str] = dataclasses.field(default_factory=list)

    def add(self, **row) -> Dict[str, Any]:
        self.rows.append(row)
        return row

    def format(self) -> str:
        """Markdown table (readable in a terminal too), notes below it."""
        cells = [[_cell(row.get(key), fmt) for key, _, fmt in self.columns] for row in self.rows]
        headers = [header for _, header, _ in self.columns]
        widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(headers)]
        line = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"
        out = [self.title, "", line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        out += [line(c) for c in cells]
        out += [""] + [f"- {n}" for n in self.notes] if self.notes else []
        return "\n".join(out)

    def to_json(self) -> Dict[str, Any]:
        return {"title": self.title, "rows": self.rows, "notes": self.notes}


def _cell(value, fmt: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    return format(value, fmt)
