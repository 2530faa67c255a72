"""Where training metrics go: a JSONL log, TensorBoard event files and a progress line.

The workdir may be local or a URL (gs://bucket/run; needs the [gcs] extra): files go through
etils.epath, and only process 0 of a multi-host run writes them.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, Mapping, Optional, Sequence

import jax
import numpy as np
from etils import epath


def is_remote(workdir: str) -> bool:
    """True for URLs (gs://, s3://, ...): object stores, which cannot append to a file."""
    return "://" in str(workdir)


def to_python(value: Any) -> Any:
    """NumPy/JAX arrays -> floats or nested lists for JSON."""
    arr = np.asarray(value)
    return arr.item() if arr.ndim == 0 else arr.tolist()


class MetricsLog:
    """Appends {'step', 'split', ...} records to WORKDIR/metrics.jsonl and TensorBoard.

    On resume from step s, records after s (written before an interruption, about to be
    recomputed) are dropped so the log holds each step once.
    """

    def __init__(self, workdir: str, resume_step: int = 0, layer_names: Sequence[str] = (),
                 extra=None):
        """layer_names: the MoE layers in the order of their stats ('decoder layer 1', ...;
        models.config.moe_layer_names), which name their TensorBoard tags. extra: another
        writer with log(record) and close() (wandb_log.WandbWriter), or None."""
        self.extra = extra
        self.tags = [name.replace(" ", "_") for name in layer_names]
        self.path = epath.Path(workdir) / "metrics.jsonl"
        self.remote = is_remote(workdir)
        self.lines = []
        if self.path.exists():
            self.lines = [] if resume_step == 0 else [
                line for line in _complete_lines(self.path)
                if json.loads(line)["step"] <= resume_step]
        self.path.write_text("".join(self.lines), encoding="utf-8")
        from tensorboardX import SummaryWriter   # imported here: optional for library users
        self.tb = SummaryWriter(str(epath.Path(workdir) / "tensorboard"))

    def write(self, step: int, split: str, metrics: Mapping[str, Any]) -> Dict[str, Any]:
        record = {"step": int(step), "split": split,
                  **{k: to_python(v) for k, v in metrics.items()}}
        if self.extra is not None:
            self.extra.log(record)
        line = json.dumps(record) + "\n"
        self.lines.append(line)
        if self.remote:                          # object stores rewrite instead of appending
            self.path.write_text("".join(self.lines), encoding="utf-8")
        else:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line)
        for key, value in record.items():
            if key in ("step", "split"):
                continue
            arr = np.asarray(value, dtype=np.float64)
            if arr.ndim == 0:
                self.tb.add_scalar(f"{split}/{key}", float(arr), step)
            elif arr.ndim == 1:                    # one value per MoE layer
                for layer, v in enumerate(arr):
                    self.tb.add_scalar(f"{split}/{key}/{self._layer(layer)}", float(v), step)
            elif arr.ndim == 2:                    # per MoE layer, per expert: the load
                for layer, row in enumerate(arr):
                    self.tb.add_histogram(f"{split}/{key}/{self._layer(layer)}", row, step)
        self.tb.flush()
        return record

    def _layer(self, index: int) -> str:
        return self.tags[index] if index < len(self.tags) else f"layer_{index}"

    def text(self, tag: str, text: str) -> None:
        """A text entry in TensorBoard's Text tab (the run's header and config)."""
        self.tb.add_text(tag, text, 0)
        self.tb.flush()

    def last(self, key: str, default: Any = None) -> Any:
        """The value of key in the latest record that has it (e.g. after a resume)."""
        for line in reversed(self.lines):
            record = json.loads(line)
            if key in record:
                return record[key]
        return default

    def close(self) -> None:
        self.tb.close()
        if self.extra is not None:
            self.extra.close()


class NoLog:
    """What processes other than 0 use instead of a MetricsLog: the files have one writer."""

    def write(self, step: int, split: str, metrics: Mapping[str, Any]) -> None:
        pass

    def text(self, tag: str, text: str) -> None:
        pass

    def last(self, key: str, default: Any = None) -> Any:
        return default

    def close(self) -> None:
        pass


def _is_record(value) -> bool:
    return (isinstance(value, dict) and isinstance(value.get("step"), int)
            and isinstance(value.get("split"), str))


def _complete_lines(path):
    """The lines of a JSONL metrics file that are records. A run killed mid-write leaves a
    partial last line, skipped silently; any other line that is not UTF-8 JSON of a record
    ({"step": int, "split": str, ...}) is skipped with one warning: a damaged log never stops
    a run."""
    damaged, partial = 0, False
    with epath.Path(path).open("rb") as f:
        for raw in f:
            partial = not raw.endswith(b"\n")
            try:
                line = raw.decode("utf-8")
                good = _is_record(json.loads(line))
            except ValueError:                      # also UnicodeDecodeError
                good = False
            if good:
                yield line if line.endswith("\n") else line + "\n"
            elif not partial:
                damaged += 1
    if damaged:
        print(f"warning: skipped {damaged} damaged line{'s' * (damaged > 1)} of {path} "
              f"(not UTF-8 JSON records)", file=sys.stderr)


def read_log(workdir: str):
    """The records of WORKDIR/metrics.jsonl, in order."""
    return [json.loads(line) for line in _complete_lines(epath.Path(workdir) / "metrics.jsonl")]


class Progress:
    """step 120/1000 | loss 3.412 | 4.1 steps/s | 8.4k tokens/s | ETA 3m34s."""

    def __init__(self, total_steps: int, tokens_per_step: int):
        self.total = total_steps
        self.tokens_per_step = tokens_per_step

    def line(self, step: int, loss: float, step_seconds: Optional[float] = None) -> str:
        """step_seconds: the recent mean time of a train step alone (throughput.StepTimer:
        no compilation, evaluation or checkpoint in it); None before one was timed, when the
        rate shows as '?'."""
        if not step_seconds:
            return f"step {step}/{self.total} | loss {loss:.4f} | ? steps/s | ETA ?"
        rate = 1.0 / step_seconds
        eta = (self.total - step) * step_seconds
        tokens = rate * self.tokens_per_step
        return (f"step {step}/{self.total} | loss {loss:.4f} | {rate:.2f} steps/s | "
                f"{tokens / 1000:.1f}k tokens/s | ETA {_duration(eta)}")

    @staticmethod
    def show(text: str) -> None:
        """Prints on process 0 only (every host runs the same loop)."""
        if jax.process_index() == 0:
            print(text, file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
