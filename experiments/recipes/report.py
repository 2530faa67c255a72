"""The Markdown report and PNG plots of a comparison (compare and every reproduction recipe).

    DIR/report.md                the table below, the target loss, plots, the command
    DIR/loss_vs_steps.png        validation loss of every arm against training steps
    DIR/loss_vs_time.png         the same against training seconds (compilation not counted)
    DIR/expert_load.png          tokens per expert in each MoE layer, relative to uniform
"""

from __future__ import annotations

import csv
import os
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from experiments.recipes.summary import Summary

NA = "n/a"


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def fmt(value: Optional[float], spec: str = ".3f", std: Optional[float] = None,
        missing: str = NA) -> str:
    if value is None or not np.isfinite(value):
        return missing
    text = format(value, spec)
    return f"{text} ± {format(std, spec)}" if std is not None else text


def _thousands(value: Optional[float]) -> str:
    return NA if value is None else f"{value / 1000:.1f}k"


# (header, cell(summary, target)) of the standard table; MoE-only columns say n/a for dense
# models, and a target nobody reached says "not reached".
Column = Tuple[str, Callable[[Summary, Optional[float]], str]]


def _moe(field: str, spec: str) -> Callable[[Summary, Optional[float]], str]:
    def cell(s: Summary, target):
        return fmt(s.mean(field), spec, s.std(field)) if s.has_moe else f"{NA} (dense)"
    return cell


def _steps(s: Summary, target) -> str:
    if not s.stable:
        return "diverged"
    steps = None if target is None else s.steps_to(target)
    return "not reached" if steps is None else f"{steps:.0f}"


def _tokens(s: Summary, target) -> str:
    steps = None if target is None else s.steps_to(target)
    return "not reached" if steps is None else _thousands(steps * s.tokens_per_step)


STANDARD_COLUMNS: List[Column] = [
    ("stable runs", lambda s, t: f"{len(s.stable)}/{len(s.seeds)}"),
    ("final val loss", lambda s, t: fmt(s.mean("final_loss"), ".4f", s.std("final_loss"),
                                        missing="diverged")),
    ("steps to target", _steps),
    ("tokens to target", _tokens),
    ("tokens/s", lambda s, t: fmt(s.mean("tokens_per_second"), ".0f",
                                  s.std("tokens_per_second"))),
    ("dropped fraction", _moe("dropped_fraction", ".4f")),
    ("load CV", _moe("load_cv", ".3f")),
    ("max violation", _moe("max_violation", ".3f")),
    ("router entropy / ln E", _moe("router_entropy", ".3f")),
    ("encoder information", lambda s, t: _encoder_information(s)),
]


def _encoder_information(s: Summary) -> str:
    """Nats per target token read from the encoder (last evaluation), for runs that log it."""
    value = s.mean("encoder_information")
    if value is not None:
        return fmt(value, ".3f", s.std("encoder_information"))
    return "not logged" if s.seeds and s.seeds[0].encoder_decoder else f"{NA} (decoder-only)"


def table(summaries: Sequence[Summary], target: Optional[float],
          columns: Sequence[Column] = tuple(STANDARD_COLUMNS)) -> str:
    """A Markdown table, one row per arm."""
    head = ["config"] + [h for h, _ in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summaries:
        lines.append("| " + " | ".join([s.label] + [cell(s, target) for _, cell in columns])
                     + " |")
    return "\n".join(lines)


def plot_losses(summaries: Sequence[Summary], directory: str, target: Optional[float],
                title: str) -> List[str]:
    """loss_vs_steps.png and loss_vs_time.png: every seed of every arm, one colour per arm."""
    plt = _pyplot()
    written = []
    for name, xlabel, x_of in (
            ("loss_vs_steps.png", "training step", lambda r, steps: steps),
            ("loss_vs_time.png", "training seconds (compilation excluded)",
             lambda r, steps: [r.seconds_at(s) for s in steps])):
        fig, ax = plt.subplots(figsize=(7.5, 4.5))
        for i, s in enumerate(summaries):
            color = f"C{i % 10}"
            for j, run in enumerate(s.seeds):
                if not run.eval_curve:
                    continue
                steps, losses = zip(*run.eval_curve)
                ax.plot(x_of(run, steps), losses, color=color, marker=".",
                        alpha=1.0 if j == 0 else 0.5, linestyle="--" if run.diverged else "-",
                        label=s.label if j == 0 else None)
        if target is not None:
            ax.axhline(target, color="gray", linewidth=0.8, linestyle=":",
                       label=f"target {target:.3f}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation cross-entropy (nats/token)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        _zoom(ax, summaries)
        ax.legend(fontsize=7, ncol=2)
        written.append(_save(fig, os.path.join(directory, name)))
    return written


def _zoom(ax, summaries: Sequence[Summary]) -> None:
    """Skips the first evaluations' high losses so the differences at the end show; every
    seed's lowest loss stays in view."""
    lows = [min(loss for _, loss in run.eval_curve)
            for s in summaries for run in s.stable if run.eval_curve]
    starts = [run.eval_curve[min(1, len(run.eval_curve) - 1)][1]
              for s in summaries for run in s.stable if run.eval_curve]
    if lows and starts:
        low, high = min(lows), max(starts)
        if high > low:
            ax.set_ylim(low - 0.05 * (high - low), high)


def plot_expert_load(summaries: Sequence[Summary], directory: str) -> Optional[str]:
    """expert_load.png: one panel per MoE arm, load [MoE layer, expert] × E (1 = uniform)."""
    moe = [(s.label, s.stable[0].expert_load) for s in summaries
           if s.stable and s.stable[0].expert_load is not None]
    if not moe:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(moe), 1, figsize=(7.5, 0.8 + 1.1 * len(moe)), squeeze=False)
    for ax, (label, load) in zip(axes[:, 0], moe):
        relative = np.atleast_2d(load) * load.shape[-1]          # [layers, E], 1 = uniform
        image = ax.imshow(relative, aspect="auto", cmap="coolwarm", vmin=0.0, vmax=2.0,
                          interpolation="nearest")
        ax.set_yticks(range(relative.shape[0]))
        ax.set_ylabel("layer", fontsize=7)
        ax.set_title(label, fontsize=8, loc="left")
        ax.tick_params(labelsize=6)
        fig.colorbar(image, ax=ax, pad=0.01)
    axes[-1, 0].set_xlabel("expert (colour: load / uniform load, second half of training)")
    return _save(fig, os.path.join(directory, "expert_load.png"))


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


DEFAULT_TARGET_NOTE = ("the worst final validation loss of any stable run, which every one of "
                       "them reached")


def write_report(directory: str, title: str, summaries: Sequence[Summary],
                 target: Optional[float], command: str, intro: str = "",
                 sections: Sequence[str] = (), target_note: str = DEFAULT_TARGET_NOTE,
                 filename: str = "report.md") -> str:
    """DIR/report.md (or DIR/filename) with the table, plots and any recipe-specific
    sections; returns its path."""
    plots = plot_losses(summaries, directory, target, title)
    load = plot_expert_load(summaries, directory)
    images = [os.path.basename(p) for p in plots + ([load] if load else [])]
    target_line = (f"Target loss {target:.4f}: {target_note}." if target is not None
                   else "No target loss: no arm finished.")
    parts = [f"# {title}", intro, f"Command: `{command}`", target_line,
             table(summaries, target), *sections,
             *[f"![{name}]({name})" for name in images]]
    path = os.path.join(directory, filename)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n\n".join(p for p in parts if p) + "\n")
    return path


def write_csv(summaries: Sequence[Summary], target: Optional[float], path: str) -> str:
    """The Markdown table's cells as CSV (the same columns and formatting)."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run"] + [h for h, _ in STANDARD_COLUMNS])
        for s in summaries:
            writer.writerow([s.label] + [cell(s, target) for _, cell in STANDARD_COLUMNS])
    return path
