"""Hugging Face weights in and out, against transformers' own outputs.

tests/data/hf/<layout>/ holds tiny random models that transformers built and saved
(tests/data/hf/make_fixtures.py; config.json + model.safetensors, 1.3 MB in all) with the
logits transformers computed for a fixed batch and its num_parameters(). Imported into moejax,
each must give the same logits (float32, 1e-4) and parameter count; exported again, the same
tensors exactly. No torch is needed here."""

import functools
import json
import os
import shutil
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs.open.architecture import from_fields
from moejax.checkpoints import hf_config, hf_io, hf_weights
from moejax.errors import ConfigError
from moejax.models import count_params, init_model
from moejax.train.config import resolve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "data", "hf")
LAYOUTS = sorted(d for d in os.listdir(FIXTURES) if os.path.isdir(os.path.join(FIXTURES, d)))


def expected(layout):
    with open(os.path.join(FIXTURES, layout, "expected.json"), encoding="utf-8") as f:
        return json.load(f)


@functools.lru_cache(maxsize=None)
def imported(directory):
    """(model config, model with the imported weights, HfModel) of a model directory (built
    once per directory; the tests only read them)."""
    hf = hf_io.read_hf_dir(directory)
    config = from_fields(hf_config.to_moejax(hf.config))
    model_cfg = resolve(config, config.model.vocab_size)
    values = hf_io.imported_state(model_cfg, hf)
    model = init_model(model_cfg, 0)
    state = nnx.state(model)
    flat = dict(nnx.to_flat_state(state))
    for path, value in values.items():
        flat[path].set_value(jnp.asarray(value))
    nnx.update(model, state)
    return model_cfg, model, hf


def test_every_layout_has_a_fixture():
    assert LAYOUTS == sorted(hf_config.MODEL_TYPES)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_imported_logits_equal_transformers(layout):
    want = expected(layout)
    model_cfg, model, _ = imported(os.path.join(FIXTURES, layout))
    logits, _ = nnx.jit(lambda m, t: m(t, deterministic=True))(model, jnp.asarray(want["tokens"]))
    np.testing.assert_allclose(logits, np.asarray(want["logits"]), rtol=1e-4, atol=1e-4)
    assert count_params(model) == want["num_parameters"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_export_of_an_import_gives_the_tensors_back(layout):
    model_cfg, model, hf = imported(os.path.join(FIXTURES, layout))
    exported = hf_weights.export_state(model_cfg, layout, hf_io.weights_of(model))
    assert sorted(exported) == hf.names
    for name in hf.names:
        np.testing.assert_array_equal(exported[name], hf.get(name), err_msg=name)


def test_rope_columns_are_deinterleaved():
    """DeepSeek's interleaved pairs (x0, x1), (x2, x3) become halves (x0, x2 | x1, x3)."""
    rule = hf_weights.Rule("w", in_axes=1, rope=4)
    torch_weight = np.arange(2 * 6, dtype=float).reshape(6, 2)        # [out 6, in 2]
    ours = hf_weights.to_moejax(torch_weight, rule, (2, 6))
    np.testing.assert_array_equal(ours[0], [0, 2, 4, 8, 6, 10])
    np.testing.assert_array_equal(hf_weights.to_hf(ours, rule), torch_weight)


def test_a_tensor_no_parameter_reads_is_named(tmp_path):
    from safetensors.numpy import load_file, save_file
    directory = tmp_path / "mixtral"
    shutil.copytree(os.path.join(FIXTURES, "mixtral"), directory)
    tensors = load_file(directory / "model.safetensors")
    tensors["model.layers.0.self_attn.q_norm.weight"] = np.ones(32, np.float32)
    save_file(tensors, directory / "model.safetensors")
    with pytest.raises(ConfigError, match="1 tensors .* map to no moejax parameter of this "
                                          "config, the first model.layers.0.self_attn.q_norm"):
        imported(str(directory))


@pytest.mark.parametrize("change, message", [
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 40}},
     "rope scaling 'yarn'"),
    ({"model_type": "llama"}, "model_type='llama' is not one of"),
    ({"sliding_window": 4096}, "sliding_window=4096 is not supported"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
], ids=["yarn", "model-type", "sliding-window", "activation"])
def test_configs_moejax_cannot_model_give_one_line(change, message):
    hf = json.load(open(os.path.join(FIXTURES, "mixtral", "config.json"), encoding="utf-8"))
    with pytest.raises(ConfigError, match=message):
        hf_config.to_moejax({**hf, **change})


@pytest.mark.parametrize("layout", LAYOUTS)
def test_config_json_round_trips(layout):
    hf = json.load(open(os.path.join(FIXTURES, layout, "config.json"), encoding="utf-8"))
    fields = hf_config.to_moejax(hf)
    config = from_fields(fields)
    again = hf_config.to_hf(dict(config.model.items()), dict(config.moe.items()))
    assert hf_config.to_moejax(again) == fields
    for key, value in again.items():
        if key in hf and key not in ("torch_dtype", "rope_parameters"):
            assert hf[key] == value or (hf[key] is None and not value), key


def test_import_and_export_commands(tmp_path):
    """import_hf writes a trainer workdir (step 0) that inspect_checkpoint's report reads and
    that refuses a second import; export_hf writes the same tensors back."""
    from moejax.checkpoints import report
    source = os.path.join(FIXTURES, "deepseek_v3")
    run = lambda *args: subprocess.run([sys.executable, "-m", *args], cwd=ROOT,
                                       capture_output=True, text=True, timeout=600)
    workdir, out = tmp_path / "w", tmp_path / "out"
    done = run("experiments.import_hf", f"--hf_dir={source}", f"--workdir={workdir}")
    assert done.returncode == 0, done.stderr
    assert os.path.isdir(workdir / "checkpoints" / "0")
    shown = report.format_summary(report.summarize(str(workdir), 0))
    assert f"imported from the Hugging Face model {source}" in shown
    done = run("experiments.export_hf", f"--workdir={workdir}", f"--out_dir={out}")
    assert done.returncode == 0, done.stderr
    original, again = hf_io.read_hf_dir(source), hf_io.read_hf_dir(str(out))
    assert again.names == original.names
    for name in original.names:
        np.testing.assert_array_equal(again.get(name), original.get(name), err_msg=name)
    model_cfg, _, hf = imported(source)
    with pytest.raises(ConfigError, match="already has checkpoints .step 0.; import into a new"):
        hf_io.write_workdir(from_fields(hf_config.to_moejax(hf.config)), model_cfg, hf,
                            str(workdir))


def test_sharded_checkpoints_read_like_one_file(tmp_path):
    """save_pretrained's shards (model-0000k-of-0000n.safetensors): the same tensors."""
    from safetensors.numpy import load_file, save_file
    tensors = load_file(os.path.join(FIXTURES, "mixtral", "model.safetensors"))
    names = sorted(tensors)
    for i, part in enumerate((names[::2], names[1::2])):
        save_file({n: tensors[n] for n in part},
                  tmp_path / f"model-0000{i + 1}-of-00002.safetensors")
    shutil.copy(os.path.join(FIXTURES, "mixtral", "config.json"), tmp_path)
    hf = hf_io.read_hf_dir(str(tmp_path))
    assert hf.names == names
    model_cfg = resolve(from_fields(hf_config.to_moejax(hf.config)), 128)
    one = hf_io.imported_state(model_cfg, hf_io.read_hf_dir(os.path.join(FIXTURES, "mixtral")))
    sharded = hf_io.imported_state(model_cfg, hf)
    assert one.keys() == sharded.keys()
    for path in one:
        np.testing.assert_array_equal(one[path], sharded[path])
