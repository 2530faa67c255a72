r"""Total and active parameters of a config, by part, from shapes alone (nothing allocated).

    python -m experiments.params --config=configs/open/mixtral.py:8x7b [--config.* ...] \
        [--json=PATH]
    python -m experiments.params --all [--json=PATH]     # every model in configs/open

The model is traced with jax.eval_shape, so a trillion-parameter config takes seconds. Counts
follow the model cards (moejax/models/param_count.py): embeddings and output head included;
active = all but the routed experts a token does not visit. A config in configs/open/ also
prints its published figures (the file's PUBLISHED table) and our difference from them,
marked ✓ where they agree at the published figure's precision (within 0.5%, or the same
number when ours is rounded or truncated to its digits: '37B' is stated for 37.55B).
"""

from __future__ import annotations

import glob
import os
import sys
import time
from typing import Dict, List, Optional

from absl import flags
from ml_collections import config_flags

from configs.open.architecture import agrees, figure
from experiments import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<family>.py:<size>",
                                          lock_config=True)
_ALL = flags.DEFINE_bool("all", False, "A Markdown table of every model in configs/open "
                                       "(ours, published, difference) instead of one config.")
_JSON = flags.DEFINE_string("json", None, "Also write the figures to this JSON file.")
OPEN_CONFIGS = "configs/open"


def human(x: Optional[float]) -> str:
    """46.70e9 -> '46.70B' (four significant figures at most); None -> '-'."""
    if x is None:
        return "-"
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.4g}{unit}"
    return f"{x:.0f}"


def difference(ours: Optional[float], published: Optional[str]) -> str:
    """Our count against a published figure ('46.7B'): the relative difference, and ✓ where
    they agree at the figure's precision (configs/open/architecture.py: agrees)."""
    if ours is None or published is None:
        return "-"
    value, _ = figure(published)
    mark = " ✓" if agrees(ours, published) else " ✗"
    return f"{100 * (ours / value - 1):+.2f}%{mark}"


def count(config) -> Dict[str, Dict[str, Optional[float]]]:
    """{part: {'total', 'active'}} of a ConfigDict's model (shapes only)."""
    from flax import nnx

    from moejax.models import init_model
    from moejax.models.param_count import count_by_part
    from moejax.train.config import resolve
    from moejax.train.state_memory import vocab_size
    model_cfg = resolve(config, vocab_size(config))
    model = nnx.eval_shape(lambda: init_model(model_cfg, 0))
    return {part: {"total": total, "active": active}
            for part, (total, active) in count_by_part(model, model_cfg).items()}


def published_of(config_name: str):
    """The PUBLISHED entry of 'configs/open/<file>.py:<model>' (None if it has none)."""
    from experiments.config_files import load_module
    path, _, size = config_name.partition(":")
    if not os.path.exists(path):
        return None
    table = getattr(load_module(path), "PUBLISHED", {})
    return table.get(size)


def report(config_name: str, counts, published, seconds: float) -> str:
    lines = [f"{config_name}  (from shapes, nothing allocated; {seconds:.1f} s)",
             f"{'':16s}{'total':>12s}{'active':>12s}"]
    for part, c in counts.items():
        if part != "all" and c["total"] == 0:
            continue
        name = "all" if part == "all" else part
        lines.append(f"{name:16s}{human(c['total']):>12s}{human(c['active']):>12s}")
    if published is not None:
        ours = counts["all"]
        lines.append(f"{'published':16s}{published.total:>12s}"
                     f"{published.active or '-':>12s}   {published.source}")
        lines.append(f"{'difference':16s}{difference(ours['total'], published.total):>12s}"
                     f"{difference(ours['active'], published.active):>12s}"
                     + (f"   ({published.note})" if published.note else ""))
    lines.append("active: all parameters but the routed experts a token does not visit "
                 "(embeddings and head included)")
    return "\n".join(lines)


def open_models() -> List[str]:
    """'configs/open/<file>.py:<model>' for every published model, in file order."""
    from experiments.config_files import load_module
    names = []
    for path in sorted(glob.glob(os.path.join(OPEN_CONFIGS, "*.py"))):
        models = getattr(load_module(path), "MODELS", None)
        names += [f"{path}:{model}" for model in (models or {})]
    return names


def table(rows) -> str:
    """The Markdown table of --all: one row per model."""
    lines = ["| config | total | published | diff | active | published | diff |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, counts, published in rows:
        ours = counts["all"]
        p_total = published.total if published else None
        p_active = published.active if published else None
        lines.append(f"| `{name}` | {human(ours['total'])} | {p_total or '-'} | "
                     f"{difference(ours['total'], p_total)} | {human(ours['active'])} | "
                     f"{p_active or '-'} | {difference(ours['active'], p_active)} |")
    return "\n".join(lines)


def main(argv):
    del argv
    from experiments.config_files import load
    from moejax.errors import check
    if _ALL.value:
        rows, figures = [], {}
        for name in open_models():
            path, _, size = name.partition(":")
            print(f"counting {name}", file=sys.stderr, flush=True)
            counts = count(load(path, size))
            rows.append((name, counts, published_of(name)))
            figures[name] = counts
        print(table(rows))
    else:
        check(_CONFIG.value is not None, "give --config=configs/<family>.py:<size> or --all")
        name = flags.FLAGS["config"].config_filename
        start = time.perf_counter()
        figures = count(_CONFIG.value)
        print(report(name, figures, published_of(name), time.perf_counter() - start))
    cli.write_json(_JSON.value, figures)


if __name__ == "__main__":
    cli.run(main)
