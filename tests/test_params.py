"""Parameter counts of the published architectures (configs/open) against the counts worked by
hand from each model card's shapes, the published-figure comparison, and the tiny twins."""

import os
import subprocess
import sys

import pytest
from flax import nnx

from configs.open.architecture import agrees, tiny_twin
from experiments import config_files
from moejax.models import ffn_pattern, init_model
from moejax.models.param_count import count_by_part
from moejax.train.config import resolve
from moejax.train.state_memory import vocab_size

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def counts(path, size):
    config = config_files.load(os.path.join(ROOT, path), size)
    model_cfg = resolve(config, vocab_size(config))
    model = nnx.eval_shape(lambda: init_model(model_cfg, 0))
    return count_by_part(model, model_cfg), model_cfg


def gqa_attention(d, heads, kv_heads, head_dim):
    return d * heads * head_dim * 2 + 2 * d * kv_heads * head_dim


def test_mixtral_8x7b_by_hand():
    d, v, f, layers = 4096, 32000, 14336, 32
    per_layer = gqa_attention(d, 32, 8, 128) + 8 * 3 * d * f + d * 8 + 2 * d
    total = layers * per_layer + 2 * v * d + d
    active = total - layers * 6 * 3 * d * f                 # 6 of 8 experts unvisited
    c, _ = counts("configs/open/mixtral.py", "8x7b")
    assert c["all"][0] == total == 46_702_792_704
    assert c["all"][1] == pytest.approx(active, rel=1e-12)
    assert c["routed experts"][0] == layers * 8 * 3 * d * f


def test_deepseek_v3_by_hand():
    """MLA (q_lora 1536, kv_lora 512, 128 + 64 rotary, values 128) in 61 layers, the first 3
    dense (18432), then 256 routed + 1 shared expert of 2048, top-8."""
    d, v, heads = 7168, 129280, 128
    attention = (d * 1536 + 1536 + 1536 * heads * 192 + d * (512 + 64) + 512
                 + 512 * heads * (128 + 128) + heads * 128 * d)
    dense_layer = attention + 3 * d * 18432 + 2 * d
    routed = 256 * 3 * d * 2048
    moe_layer = attention + routed + 3 * d * 2048 + d * 256 + 2 * d
    total = 3 * dense_layer + 58 * moe_layer + 2 * v * d + d
    c, _ = counts("configs/open/deepseek.py", "v3")
    assert c["all"][0] == total
    assert c["all"][1] == pytest.approx(total - 58 * routed * (1 - 8 / 256), rel=1e-12)
    assert c["shared experts"][0] == 58 * 3 * d * 2048


def test_qwen_olmoe_arctic_pieces_by_hand():
    """q/k/v biases and the shared expert's gate (Qwen1.5-MoE), QK-norm across heads (OLMoE),
    a dense FFN beside every MoE (Arctic)."""
    d, v = 2048, 151936
    per_layer = (gqa_attention(d, 16, 16, 128) + 3 * 16 * 128      # + q, k, v biases
                 + 60 * 3 * d * 1408 + d * 60                        # routed experts, router
                 + 3 * d * 5632 + d + 2 * d)                         # shared + its gate, norms
    c, _ = counts("configs/open/qwen.py", "qwen1.5_a2.7b")
    assert c["all"][0] == 24 * per_layer + 2 * v * d + d

    d, v = 2048, 50304
    per_layer = gqa_attention(d, 16, 16, 128) + 2 * 16 * 128 + 64 * 3 * d * 1024 + d * 64 + 2 * d
    c, _ = counts("configs/open/olmoe.py", "1b_7b")
    assert c["all"][0] == 16 * per_layer + 2 * v * d + d

    d, v = 7168, 32000
    per_layer = (gqa_attention(d, 56, 8, 128) + 128 * 3 * d * 4864 + d * 128
                 + 3 * d * d + 3 * d)                                # residual dense + 3 norms
    c, _ = counts("configs/open/arctic.py", "480b")
    assert c["all"][0] == 35 * per_layer + 2 * v * d + d
    assert c["dense FFN"][0] == 35 * 3 * d * d


@pytest.mark.parametrize("ours, text, expected", [
    (46.70e9, "46.7B", True), (37.55e9, "37B", True), (36.4e9, "37B", False),
    (38.0e9, "37B", False), (2.661e9, "2.4B", False), (1.162e12, "1.2T", True),
    (315.7e9, "314B", False), (314.9e9, "314B", True), (140.6e9, "141B", True)])
def test_published_figures_agree_within_their_precision(ours, text, expected):
    """Within 0.5%, or the published figure is ours rounded or truncated to its digits."""
    assert agrees(ours, text) is expected


def open_models():
    for name in sorted(os.listdir(os.path.join(ROOT, "configs/open"))):
        module = config_files.load_module(os.path.join(ROOT, "configs/open", name)) \
            if name.endswith(".py") else None
        for model in getattr(module, "MODELS", {}):
            yield f"configs/open/{name}", model


STRUCTURE = ("attention", "qk_norm", "qkv_bias", "dense_moe_hybrid", "tie_embeddings",
             "extra_dense_ffn_after_moe", "activation", "arch", "moe_layout")
MOE_STRUCTURE = ("router", "gate_order", "renormalize_gates", "num_shared_experts",
                 "shared_expert_gate", "dispatch", "activation", "routed_scaling_factor")


@pytest.mark.parametrize("path, model", list(open_models()))
def test_tiny_twins_keep_the_structure(path, model):
    """Every structural choice of the published model, at sizes a CPU trains in minutes."""
    module = config_files.load_module(os.path.join(ROOT, path))
    big = config_files.load(os.path.join(ROOT, path), model)
    c, tiny = counts(path, model + "_tiny")
    assert c["all"][0] < 5e6
    for name in STRUCTURE:
        assert getattr(tiny, name) == big.model[name], name
    for name in MOE_STRUCTURE:
        assert getattr(tiny.moe, name) == big.moe[name], name
    assert (tiny.num_kv_heads is None) == (big.model.num_kv_heads is None)
    arch = module.MODELS[model]
    twin = tiny_twin(arch)["model"]
    depth = "num_layers" if tiny.arch == "decoder" else "num_encoder_layers"
    big_pattern = ffn_pattern(resolve(big, vocab_size(big)), arch["model"][depth])
    tiny_pattern = ffn_pattern(tiny, twin[depth])
    assert big_pattern[0] == tiny_pattern[0] and big_pattern[-1] == tiny_pattern[-1]
    assert ("dense" in big_pattern) == ("dense" in tiny_pattern)


def test_params_command_prints_counts_beside_the_published_ones():
    out = subprocess.run(
        [sys.executable, "-m", "experiments.params", "--config=configs/open/mixtral.py:8x7b"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if line.strip()}
    assert lines["all"].split()[1:3] == ["46.7B", "12.88B"]
    assert "46.7B" in lines["published"] and "12.9B" in lines["published"]
    assert lines["difference"].split()[1:5] == ["+0.01%", "✓", "-0.16%", "✓"]
