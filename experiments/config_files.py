"""The one way a config file becomes a ConfigDict: train's error checks, compare, reproduce,
bench and their tests all load configs here.

A config is named by family (`switch` is configs/switch.py) or by path, and built by its
`get_config(size)`; dotted overrides are then set with the field's own type (an int given to
a float field becomes a float; a wrong type or an unknown field is one ConfigError). The absl
`--config` flag of train, upcycle, aot and memory loads the same file the same way
(ml_collections executes it and calls get_config); experiments/cli.py reloads it here to name
a mistyped `--config.<field>` in one line.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from typing import Any, Mapping, Optional

import ml_collections

from moejax.errors import ConfigError, check


def config_path(name: str) -> str:
    """'switch' -> 'configs/switch.py'; a path ending in .py stays as it is."""
    return name if name.endswith(".py") else os.path.join("configs", f"{name}.py")


def load_module(path: str):
    """The config file at `path`, executed as a module of its own."""
    check(os.path.exists(path), f"config file {path} does not exist")
    spec = importlib.util.spec_from_file_location("moejax_config_" + re.sub(r"\W", "_", path),
                                                  path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module       # dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    return module


def load(name: str, size: Optional[str] = None, overrides: Mapping[str, Any] = (),
         where: Optional[str] = None) -> ml_collections.ConfigDict:
    """configs/<name>.py (or the file `name`) at `size` (the file's default if None), with
    dotted overrides ({"model.num_layers": 8, ...}) applied in order. `where` names the
    config in error messages (default: `name`)."""
    where = where or name
    module = load_module(config_path(name))
    try:
        config = module.get_config(size) if size else module.get_config()
    except ValueError as err:
        raise ConfigError(f"{where!r}: {err}") from err
    for key, value in dict(overrides).items():
        set_field(config, key, value, where)
    return config


def set_field(config: ml_collections.ConfigDict, key: str, value: Any, where: str) -> None:
    """config[key] = value for a dotted key that must exist, converted to the field's type
    where that is lossless (int -> float; None -> 'none' for a string field)."""
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        check(part in node, f"{key!r} (in {where!r}) is not a config field")
        node = node[part]
    check(leaf in node, f"{key!r} (in {where!r}) is not a config field")
    current = node[leaf]
    if value is None and isinstance(current, str):         # a string field's value 'none'
        value = "none"
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    try:
        node[leaf] = value
    except TypeError as err:
        raise ConfigError(f"{key}={value!r} (in {where!r}) has the wrong type: {err}") from err
