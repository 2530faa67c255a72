"""Builds the Hugging Face fixtures of tests/test_import_hf.py with transformers itself.

Run on a developer machine, not by CI (which has neither torch nor transformers):

    python -m venv /tmp/hf && /tmp/hf/bin/pip install torch==2.13.0 transformers==5.24.0 \
        safetensors numpy
    /tmp/hf/bin/python tests/data/hf/make_fixtures.py

For each supported architecture it builds a tiny model with random weights (float32, seed 0,
weights drawn at std 0.2 so that routing and every path matter), saves it with
save_pretrained (config.json + model.safetensors) under tests/data/hf/<name>/, and writes
expected.json: the logits of a fixed token batch from transformers' own forward pass and
transformers' num_parameters(). Running it again gives identical files.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
import transformers

HERE = os.path.dirname(os.path.abspath(__file__))
TOKENS = [[5, 17, 99, 3, 64, 64, 120, 7, 31], [1, 2, 3, 4, 5, 6, 7, 8, 9]]
COMMON = dict(vocab_size=128, hidden_size=32, num_attention_heads=4, initializer_range=0.2,
              tie_word_embeddings=False)

MODELS = {
    "mixtral": (transformers.MixtralConfig, transformers.MixtralForCausalLM, dict(
        intermediate_size=24, num_hidden_layers=2, num_key_value_heads=2, head_dim=8,
        num_local_experts=4, num_experts_per_tok=2, rope_theta=1e6)),
    "olmoe": (transformers.OlmoeConfig, transformers.OlmoeForCausalLM, dict(
        intermediate_size=16, num_hidden_layers=2, num_key_value_heads=4, num_experts=8,
        num_experts_per_tok=3, norm_topk_prob=False, eos_token_id=1, pad_token_id=0)),
    "qwen2_moe": (transformers.Qwen2MoeConfig, transformers.Qwen2MoeForCausalLM, dict(
        intermediate_size=40, moe_intermediate_size=12, shared_expert_intermediate_size=20,
        num_hidden_layers=2, num_key_value_heads=4, num_experts=6, num_experts_per_tok=2,
        norm_topk_prob=False)),
    "qwen3_moe": (transformers.Qwen3MoeConfig, transformers.Qwen3MoeForCausalLM, dict(
        intermediate_size=40, moe_intermediate_size=12, num_hidden_layers=2,
        num_key_value_heads=2, head_dim=8, num_experts=8, num_experts_per_tok=2,
        norm_topk_prob=True)),
    "deepseek_v2": (transformers.DeepseekV2Config, transformers.DeepseekV2ForCausalLM, dict(
        intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=3,
        num_key_value_heads=4, n_shared_experts=2, n_routed_experts=8, num_experts_per_tok=3,
        routed_scaling_factor=16.0, kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=8,
        v_head_dim=12, qk_nope_head_dim=8, n_group=4, topk_group=2,
        topk_method="group_limited_greedy", first_k_dense_replace=1)),
    "deepseek_v3": (transformers.DeepseekV3Config, transformers.DeepseekV3ForCausalLM, dict(
        intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=3,
        num_key_value_heads=4, n_shared_experts=1, n_routed_experts=8, num_experts_per_tok=3,
        routed_scaling_factor=2.5, kv_lora_rank=16, q_lora_rank=24, qk_rope_head_dim=8,
        v_head_dim=12, qk_nope_head_dim=8, n_group=4, topk_group=2, first_k_dense_replace=1,
        norm_topk_prob=True)),
}


def build(name: str) -> None:
    config_class, model_class, fields = MODELS[name]
    torch.manual_seed(0)
    model = model_class(config_class(**COMMON, **fields)).eval()
    with torch.no_grad():
        for parameter in model.parameters():      # every weight matters at this scale
            if parameter.ndim == 1:
                parameter.copy_(1.0 + 0.2 * torch.randn_like(parameter))
            else:
                parameter.copy_(0.2 * torch.randn_like(parameter))
        for name_, buffer in model.named_buffers():
            if name_.endswith("e_score_correction_bias"):     # DeepSeek-V3's selection bias
                buffer.copy_(0.1 * torch.randn_like(buffer))
        logits = model(torch.tensor(TOKENS)).logits.numpy()
    out = os.path.join(HERE, name)
    model.save_pretrained(out, safe_serialization=True)
    os.remove(os.path.join(out, "generation_config.json"))
    expected = {"tokens": TOKENS, "num_parameters": model.num_parameters(),
                "transformers": transformers.__version__,
                "logits": np.round(logits.astype(np.float64), 7).tolist()}
    with open(os.path.join(out, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f)
    print(f"{name}: {model.num_parameters()} parameters -> {out}")


if __name__ == "__main__":
    for model_name in MODELS:
        build(model_name)
