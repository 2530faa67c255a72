"""Hugging Face tensors <-> a moejax model's parameters, for the layouts of hf_config.py.

Every parameter of a moejax decoder has one rule: the Hugging Face tensor it comes from (a
name with the layer index, and the expert index for stacked experts) and how its axes map.
A Linear weight is [out, in] in torch and [in, *out] here (q [D, H, Dh], o [H, Dh, D]): the
transpose, reshaped. DeepSeek's checkpoints keep the rotary part of the queries and the
shared rotary key in interleaved pairs (x0, x1), (x2, x3), ...; moejax rotates halves
(moejax.models.attention.rotary), so those columns are permuted [0, 2, 4, ..., 1, 3, 5, ...]
on import and back on export. The same rules run both ways, so export(import(d)) gives d's
tensors back exactly.

Layers are found in the model's state by their index: a stack's layers sit in segments of
stacked super-blocks (moejax.models.stack), layer i at a super-block path and a repeat index
(moejax.checkpoints.upcycle.layer_places).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from moejax.checkpoints.upcycle import layer_places
from moejax.errors import ConfigError
from moejax.models.config import ModelConfig
from moejax.routing.registry import family

Path = Tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Rule:
    """One parameter: its Hugging Face name (with {layer} and, for experts, {expert}), the
    number of leading moejax axes that form torch's input axis (0: not a Linear weight; the
    same array, flattened if `flat`, one row [1, n] if `row`), whether it is stacked over
    experts (or is the shared experts' one FFN), and the rotary columns to permute (how many
    of the last axis's trailing values are DeepSeek's interleaved rotary pairs)."""
    name: str
    in_axes: int = 0
    experts: bool = False
    shared: bool = False
    rope: int = 0
    flat: bool = False
    row: bool = False


def rope_order(n: int) -> np.ndarray:
    """Interleaved pairs -> halves: [0, 2, ..., n-2, 1, 3, ..., n-1]."""
    return np.concatenate([np.arange(0, n, 2), np.arange(1, n, 2)])


def _permute_rope(x: np.ndarray, n: int, inverse: bool) -> np.ndarray:
    if not n:
        return x
    order = rope_order(n)
    if inverse:
        order = np.argsort(order)
    head, rope = x[..., :-n], x[..., -n:]
    return np.concatenate([head, rope[..., order]], axis=-1)


def to_moejax(tensor: np.ndarray, rule: Rule, shape: Tuple[int, ...]) -> np.ndarray:
    """A torch tensor -> the moejax array of `shape` (one layer, one expert)."""
    x = tensor.T.reshape(shape) if rule.in_axes else tensor.reshape(shape)
    return _permute_rope(x, rule.rope, inverse=False)


def to_hf(array: np.ndarray, rule: Rule) -> np.ndarray:
    """Inverse of to_moejax."""
    x = _permute_rope(array, rule.rope, inverse=True)
    if rule.in_axes:
        return x.reshape(int(np.prod(x.shape[:rule.in_axes])), -1).T
    if rule.row:
        return x.reshape(1, -1)
    return x.reshape(-1) if rule.flat else x


def layer_rules(cfg: ModelConfig, model_type: str, kind: str) -> Dict[Path, Rule]:
    """{path inside a Block: Rule} for a layer of `kind` ('dense' or 'moe')."""
    p = "model.layers.{layer}."
    rules = {("attn_norm", "scale"): Rule(p + "input_layernorm.weight"),
             ("ffn_norm", "scale"): Rule(p + "post_attention_layernorm.weight")}
    a = p + "self_attn."
    if cfg.attention == "mla":
        rope = cfg.qk_rope_head_dim
        if cfg.q_lora_rank:
            rules[("attn", "q_a")] = Rule(a + "q_a_proj.weight", 1)
            rules[("attn", "q_a_norm", "scale")] = Rule(a + "q_a_layernorm.weight")
            rules[("attn", "q_b")] = Rule(a + "q_b_proj.weight", 1, rope=rope)
        else:
            rules[("attn", "q")] = Rule(a + "q_proj.weight", 1, rope=rope)
        rules[("attn", "kv_a")] = Rule(a + "kv_a_proj_with_mqa.weight", 1, rope=rope)
        rules[("attn", "kv_a_norm", "scale")] = Rule(a + "kv_a_layernorm.weight")
        rules[("attn", "kv_b")] = Rule(a + "kv_b_proj.weight", 1)
        rules[("attn", "o")] = Rule(a + "o_proj.weight", 2)
    else:
        for name in "qkv":
            rules[("attn", name)] = Rule(a + f"{name}_proj.weight", 1)
            if cfg.qkv_bias:
                rules[("attn", f"{name}_bias")] = Rule(a + f"{name}_proj.bias", flat=True)
        rules[("attn", "o")] = Rule(a + "o_proj.weight", 2)
        if cfg.qk_norm != "none":
            rules[("attn", "q_norm", "scale")] = Rule(a + "q_norm.weight")
            rules[("attn", "k_norm", "scale")] = Rule(a + "k_norm.weight")
    ffn = {"wi_gate": "gate_proj", "wi": "up_proj", "wo": "down_proj"}
    if kind == "dense":
        for ours, theirs in ffn.items():
            rules[("ffn", ours)] = Rule(p + f"mlp.{theirs}.weight", 1)
        return rules
    moe = p + ("block_sparse_moe." if model_type == "mixtral" else "mlp.")
    rules[("ffn", "router", "w")] = Rule(moe + "gate.weight", 1)
    if family(cfg.moe).selection_bias:                    # DeepSeek-V3's bias correction
        rules[("ffn", "router", "selection_bias")] = Rule(moe + "gate.e_score_correction_bias")
    expert = {"wi_gate": "w1", "wi": "w3", "wo": "w2"} if model_type == "mixtral" else ffn
    for ours, theirs in expert.items():
        rules[("ffn", "experts", ours)] = Rule(moe + "experts.{expert}." + theirs + ".weight", 1,
                                               experts=True)
    if cfg.moe.num_shared_experts:
        shared = "shared_expert." if model_type == "qwen2_moe" else "shared_experts."
        for ours, theirs in ffn.items():
            rules[("ffn", "shared_experts", ours)] = Rule(moe + shared + theirs + ".weight", 1,
                                                          shared=True)
    if cfg.moe.shared_expert_gate:
        rules[("ffn", "shared_gate")] = Rule(moe + "shared_expert_gate.weight", row=True)
    return rules


TOP_RULES = {("embed", "embedding"): Rule("model.embed_tokens.weight"),
             ("final_norm", "scale"): Rule("model.norm.weight"),
             ("head",): Rule("lm_head.weight", 1)}


def _path(prefix: str, inner: Path) -> Path:
    """'layers/segments/1/blocks/layers/0' + inner -> a state path (list indices as ints)."""
    return tuple(int(p) if p.isdigit() else p for p in prefix.split("/")) + tuple(inner)


def parameter_sources(cfg: ModelConfig, model_type: str
                      ) -> Iterator[Tuple[Path, Optional[int], Rule, int]]:
    """(moejax state path, repeat index or None, Rule, layer) for every tensor."""
    for path, rule in TOP_RULES.items():
        if path == ("head",) and cfg.tie_embeddings:
            continue
        yield path, None, rule, -1
    places = layer_places(cfg)
    for layer in range(cfg.num_layers):
        place = places[("decoder", layer)]
        for inner, rule in layer_rules(cfg, model_type, place.kind).items():
            yield _path(place.prefix, inner), place.repeat, rule, layer


def import_state(cfg: ModelConfig, model_type: str, get: Callable[[str], np.ndarray],
                 shapes: Dict[Path, Tuple[int, ...]]) -> Dict[Path, np.ndarray]:
    """{state path: array} of every parameter, read with get(name) -> tensor.

    shapes: the moejax state's shapes (stacked layers lead). A missing tensor or one of the
    wrong size raises one ConfigError line naming it."""
    out: Dict[Path, np.ndarray] = {}
    for path, slot, rule, layer in parameter_sources(cfg, model_type):
        full = shapes.get(path)
        if full is None:
            raise ConfigError(f"import: moejax has no parameter {'/'.join(map(str, path))} "
                              f"for {rule.name.format(layer=layer, expert='*')}")
        one = full[1:] if slot is not None else full          # one layer of a stack
        if rule.experts or rule.shared:
            count, one_expert = one[0], one[1:]
            names = ([rule.name.format(layer=layer, expert=e) for e in range(count)]
                     if rule.experts else [rule.name.format(layer=layer)])
            value = np.stack([_convert(get, n, rule, one_expert) for n in names])
        else:
            value = _convert(get, rule.name.format(layer=layer), rule, one)
        if slot is not None:
            if path not in out:
                out[path] = np.zeros(full, value.dtype)
            out[path][slot] = value
        else:
            out[path] = value
    return out


def _convert(get, name: str, rule: Rule, shape) -> np.ndarray:
    tensor = get(name)
    if int(np.prod(tensor.shape)) != int(np.prod(shape)):
        raise ConfigError(f"import: tensor {name} is {tuple(tensor.shape)}, but the config "
                          f"needs {int(np.prod(shape))} values for it ({tuple(shape)})")
    return to_moejax(np.asarray(tensor), rule, tuple(shape))


def export_state(cfg: ModelConfig, model_type: str, state: Dict[Path, np.ndarray]
                 ) -> Dict[str, np.ndarray]:
    """{Hugging Face name: tensor} of a moejax state (inverse of import_state)."""
    out: Dict[str, np.ndarray] = {}
    for path, slot, rule, layer in parameter_sources(cfg, model_type):
        value = state[path] if slot is None else state[path][slot]
        if rule.experts:
            for e in range(value.shape[0]):
                out[rule.name.format(layer=layer, expert=e)] = to_hf(value[e], rule)
        elif rule.shared:
            out[rule.name.format(layer=layer)] = to_hf(value[0], rule)
        else:
            out[rule.name.format(layer=layer)] = to_hf(value, rule)
    return out


def unmapped(names: List[str], cfg: ModelConfig, model_type: str) -> List[str]:
    """The tensors of a checkpoint that no rule reads (sorted)."""
    used = set()
    for _, _, rule, layer in parameter_sources(cfg, model_type):
        experts = range(cfg.moe.num_experts) if rule.experts else [None]
        used.update(rule.name.format(layer=layer, expert=e) for e in experts)
    return sorted(n for n in names if n not in used)


__all__ = ["Rule", "export_state", "import_state", "rope_order", "unmapped"]
