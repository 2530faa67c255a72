"""Read-only access to a workdir's checkpoints: steps, stored config, array metadata.

Nothing here restores an array: shapes, dtypes and shardings come from the metadata orbax
writes next to the arrays, the config and data iterator state from their small JSON items
(WORKDIR/checkpoints/<step>/{state,data,config}, moejax.checkpoints.store.Checkpointer).
"""

from __future__ import annotations

import json
from typing import Any

import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from moejax.checkpoints.store import checkpoint_directory
from moejax.errors import ConfigError, check, first_line


def steps(workdir: str) -> list[int]:
    """The finalized checkpoint steps in WORKDIR/checkpoints, ascending ([] if none)."""
    directory = epath.Path(checkpoint_directory(workdir))
    if not directory.exists():
        return []
    return sorted(ocp.utils.checkpoint_steps(directory))


def choose_step(workdir: str, step: int | None = None) -> int:
    """`step` if WORKDIR has it, else the latest; one ConfigError line if there is none."""
    present = steps(workdir)
    directory = checkpoint_directory(workdir)
    check(bool(present), f"no checkpoints in {directory}")
    if step is None:
        return present[-1]
    check(step in present, f"step {step} is not in {directory} (steps: "
                           f"{', '.join(str(s) for s in present)})")
    return step


def step_path(workdir: str, step: int) -> epath.Path:
    return epath.Path(checkpoint_directory(workdir)) / str(step)


def _read_json(workdir: str, step: int, item: str) -> Any:
    path = step_path(workdir, step) / item
    try:
        return ocp.JsonCheckpointHandler().restore(path)
    except Exception as err:   # orbax raises many types for missing/corrupt files
        raise ConfigError(f"checkpoint {path} cannot be read ({first_line(err)}): it is "
                          "damaged or was not written by moejax") from err


def read_config_json(workdir: str, step: int) -> str:
    """The experiment config the checkpoint was written with, as JSON text."""
    stored = _read_json(workdir, step, "config")
    check(isinstance(stored, dict) and isinstance(stored.get("config"), str),
          f"checkpoint {step_path(workdir, step)}/config holds no moejax config")
    return stored["config"]


def read_config(workdir: str, step: int) -> ml_collections.ConfigDict:
    """The stored config as a ConfigDict (None fields stay None, tuples become lists)."""
    return ml_collections.ConfigDict(json.loads(read_config_json(workdir, step)))


def read_data_state(workdir: str, step: int) -> list[dict[str, Any]]:
    """Every process's data iterator state at `step`, in process order."""
    stored = _read_json(workdir, step, "data")
    return stored.get("processes", [stored]) if isinstance(stored, dict) else [stored]


def array_metadata(workdir: str, step: int) -> dict[str, Any]:
    """{'model': tree, 'optimizer': tree} of orbax ArrayMetadata (shape, dtype, sharding)."""
    path = step_path(workdir, step) / "state"
    try:
        metadata = ocp.StandardCheckpointHandler().metadata(path)
        tree = metadata.tree if hasattr(metadata, "tree") else metadata
    except Exception as err:   # orbax raises many types for missing/corrupt files
        raise ConfigError(f"checkpoint {path} cannot be read ({first_line(err)}): it is "
                          "damaged or was not written by moejax") from err
    check(isinstance(tree, dict) and "model" in tree,
          f"checkpoint {path} holds no model parameters (not written by moejax)")
    return dict(tree)


def describe_sharding(metadata) -> tuple[str | None, str | None]:
    """(partition, mesh) of an array's recorded sharding, e.g. ("P(None, 'expert', None)",
    'data=2 fsdp=1 expert=4 model=1'); ('replicated', mesh) when no axis is split, ('one
    device', None) for a single-device array, (None, None) when nothing is recorded."""
    sharding = getattr(metadata, "sharding", None)
    if sharding is None:
        return None, None
    spec = getattr(sharding, "partition_spec", None)
    if spec is not None:                                      # NamedShardingMetadata
        names = list(getattr(sharding, "axis_names", None) or ())
        sizes = [int(n) for n in getattr(sharding, "shape", ())]
        mesh = " ".join(f"{a}={n}" for a, n in zip(names, sizes)) or None
        split = any(axis is not None for axis in spec)
        return (f"P{tuple(spec)}" if split else "replicated"), mesh
    if type(sharding).__name__.startswith("SingleDevice"):
        return "one device", None
    return type(sharding).__name__.replace("ShardingMetadata", ""), None
