"""PNG plots of a training run from its metrics.jsonl: loss curves and expert load per layer."""

from __future__ import annotations

import io
from typing import List

import numpy as np
from etils import epath

from moejax.train.logs import read_log


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_run(workdir: str) -> List[str]:
    """Writes WORKDIR/plots/loss.png and expert_load.png (if the model has MoE layers)."""
    plt = _pyplot()
    records = read_log(workdir)
    out = epath.Path(workdir) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    written = []

    fig, ax = plt.subplots(figsize=(7, 4))
    for split, key in (("train", "cross_entropy"), ("eval", "cross_entropy")):
        rows = [r for r in records if r["split"] == split and key in r]
        if rows:
            ax.plot([r["step"] for r in rows], [r[key] for r in rows],
                    marker="o" if split == "eval" else None, label=f"{split} {key}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(str(workdir).rstrip("/").rsplit("/", 1)[-1])
    ax.grid(alpha=0.3)
    ax.legend()
    written.append(_save(fig, out / "loss.png"))

    rows = [r for r in records if r["split"] == "train" and "moe/tokens_per_expert" in r]
    if rows:
        load = np.asarray([r["moe/tokens_per_expert"] for r in rows])    # [T, layers, E]
        steps = [r["step"] for r in rows]
        first, last = (steps[0], steps[-1]) if steps[-1] > steps[0] else (steps[0] - 0.5,
                                                                          steps[0] + 0.5)
        num_layers = load.shape[1]
        fig, axes = plt.subplots(num_layers, 1, figsize=(7, 1.2 + 1.6 * num_layers),
                                 squeeze=False)
        for layer in range(num_layers):
            ax = axes[layer, 0]
            image = ax.imshow(load[:, layer].T, aspect="auto", cmap="viridis", origin="lower",
                              extent=(first, last, -0.5, load.shape[2] - 0.5))
            ax.set_ylabel(f"MoE layer {layer}\nexpert")
            fig.colorbar(image, ax=ax, label="fraction of tokens")
        axes[-1, 0].set_xlabel("step")
        fig.suptitle("tokens per expert")
        written.append(_save(fig, out / "expert_load.png"))
    return written


def _save(fig, path: epath.Path) -> str:
    """PNG bytes to a local path or a URL (gs://...)."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    _pyplot().close(fig)
    path.write_bytes(buffer.getvalue())
    return str(path)
