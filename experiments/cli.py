"""Flag parsing for the experiment scripts: every command-line mistake is one line.

absl reports a config file that fails to load with the file's whole traceback inside its
message, and ml_collections raises a traceback for an unknown `--config.<field>`. `run(main)`
is `absl.app.run(main)` with a parser that turns both into `error: ...` on stderr and exit
status 1, e.g.

    error: --config.train.stepz: configs/glam.py has no field train.stepz (did you mean
    train.steps? train has: ...)
"""

from __future__ import annotations

import difflib
import json
import re
import sys
from typing import List, Optional

from absl import app, flags

_OVERRIDE = re.compile(r"^--?config\.([\w.]+)(=.*)?$")


def _lines(message: str) -> List[str]:
    return [line.strip() for line in message.strip().splitlines() if line.strip()] or [""]


def _cause(message: str) -> str:
    """'flag --config=X: Error whilst parsing ... <traceback> ValueError: why' -> 'flag
    --config=X: ValueError: why'."""
    lines = _lines(message)
    if len(lines) == 1:
        return lines[0]
    return f"{lines[0].split(': ')[0]}: {lines[-1]}"


def _load_config(argv: List[str]):
    """The config that --config=PATH[:ARG] names, loaded as ml_collections does; None if none."""
    value = next((a.split("=", 1)[1] for a in argv if a.startswith(("--config=", "-config="))),
                 None)
    if value is None:
        return None
    from experiments import config_files        # here: launch_tpu uses this module without jax
    path, _, arg = value.partition(":")
    return config_files.load(path, arg or None), path


def unknown_field(argv: List[str]) -> Optional[str]:
    """One line naming the first --config.<field> override that the config does not have."""
    try:
        loaded = _load_config(argv)
    except Exception:                 # noqa: BLE001 -- a broken file is reported elsewhere
        return None
    if loaded is None:
        return None
    config, path = loaded
    for arg in argv:
        match = _OVERRIDE.match(arg)
        if not match:
            continue
        node, walked = config, []
        for key in match.group(1).split("."):
            fields = list(node.keys()) if hasattr(node, "keys") else []
            if key not in fields:
                where = ".".join(walked) or "the config"
                guess = difflib.get_close_matches(key, fields, n=1, cutoff=0.5)
                full = ".".join(walked + [key])
                hint = (f"did you mean {'.'.join(walked + guess)}? " if guess else "")
                return (f"--config.{match.group(1)}: {path} has no field {full} ({hint}"
                        f"{where} has: {', '.join(sorted(fields))})")
            walked.append(key)
            node = node[key]
    return None


def _check_config_loaded(flag_values: flags.FlagValues) -> None:
    """ml_collections defers a config file that cannot be read to its first use."""
    flag = flag_values["config"] if "config" in flag_values else None
    if flag is None or flag.value is None or not hasattr(flag, "config_filename"):
        return                               # no config flag, or a plain one (launch_tpu)
    try:
        flag_values["config"].value.keys()
    except OSError as err:
        raise flags.Error(f"flag --config={flag_values['config'].config_filename}: "
                          f"{_lines(str(err))[-1]}") from err


def parse_flags(argv: List[str], flag_values: flags.FlagValues = flags.FLAGS) -> List[str]:
    """absl's flag parsing, with every error printed as one line (exit status 1)."""
    try:
        rest = flag_values(argv)
        _check_config_loaded(flag_values)
        return rest
    except flags.Error as err:
        message = unknown_field(argv[1:]) or _cause(str(err))
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        message = unknown_field(argv[1:]) or f"bad --config override: {err}"
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def apply_steps(config, steps: Optional[int]) -> None:
    """--steps=N (train, upcycle; compare and reproduce have it too) sets train.num_steps; a
    different --config.train.num_steps given with it is one ConfigError line."""
    from moejax.errors import check             # here: launch_tpu uses this module without jax
    if steps is None:
        return
    check(steps >= 1, f"--steps={steps} must be >= 1")
    given = [a for a in sys.argv[1:] if a.startswith(("--config.train.num_steps=",
                                                      "-config.train.num_steps="))]
    check(not given or int(config.train.num_steps) == steps,
          f"--steps={steps} and {given[-1] if given else ''} disagree: give one of them")
    config.train.num_steps = steps


def write_json(path: Optional[str], value) -> None:
    """Writes value as indented JSON to path (a script's --json flag); nothing if path is None."""
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(value, f, indent=1)


def run(main) -> None:
    """absl.app.run(main) with one-line errors: for flags, and for a ConfigError that main
    raises ("error: <its line>", exit status 1)."""
    def guarded(argv):
        try:
            return main(argv)
        except Exception as err:       # noqa: BLE001 -- re-raised unless a ConfigError
            # moejax is imported lazily (launch_tpu runs without jax): a ConfigError can only
            # come from a main that imported moejax.errors
            errors = sys.modules.get("moejax.errors")
            if errors is None or not isinstance(err, errors.ConfigError):
                raise
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)
    app.run(guarded, flags_parser=parse_flags)
