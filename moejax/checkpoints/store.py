"""orbax checkpoints of the whole training state: model, optimizer, data iterator, RNG streams."""

from __future__ import annotations

import errno
import json
import os
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils

from moejax.errors import ConfigError, check, first_line
from moejax.train.logs import is_remote


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def to_saveable(state: nnx.State) -> Dict[str, Any]:
    """Pure nested dict of arrays; typed PRNG keys become their raw uint32 data."""
    pure = nnx.to_pure_dict(state)
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, pure)


def restore_into(node: nnx.Module, saved: Dict[str, Any]) -> None:
    """Writes a to_saveable() dict back into a module or optimizer (re-wrapping PRNG keys)."""
    state = nnx.state(node)
    template = nnx.to_pure_dict(state)
    values = jax.tree.map(lambda t, s: jax.random.wrap_key_data(s) if _is_key(t) else
                          jnp.asarray(s, t.dtype), template, saved)
    nnx.replace_by_pure_dict(state, values)
    nnx.update(node, state)


def gather_process_states(state: Dict[str, Any]) -> list:
    """Every process's data iterator state, in process order (each reads its own documents).

    orbax writes JSON from process 0 only, so the states travel to it as padded byte arrays.
    """
    if jax.process_count() == 1:
        return [state]
    raw = np.frombuffer(json.dumps(state).encode(), np.uint8)
    length = int(np.max(multihost_utils.process_allgather(np.array([raw.size]))))
    padded = np.zeros((length,), np.uint8)
    padded[:raw.size] = raw
    every = np.asarray(multihost_utils.process_allgather(padded)).reshape(-1, length)
    return [json.loads(bytes(row).rstrip(b"\0").decode()) for row in every]


class StderrHeld:
    """Holds what any thread (C++ included) writes to file descriptor 2 while open and passes
    it on at exit unless `drop` is set: a failed orbax write makes its background threads
    print dozens of tracebacks, which the failure's one line replaces."""

    def __enter__(self) -> "StderrHeld":
        self.drop = False
        self.file = tempfile.TemporaryFile()
        sys.stderr.flush()
        self.saved = os.dup(2)
        os.dup2(self.file.fileno(), 2)
        return self

    def __exit__(self, *exc) -> None:
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        if not self.drop:
            self.file.seek(0)
            held = self.file.read()
            if held:
                sys.stderr.write(held.decode("utf-8", "replace"))
                sys.stderr.flush()
        self.file.close()


class CheckpointWriteFailed(RuntimeError):
    """A checkpoint could not be written (disk full, permissions); earlier ones are intact."""


def _disk_full(err: Optional[BaseException]) -> bool:
    """Whether err or an exception it came from says the disk is full (ENOSPC, or
    tensorstore's RESOURCE_EXHAUSTED / "No space left on device")."""
    while err is not None:
        if getattr(err, "errno", None) == errno.ENOSPC or any(
                words in str(err) for words in ("No space left", "RESOURCE_EXHAUSTED")):
            return True
        err = err.__cause__ or err.__context__
    return False


def _name(path) -> str:
    """'model/layers/0/attn/k' for a pytree key path (orbax stores every key as a string)."""
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def checkpoint_directory(workdir: str) -> str:
    """WORKDIR/checkpoints: local paths made absolute (orbax needs that), URLs (gs://) kept."""
    base = str(workdir) if is_remote(workdir) else os.path.abspath(workdir)
    return base.rstrip("/") + "/checkpoints"


def set_aside_after(workdir: str, step: int) -> List[int]:
    """Moves the checkpoints after `step` to WORKDIR/checkpoints_set_aside/ (nothing is
    deleted), so that training resumes from `step`; returns the steps moved. One ConfigError
    line if `step` was never saved."""
    directory = epath.Path(checkpoint_directory(workdir))
    saved = sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if (
        directory.exists()) else []
    check(step in saved, f"train.restore_step={step} is not a saved step in {directory} "
                         f"(saved: {', '.join(map(str, saved)) or 'none'})")
    later = [s for s in saved if s > step]
    aside = directory.parent / "checkpoints_set_aside"
    for s in later:
        aside.mkdir(parents=True, exist_ok=True)
        target = aside / str(s)
        if target.exists():
            target = aside / f"{s}.{time.strftime('%Y%m%d-%H%M%S')}"
        (directory / str(s)).rename(target)
    return later


class Checkpointer:
    """CheckpointManager in WORKDIR/checkpoints keeping the last `keep` steps.

    A context manager: leaving it closes orbax's manager and its background threads.
    """

    def __init__(self, workdir: str, keep: int):
        self.directory = checkpoint_directory(workdir)
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
        self.closed = False

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.manager.close()
            self.closed = True

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def save(self, step: int, model: nnx.Module, optimizer: nnx.Optimizer,
             data_state: Dict[str, Any], config_json: str) -> None:
        """Writes step (orbax writes to a temporary directory and renames it when complete, so
        a failed write leaves the earlier checkpoints as they were); a failed write raises
        CheckpointWriteFailed with one line naming the cause."""
        tree = {"model": to_saveable(nnx.state(model)),
                "optimizer": to_saveable(nnx.state(optimizer))}
        last = self.latest_step()              # complete; a failed write leaves it so
        verbosity = logging.get_verbosity()
        logging.set_verbosity(logging.FATAL)   # orbax logs each failed thread's traceback
        try:
            with StderrHeld() as held:
                try:
                    self.manager.save(step, args=ocp.args.Composite(
                        state=ocp.args.StandardSave(tree),
                        data=ocp.args.JsonSave({"processes": gather_process_states(data_state)}),
                        config=ocp.args.JsonSave({"config": config_json})), force=True)
                    self.manager.wait_until_finished()
                except Exception:    # noqa: BLE001 -- orbax/tensorstore raise many types
                    held.drop = True
                    self.close()     # its threads' tracebacks end here, unseen
                    raise
        except Exception as err:     # noqa: BLE001
            cause = (f"disk full at {self.directory}" if _disk_full(err) else
                     first_line(err))
            raise CheckpointWriteFailed(
                f"checkpoint step {step} could not be written ({cause}); the last complete "
                f"checkpoint is {'step ' + str(last) if last else 'none'}: free space (or fix "
                f"the cause) and rerun the same command to resume from it") from None
        finally:
            logging.set_verbosity(verbosity)

    def _check_shapes(self, step: int, abstract: Dict[str, Any]) -> None:
        """One ConfigError line naming the first parameter whose stored shape differs from
        this config's (or that only one of them has), before orbax starts reading: a failed
        read leaves its background threads printing tracebacks as the process exits."""
        handler = ocp.PyTreeCheckpointHandler()
        try:
            stored = handler.metadata(epath.Path(self.directory) / str(step) / "state")
            stored = getattr(stored, "tree", stored)
            have = {_name(p): tuple(m.shape)
                    for p, m in jax.tree_util.tree_leaves_with_path(stored)}
        except Exception:          # noqa: BLE001 -- unreadable: restore() reports the damage
            return
        finally:
            handler.close()
        want = {_name(p): tuple(a.shape)
                for p, a in jax.tree_util.tree_leaves_with_path(abstract)}
        where = os.path.join(self.directory, str(step))
        for key in sorted(set(want) | set(have)):
            if want.get(key) != have.get(key):
                stored_shape = have.get(key, "absent")
                config_shape = want.get(key, "absent")
                raise ConfigError(
                    f"checkpoint {where} was written with a different model config: "
                    f"{key} is {stored_shape} there but {config_shape} in this config; resume "
                    f"with the config it was written with, or use a new --workdir")

    def restore(self, step: int, model: nnx.Module, optimizer: nnx.Optimizer
                ) -> Tuple[Dict[str, Any], str]:
        """Loads step into model and optimizer; returns (data iterator state, config JSON)."""
        template = {"model": to_saveable(nnx.state(model)),
                    "optimizer": to_saveable(nnx.state(optimizer))}
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        self._check_shapes(step, abstract)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore(),
                config=ocp.args.JsonRestore()))
        except Exception as err:   # orbax raises many types for missing/corrupt/mismatched files
            earlier = [s for s in self.manager.all_steps() if s < step]
            how = (f"resume from step {max(earlier)} with --config.train.restore_step="
                   f"{max(earlier)} (later checkpoints are moved aside, not deleted)" if earlier
                   else "no earlier checkpoint exists")
            raise ConfigError(
                f"checkpoint {os.path.join(self.directory, str(step))} cannot be restored "
                f"({first_line(err)}): it is damaged or was written with a "
                f"different model config; use a new --workdir, or {how}") from err
        states = restored.data.get("processes", [restored.data])  # written by one process
        if len(states) != jax.process_count():
            raise ConfigError(
                f"checkpoint {os.path.join(self.directory, str(step))} was written by "
                f"{len(states)} processes but {jax.process_count()} are running; the data "
                f"iterators cannot be resumed (start a new --workdir or use {len(states)})")
        restore_into(model, restored.state["model"])
        restore_into(optimizer, restored.state["optimizer"])
        return states[jax.process_index()], restored.config["config"]
