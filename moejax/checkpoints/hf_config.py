"""Hugging Face config.json <-> moejax model fields, for the open MoE models' layouts.

Supported `model_type`s: mixtral, olmoe, qwen2_moe, qwen3_moe, deepseek_v2, deepseek_v3 (the
field names of transformers' configuration_*.py). `to_moejax` reads a config.json into the
`model` and `moe` fields of a moejax config; `to_hf` writes them back. Every routing detail is
a config value, not a code branch: Mixtral's softmax over the chosen logits is
gate_order='top_k_then_softmax'; OLMoE's and Qwen's norm_topk_prob is renormalize_gates;
DeepSeek-V2's group-limited greedy routing is router 'deepseek_v2' with num_expert_groups;
DeepSeek-V3's sigmoid routing with a selection bias is router 'deepseek_v3'. A feature these
models' configs can turn on that moejax does not model (YaRN rope scaling, sliding windows,
q/k/v clipping, attention biases where the layout has none) is refused with one line.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

from moejax.errors import ConfigError, check

MODEL_TYPES = ("mixtral", "olmoe", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3")
ARCHITECTURES = {"mixtral": "MixtralForCausalLM", "olmoe": "OlmoeForCausalLM",
                 "qwen2_moe": "Qwen2MoeForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM",
                 "deepseek_v2": "DeepseekV2ForCausalLM", "deepseek_v3": "DeepseekV3ForCausalLM"}
LATENT = ("deepseek_v2", "deepseek_v3")


def rope_theta(hf: Mapping[str, Any]) -> float:
    """θ from `rope_theta` (transformers 4) or `rope_parameters` (5); refuses scaled RoPE."""
    parameters = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    kind = parameters.get("rope_type") or scaling.get("type") or scaling.get("rope_type")
    check(kind in (None, "default"),
          f"config.json: rope scaling {kind!r} (YaRN or another context extension) is not "
          "modelled by moejax; its logits would differ")
    return float(parameters.get("rope_theta", hf.get("rope_theta", 10000.0)))


def _refuse(hf: Mapping[str, Any], name: str, allowed) -> None:
    value = hf.get(name, allowed[0])
    check(value in allowed, f"config.json: {name}={value!r} is not supported "
                            f"(moejax models {', '.join(map(repr, allowed))})")


def moe_layers(hf: Mapping[str, Any], model_type: str) -> Dict[str, Any]:
    """Which layers are MoE, as model.moe_layout fields."""
    layers = hf["num_hidden_layers"]
    if model_type in LATENT:
        _refuse(hf, "moe_layer_freq", (1,))
        dense = hf.get("first_k_dense_replace", 0)
        return dict(moe_layout="top", num_moe_layers=layers - dense)
    if model_type in ("qwen2_moe", "qwen3_moe"):
        step = hf.get("decoder_sparse_step", 1)
        dense = set(hf.get("mlp_only_layers") or [])
        sparse = [i for i in range(layers) if i not in dense and (i + 1) % step == 0]
        if len(sparse) < layers:
            return dict(moe_layout="list", moe_layer_list=tuple(sparse))
    return dict(moe_layout="every", moe_every=1)


def to_moejax(hf: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """{'model': ..., 'moe': ...} fields of the moejax config of a config.json."""
    model_type = hf.get("model_type")
    check(model_type in MODEL_TYPES,
          f"config.json: model_type={model_type!r} is not one of {', '.join(MODEL_TYPES)}")
    check(hf.get("hidden_act", "silu") == "silu",
          f"config.json: hidden_act={hf.get('hidden_act')!r}; moejax maps only SwiGLU ('silu')")
    if hf.get("use_sliding_window", True):           # Qwen's flag; Mixtral has only the size
        check(not hf.get("sliding_window"), f"config.json: sliding_window="
                                            f"{hf.get('sliding_window')!r} is not supported "
                                            "(moejax attends to the whole sequence)")
    _refuse(hf, "clip_qkv", (None,))
    heads = hf["num_attention_heads"]
    kv_heads = hf.get("num_key_value_heads") or heads
    model = dict(arch="decoder", vocab_size=hf["vocab_size"], d_model=hf["hidden_size"],
                 num_layers=hf["num_hidden_layers"], num_heads=heads, d_ff=hf["intermediate_size"],
                 activation="swiglu", norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
                 rope_max_wavelength=rope_theta(hf),
                 tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
                 **moe_layers(hf, model_type))
    moe = dict(dispatch="dropless", activation="swiglu", num_selected_experts=hf["num_experts_per_tok"],
               load_balance_loss=float(hf.get("router_aux_loss_coef", 0.0) or 0.0))
    if model_type in LATENT:
        _refuse(hf, "attention_bias", (False,))
        model.update(attention="mla", q_lora_rank=hf.get("q_lora_rank") or 0,
                     kv_lora_rank=hf["kv_lora_rank"], qk_nope_head_dim=hf["qk_nope_head_dim"],
                     qk_rope_head_dim=hf["qk_rope_head_dim"], v_head_dim=hf["v_head_dim"])
        moe.update(num_experts=hf["n_routed_experts"], hidden_dim=hf["moe_intermediate_size"],
                   num_shared_experts=hf.get("n_shared_experts") or 0,
                   routed_scaling_factor=float(hf.get("routed_scaling_factor", 1.0)),
                   load_balance_loss=float(hf.get("aux_loss_alpha", 0.0) or 0.0))
        grouped = (model_type == "deepseek_v3"
                   or hf.get("topk_method", "greedy") == "group_limited_greedy")
        if grouped and hf.get("n_group", 1) > 1:
            moe.update(num_expert_groups=hf["n_group"], num_selected_groups=hf["topk_group"])
        if model_type == "deepseek_v2":
            _refuse(hf, "topk_method", ("greedy", "group_limited_greedy"))
            moe.update(router="deepseek_v2")
        else:
            moe.update(router="deepseek_v3", renormalize_gates=bool(hf.get("norm_topk_prob")),
                       bias_update_rate=1e-3, sequence_balance_loss=1e-4, load_balance_loss=0.0)
        return {"model": model, "moe": moe}
    head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
    model.update(head_dim=head_dim, num_kv_heads=None if kv_heads == heads else kv_heads)
    if model_type == "mixtral":
        moe.update(router="top_k", num_experts=hf["num_local_experts"],
                   hidden_dim=hf["intermediate_size"], gate_order="top_k_then_softmax")
        return {"model": model, "moe": moe}
    experts = hf.get("num_experts") or hf["num_local_experts"]     # transformers 4 / 5 names
    moe.update(router="top_k", num_experts=experts, gate_order="softmax_then_top_k",
               renormalize_gates=bool(hf.get("norm_topk_prob", False)),
               hidden_dim=hf.get("moe_intermediate_size") or hf["intermediate_size"])
    if model_type == "olmoe":
        _refuse(hf, "attention_bias", (False,))
        model.update(qk_norm="across_heads")
        moe.update(router_z_loss=float(hf.get("router_z_loss_coef", 0.0) or 0.0))
    elif model_type == "qwen2_moe":
        model.update(qkv_bias=bool(hf.get("qkv_bias", True)))
        width = hf.get("shared_expert_intermediate_size") or 0
        if width:
            moe.update(num_shared_experts=1, shared_hidden_dim=width, shared_expert_gate=True)
    else:                                                           # qwen3_moe
        _refuse(hf, "attention_bias", (False,))
        model.update(qk_norm="per_head")
    return {"model": model, "moe": moe}


def model_type_of(model, moe) -> str:
    """The Hugging Face layout a moejax config matches (one ConfigError line if none)."""
    if model.get("attention") == "mla":
        return "deepseek_v3" if moe["router"] == "deepseek_v3" else "deepseek_v2"
    if model.get("qk_norm") == "across_heads":
        return "olmoe"
    if model.get("qk_norm") == "per_head":
        return "qwen3_moe"
    if model.get("qkv_bias") or moe.get("shared_expert_gate"):
        return "qwen2_moe"
    if moe.get("router") == "top_k" and moe.get("gate_order") == "top_k_then_softmax":
        return "mixtral"
    raise ConfigError("export: this config matches none of the Hugging Face layouts "
                      f"{', '.join(MODEL_TYPES)} (router, attention, QK-norm and biases)")


def to_hf(model: Mapping[str, Any], moe: Mapping[str, Any]) -> Dict[str, Any]:
    """The config.json of a moejax config's model and moe fields (inverse of to_moejax)."""
    model_type = model_type_of(model, moe)
    layers = model["num_layers"]
    hf: Dict[str, Any] = dict(
        architectures=[ARCHITECTURES[model_type]], model_type=model_type,
        vocab_size=model["vocab_size"], hidden_size=model["d_model"], num_hidden_layers=layers,
        num_attention_heads=model["num_heads"], intermediate_size=model["d_ff"],
        hidden_act="silu", rms_norm_eps=model["norm_eps"],
        rope_parameters={"rope_theta": model["rope_max_wavelength"], "rope_type": "default"},
        tie_word_embeddings=model["tie_embeddings"], num_experts_per_tok=moe["num_selected_experts"],
        torch_dtype="float32")
    if model_type in LATENT:
        hf.update(num_key_value_heads=model["num_heads"], q_lora_rank=model["q_lora_rank"] or None,
                  kv_lora_rank=model["kv_lora_rank"], qk_nope_head_dim=model["qk_nope_head_dim"],
                  qk_rope_head_dim=model["qk_rope_head_dim"], v_head_dim=model["v_head_dim"],
                  n_routed_experts=moe["num_experts"], moe_intermediate_size=moe["hidden_dim"],
                  n_shared_experts=moe["num_shared_experts"] or None,
                  routed_scaling_factor=moe["routed_scaling_factor"],
                  first_k_dense_replace=layers - model["num_moe_layers"], moe_layer_freq=1,
                  n_group=moe["num_expert_groups"], topk_group=moe["num_selected_groups"],
                  attention_bias=False)
        if model_type == "deepseek_v2":
            hf["topk_method"] = "group_limited_greedy" if moe["num_expert_groups"] > 1 else "greedy"
            hf.update(norm_topk_prob=False, aux_loss_alpha=moe["load_balance_loss"])
        else:
            hf.update(norm_topk_prob=moe["renormalize_gates"], topk_method="noaux_tc",
                      rope_interleave=True)
        return hf
    heads = model["num_heads"]
    hf.update(head_dim=model["head_dim"] or model["d_model"] // heads,
              num_key_value_heads=model["num_kv_heads"] or heads,
              router_aux_loss_coef=moe["load_balance_loss"])
    if model_type == "mixtral":
        hf.update(num_local_experts=moe["num_experts"], intermediate_size=moe["hidden_dim"])
        return hf
    hf.update(num_experts=moe["num_experts"], norm_topk_prob=moe["renormalize_gates"])
    if model_type == "olmoe":
        hf.update(intermediate_size=moe["hidden_dim"], attention_bias=False, clip_qkv=None,
                  router_z_loss_coef=moe["router_z_loss"])
    if model_type in ("qwen2_moe", "qwen3_moe"):
        hf["moe_intermediate_size"] = moe["hidden_dim"]
        sparse = set(range(layers))
        if model["moe_layout"] == "list":
            sparse = set(model["moe_layer_list"])
        hf.update(decoder_sparse_step=1, mlp_only_layers=sorted(set(range(layers)) - sparse))
    if model_type == "qwen2_moe":
        hf.update(qkv_bias=model["qkv_bias"],
                  shared_expert_intermediate_size=(moe["shared_hidden_dim"] or 0)
                  * moe["num_shared_experts"])
    return hf


__all__ = ["MODEL_TYPES", "model_type_of", "to_hf", "to_moejax"]
