"""The routing registry: no router-name branches outside moejax/routing/, and checkpoints
written before the families moved into it still restore and train on identically."""

import os
import pathlib
import re
import tarfile

import numpy as np
import pytest

from moejax.routing import FAMILIES, ROUTERS
from moejax.train import trainer
from moejax.train.logs import read_log
from test_train import ROOT, micro

OLD = os.path.join(ROOT, "tests", "data", "checkpoints_before_registry.tgz")


def test_no_router_name_comparisons_outside_routing():
    pattern = re.compile(r"\.router\s*(==|!=|in\b|not in\b)")
    offenders = [f"{path}:{n}" for path in pathlib.Path(ROOT, "moejax").rglob("*.py")
                 if "routing" not in path.parts
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if pattern.search(line)]
    assert offenders == []


def test_every_family_is_one_row():
    assert ROUTERS == tuple(FAMILIES) and len(set(ROUTERS)) == len(ROUTERS)
    for name, family in FAMILIES.items():
        assert family.name == name and family.paper
        assert family.choice in ("token", "expert", "soft")
        assert (family.route is None) == (family.choice == "soft")


@pytest.mark.parametrize("family", ["deepseek_v3", "shazeer"])
def test_checkpoints_written_before_the_registry_restore(family, data_dir, tmp_path):
    """tests/data/checkpoints_before_registry.tgz: micro(family) trained 2 steps by commit
    8ca7f6f, before the routing registry (the router's selection bias, expert load and noise
    weights live under the same names). Resumed for a third step today, its log must equal a
    3-step run from scratch today."""
    with tarfile.open(OLD) as archive:                # extraction filters: 3.11.4 and later
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        archive.extractall(tmp_path / "old", **safe)
    resumed = tmp_path / "old" / family
    trainer.train_and_evaluate(micro(family, data_dir, steps=3), str(resumed))
    trainer.train_and_evaluate(micro(family, data_dir, steps=3), str(tmp_path / "new"))
    old = [r for r in read_log(str(resumed)) if r["split"] == "train"]
    new = [r for r in read_log(str(tmp_path / "new")) if r["split"] == "train"]
    assert [r["step"] for r in old] == [1, 2, 3]
    for a, b in zip(old, new):
        for key in ("loss", "grad_norm", "moe/tokens_per_expert"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, err_msg=f"{key} {a['step']}")
