"""Per-device parameter memory from abstract shapes (moejax/train/state_memory.py), checked against
hand-counted parameters and the Switch paper's published size."""


import pytest
from flax import nnx

from experiments import config_files
from moejax.errors import ConfigError
from moejax.models import build_model
from moejax.parallel.shard_bytes import abstract_mesh, optimizer_memory, parameter_memory
from moejax.train import state_memory
from moejax.train.config import resolve
from moejax.train.optimizer import make_optimizer


def config_for(family, size, **mesh):
    config = config_files.load(family, size)
    config.mesh.update(mesh)
    return config


def test_switch_base_has_the_papers_parameter_count():
    """Switch Transformer Table 9: Switch-Base (128 experts) has 7.4B parameters."""
    config = config_for("switch", "base")
    model_cfg = resolve(config, state_memory.vocab_size(config))
    model = nnx.eval_shape(lambda: build_model(model_cfg, rngs=nnx.Rngs(0)))
    params = parameter_memory(model, abstract_mesh(dict(data=1, fsdp=1, expert=1, model=1)))
    assert params["all"]["total"] / 4 == pytest.approx(7.4e9, rel=0.02)
    # 12 sparse layers (every other of 12 + 12) × 128 experts × (wi + wo) of 768 × 3072
    assert params["experts"]["total"] / 4 == 12 * 128 * 2 * 768 * 3072


def test_experts_split_over_the_expert_axis_and_the_rest_is_replicated():
    config = config_for("switch", "tiny")
    model_cfg = resolve(config, state_memory.vocab_size(config))
    model = nnx.eval_shape(lambda: build_model(model_cfg, rngs=nnx.Rngs(0)))
    one = parameter_memory(model, abstract_mesh(dict(data=1, fsdp=1, expert=1, model=1)))
    ep = parameter_memory(model, abstract_mesh(dict(data=4, fsdp=1, expert=4, model=1)))
    assert ep["experts"]["per_device"] == one["experts"]["total"] / 4
    assert ep["other"]["per_device"] == one["other"]["total"]
    # tiny: 2 sparse layers (of 2 + 2) × 8 GEGLU experts × (wi_0, wi_1, wo) of 128 × 256,
    # float32
    assert one["experts"]["total"] == 2 * 8 * 3 * 128 * 256 * 4


def test_report_names_the_mesh_and_rejects_a_mesh_that_does_not_fit():
    text = state_memory.report(config_for("switch", "base", data=-1, expert=32), devices=64)
    assert text.splitlines()[0] == "mesh data=2 × fsdp=1 × expert=32 × model=1 (64 devices)"
    assert "parameters: experts" in text and "optimizer (adafactor)" in text
    with pytest.raises(ConfigError, match=r"moe.num_experts=128 does not fit mesh.expert=48"):
        state_memory.report(config_for("switch", "base", data=1, expert=48), devices=48)


def test_readme_memory_example_is_what_the_tool_prints():
    import pathlib
    import re
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"```\n\$ python -m experiments.memory (.*?)\n(.*?)```", readme, re.S)
    assert "--devices=16 --config.mesh.expert=16" in block.group(1)
    text = state_memory.report(config_for("switch", "base", expert=16), devices=16)
    assert block.group(2).strip() in text


def test_adamw_moments_are_placed_like_their_parameters():
    """Adam's two moments per parameter: twice the parameters' bytes, in total and on each
    device (the trainer places each moment like its parameter); plus one step count."""
    config = config_for("switch", "tiny")
    config.optimizer.name = "adamw"
    model_cfg = resolve(config, state_memory.vocab_size(config))

    def make():
        model = build_model(model_cfg, rngs=nnx.Rngs(0))
        return model, make_optimizer(config.optimizer, model, 10)

    model, optimizer = nnx.eval_shape(make)
    mesh = abstract_mesh(dict(data=2, fsdp=1, expert=4, model=1))
    params = parameter_memory(model, mesh)["all"]
    opt = optimizer_memory(optimizer, model, mesh)
    assert params["per_device"] < params["total"]
    for key in ("total", "per_device"):
        assert opt[key] == pytest.approx(2 * params[key] + 2 * 4, abs=8)   # + int32 counts
