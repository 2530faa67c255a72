"""Command-line mistakes give one line (`error: ...`, exit status 1), never a traceback."""

import os
import re

import pytest
from absl import flags
from ml_collections import config_flags

from experiments import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse(argv, capsys):
    """experiments.train's flags on a fresh FlagValues (ml_collections defines the override
    flags from the argv it is given); returns (exit status, stderr)."""
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "config", flag_values=flag_values,
                                    lock_config=True, sys_argv=["train", *argv])
    flags.DEFINE_string("workdir", None, "workdir", flag_values=flag_values)
    flags.mark_flag_as_required("workdir", flag_values=flag_values)
    try:
        cli.parse_flags(["train", *argv], flag_values)
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--config.train.stepz=1"],
     r"^error: --config\.train\.stepz: configs/glam\.py has no field train\.stepz \(did you "
     r"mean train\.num_steps\? train has: checkpoint_every, .*num_steps.*\)$"),
    (["--config.moe.foo=1"], r"^error: --config\.moe\.foo: .* has no field moe\.foo \(moe has: "),
    (["--config.modle.d_model=1"],
     r"^error: --config\.modle\.d_model: .* has no field modle \(did you mean model\?"),
    (["--config.train.num_steps=abc"],
     r"^error: flag --config\.train\.num_steps=abc: invalid literal for int"),
], ids=["unknown-field-hint", "unknown-field", "unknown-group", "bad-value"])
def test_bad_overrides_give_one_line(argv, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    status, err = parse(["--config=configs/glam.py:tiny", "--workdir=w", *argv], capsys)
    assert status == 1
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert re.match(message, err.strip()), err


@pytest.mark.parametrize("config, message", [
    ("configs/nonexistent.py:tiny", r"^error: flag --config=configs/nonexistent\.py:tiny: "
                                    r"\[Errno 2\] No such file or directory"),
    ("configs/glam.py:huge", r"^error: flag --config=configs/glam\.py:huge: ValueError: config "
                             r"size 'huge' is not one of tiny, base, large$"),
])
def test_bad_config_files_give_one_line(config, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    status, err = parse([f"--config={config}", "--workdir=w"], capsys)
    assert status == 1 and err.count("\n") == 1, err
    assert re.match(message, err.strip()), err


def test_good_flags_parse(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert parse(["--config=configs/glam.py:tiny", "--workdir=w",
                  "--config.train.num_steps=7"], capsys) == (0, "")


def test_steps_sets_num_steps_and_refuses_a_disagreeing_override(monkeypatch):
    import ml_collections
    from moejax.errors import ConfigError
    config = ml_collections.ConfigDict({"train": {"num_steps": 1000}})
    monkeypatch.setattr("sys.argv", ["train", "--steps=30"])
    cli.apply_steps(config, 30)
    assert config.train.num_steps == 30
    config.train.num_steps = 50                        # as --config.train.num_steps=50 sets it
    monkeypatch.setattr("sys.argv", ["train", "--config.train.num_steps=50", "--steps=30"])
    with pytest.raises(ConfigError, match="--steps=30 and --config.train.num_steps=50 disagree"):
        cli.apply_steps(config, 30)
    with pytest.raises(ConfigError, match="--steps=0 must be >= 1"):
        cli.apply_steps(config, 0)


def test_no_test_module_imports_a_command_with_flags():
    """Commands define absl flags when imported, and two that both define --workdir cannot be
    imported in one test process: tests import the commands' libraries instead (the launcher,
    whose test drives it in-process, is the one exception)."""
    import ast
    import glob
    commands = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "experiments",
                                                                           "*.py"))
                if "DEFINE_" in open(p, encoding="utf-8").read()}
    found = []
    for path in glob.glob(os.path.join(ROOT, "tests", "test_*.py")):
        tree = ast.parse(open(path, encoding="utf-8").read())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module == "experiments":
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "experiments."):
                names = [node.module.split(".")[1]]
            elif isinstance(node, ast.Import):
                names = [a.name.split(".")[1] for a in node.names
                         if a.name.startswith("experiments.")]
            found += [(os.path.basename(path), n) for n in names if n in commands]
    assert set(found) <= {("test_launch.py", "launch_tpu")}, found
