"""PNG plots of a training run from its metrics.jsonl: loss curves and expert load per layer."""

from __future__ import annotations

import io
from typing import List, Optional, Sequence

import numpy as np
from etils import epath

from moejax.train.logs import read_log


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_run(workdir: str, layer_names: Optional[Sequence[str]] = None) -> List[str]:
    """Writes WORKDIR/plots/loss.png and expert_load.png (if the model has MoE layers).

    layer_names: the MoE layers' names ('decoder layer 1', ...; models.config.moe_layer_names)
    for the panels (default 'MoE layer i')."""
    plt = _pyplot()
    records = read_log(workdir)
    out = epath.Path(workdir) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    written = [_save(_loss_figure(plt, records, str(workdir)), out / "loss.png")]
    rows = [r for r in records if r["split"] == "train" and "moe/tokens_per_expert" in r]
    if rows:
        load = np.asarray([r["moe/tokens_per_expert"] for r in rows])    # [T, layers, E]
        names = list(layer_names or [])
        names += [f"MoE layer {i}" for i in range(len(names), load.shape[1])]
        written.append(_save(_load_figure(plt, load, [r["step"] for r in rows], names),
                             out / "expert_load.png"))
    return written


def _loss_figure(plt, records, title: str):
    """Train and eval cross-entropy against steps, the y axis zoomed past the first tenth of
    training (the step-0 evaluation, ~ln V nats, would otherwise flatten the curve)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    shown = []
    for split in ("train", "eval"):
        rows = [r for r in records if r["split"] == split and "cross_entropy" in r]
        if rows:
            steps, losses = [r["step"] for r in rows], [r["cross_entropy"] for r in rows]
            ax.plot(steps, losses, marker="o" if split == "eval" else None,
                    label=f"{split} cross_entropy")
            shown += list(zip(steps, losses))
    finite = [(s, v) for s, v in shown if np.isfinite(v)]
    if finite:
        last = max(s for s, _ in finite)
        late = [v for s, v in finite if s >= 0.1 * last and s > 0] or [v for _, v in finite]
        low, high = min(late), max(late)
        pad = 0.05 * (high - low) or 0.05
        ax.set_ylim(low - pad, high + pad)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title.rstrip("/").rsplit("/", 1)[-1])
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def _load_figure(plt, load: np.ndarray, steps: List[int], names: Sequence[str]):
    """Tokens per expert relative to uniform (fraction · E; 1 = balanced), one panel per MoE
    layer on one shared colour scale: a heat map over steps, or bars for a single record."""
    relative = load * load.shape[2]                                     # [T, layers, E]
    num_layers = load.shape[1]
    fig, axes = plt.subplots(num_layers, 1, figsize=(7, 1.2 + 1.6 * num_layers),
                             squeeze=False, layout="constrained")
    top = max(float(relative.max()), 1.0)
    for layer in range(num_layers):
        ax = axes[layer, 0]
        if len(steps) < 2:
            ax.bar(np.arange(load.shape[2]), relative[0, layer])
            ax.axhline(1.0, color="gray", lw=0.8)
            ax.set_ylim(0, top * 1.05)
            ax.set_ylabel(f"{names[layer]}\nload / uniform")
            continue
        image = ax.imshow(relative[:, layer].T, aspect="auto", cmap="viridis", origin="lower",
                          vmin=0.0, vmax=top,
                          extent=(steps[0], steps[-1], -0.5, load.shape[2] - 0.5))
        ax.set_ylabel(f"{names[layer]}\nexpert")
    if len(steps) < 2:
        axes[-1, 0].set_xlabel(f"expert (step {steps[0]})")
    else:
        axes[-1, 0].set_xlabel("step")
        fig.colorbar(image, ax=axes[:, 0].tolist(), label="tokens / uniform share")
    fig.suptitle("tokens per expert, relative to a uniform share")
    return fig


def _save(fig, path: epath.Path) -> str:
    """PNG bytes to a local path or a URL (gs://...)."""
    if not fig.get_layout_engine():             # constrained layouts (a shared colour bar) are set
        fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    _pyplot().close(fig)
    path.write_bytes(buffer.getvalue())
    return str(path)
