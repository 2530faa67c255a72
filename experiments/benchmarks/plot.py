"""The layer suite as a picture: each variant's time against its baseline, one panel per
section, with the issue's targets drawn as dashed lines."""

from __future__ import annotations

from typing import Dict, List

from experiments.benchmarks.table import Table

# (section, target ratio, what it is): the targets of docs/PERFORMANCE.md.
TARGETS = {"routing": (1.35, "target 1.35× dense"), "experts": (1.5, "target 1.5× E=8"),
           "tokens": (4.4, "target 4.4× at 4× tokens")}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def layer_chart(table: Table, path: str) -> str:
    """Horizontal bars of the ratio column, one panel per section; writes a PNG to path."""
    plt = _pyplot()
    sections: Dict[str, List[dict]] = {}
    for row in table.rows:
        sections.setdefault(row["section"], []).append(row)
    heights = [max(1.5, 0.28 * len(rows) + 0.8) for rows in sections.values()]
    fig, axes = plt.subplots(len(sections), 1, figsize=(8, sum(heights)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (section, rows) in zip(axes[:, 0], sections.items()):
        labels = [_label(section, r) for r in rows]
        ratios = [r["ratio"] for r in rows]
        ax.barh(range(len(rows)), ratios, color="#4c72b0")
        ax.set_yticks(range(len(rows)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.axvline(1.0, color="black", linewidth=0.8)
        if section in TARGETS:
            target, text = TARGETS[section]
            ax.axvline(target, color="#c44e52", linestyle="--", linewidth=1, label=text)
            ax.legend(loc="best", fontsize=8)
        ax.set_xlim(0, max(ratios + [TARGETS.get(section, (1.0,))[0]]) * 1.12)
        for i, ratio in enumerate(ratios):
            ax.text(ratio, i, f" {ratio:.2f}", va="center", fontsize=7)
        ax.set_title(f"{section}: time / {rows[0]['baseline'].split(' ')[0]} baseline",
                     fontsize=9, loc="left")
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("ratio (median time / baseline median time, measured side by side)")
    fig.suptitle(table.title, fontsize=8, wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _label(section: str, row: dict) -> str:
    if section == "tokens":
        return f"{row['variant']}, T={row['tokens']}"
    return f"{row['variant']}, E={row['E']}"
