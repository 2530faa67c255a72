"""Published MoE architectures as configs, and their tiny twins.

Each family file in configs/open/ holds a table of models: the `model` and `moe` fields that
make its published architecture (names are ModelConfig / MoeConfig fields, values from the
papers and model cards cited there) and its published parameter counts (PUBLISHED, which
`python -m experiments.params` prints beside the counts from shapes). A config argument names
a model (`configs/open/mixtral.py:8x7b`) or its tiny twin (`:8x7b_tiny`; `:tiny` is the first
model's twin):

- The published size sets the architecture, with the vocabulary size of the model's own
  tokenizer; its training section is the family configs' paper default (C4 in tfds,
  Adafactor), whose T5 SentencePiece model is not the model's tokenizer: give yours
  (--config.data.spm_model_path) to train it.
- The tiny twin keeps every structural choice (attention kind, grouped-query ratio, QK norm,
  biases, the pattern of dense and MoE layers, shared experts and their gate, the router and
  its gate order, scaling and groups, activations, tied embeddings) and shrinks every width,
  depth and count (d_model 64, heads of 16, at most 16 experts and k ≤ 4), so it trains on
  the embedded English corpus on a 2-core CPU in minutes (the tiny regimes of
  configs/common.py: bytes for decoders, the shipped SentencePiece model for T5), and tests
  run the same code paths as the published model.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from configs import common


UNITS = {"T": 1e12, "B": 1e9, "M": 1e6}


@dataclasses.dataclass(frozen=True)
class Published:
    """A model's published parameter counts as written ('46.7B', '1.04T'; active None where
    none is published) and where they are stated; `note` says what they include."""
    total: str
    active: str | None
    source: str
    note: str = ""


def figure(text: str | None) -> tuple[float, float] | None:
    """'46.7B' -> (46.7e9, 0.1e9): the value and the step of its last written digit."""
    if text is None:
        return None
    number, unit = text[:-1], text[-1]
    decimals = len(number.partition(".")[2])
    return float(number) * UNITS[unit], 10.0 ** -decimals * UNITS[unit]


def agrees(ours: float, text: str | None, tolerance: float = 0.005) -> bool | None:
    """Whether a count matches a published figure: within `tolerance` of it, or written the
    same at its precision, rounded or truncated (ours − published in [−step/2, step))."""
    parsed = figure(text)
    if parsed is None:
        return None
    value, step = parsed
    return abs(ours / value - 1) <= tolerance or -step / 2 <= ours - value < step


TINY = "_tiny"
TINY_D_MODEL = 64
TINY_HEAD_DIM = 16
TINY_LAYERS = 4
TINY_MAX_EXPERTS = 16
TINY_MAX_K = 4


def _round8(x: float) -> int:
    return max(8, int(round(x / 8)) * 8)


def tiny_twin(arch: Mapping) -> dict:
    """The same architecture with small widths and counts (see the module docstring)."""
    model, moe = dict(arch["model"]), dict(arch.get("moe", {}))
    scale = TINY_D_MODEL / model["d_model"]
    heads, kv_heads = model["num_heads"], model.get("num_kv_heads")
    ratio = heads // kv_heads if kv_heads else 1          # query heads per key/value head
    model.update(d_model=TINY_D_MODEL, vocab_size=None, d_ff=_round8(model["d_ff"] * scale),
                 num_heads=4 if ratio == 1 else ratio,
                 num_kv_heads=None if kv_heads is None else 1, head_dim=TINY_HEAD_DIM)
    if model.get("attention") == "mla":
        model.update(q_lora_rank=32 if model.get("q_lora_rank") else 0, kv_lora_rank=16,
                     qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16)
    depth = "num_layers" if model.get("arch", "decoder") == "decoder" else "num_encoder_layers"
    layers = model[depth]
    if model.get("moe_layout") in ("top", "bottom"):       # the first (last) layers dense
        dense = layers - model["num_moe_layers"]
        model["num_moe_layers"] = TINY_LAYERS - min(dense, 1)
    if depth == "num_layers":
        model["num_layers"] = TINY_LAYERS
    else:
        every = model.get("moe_every", 1)
        model.update(num_encoder_layers=max(2, every), num_decoder_layers=max(2, every))
    if moe:
        experts = min(moe["num_experts"], TINY_MAX_EXPERTS)
        k = min(moe.get("num_selected_experts", 1), TINY_MAX_K)
        moe.update(num_experts=experts, num_selected_experts=k,
                   hidden_dim=_round8(moe["hidden_dim"] * scale))
        if moe.get("shared_hidden_dim"):
            moe["shared_hidden_dim"] = _round8(moe["shared_hidden_dim"] * scale)
        groups = moe.get("num_expert_groups", 1)
        if groups > 1:
            tiny_groups = min(groups, 4)
            chosen = max(1, round(moe["num_selected_groups"] * tiny_groups / groups))
            while experts // tiny_groups * chosen < k:      # the chosen groups must hold k
                chosen += 1
            moe.update(num_expert_groups=tiny_groups, num_selected_groups=chosen)
    return {"model": model, "moe": moe}


def get_config(arg: str, models: Mapping[str, Mapping]):
    """The ConfigDict of models[arg] (published size) or of its tiny twin (arg + '_tiny', or
    'tiny' for the first model's)."""
    if arg == "tiny":
        arg = next(iter(models)) + TINY
    name = arg[:-len(TINY)] if arg.endswith(TINY) else arg
    if name not in models:
        choices = [m for n in models for m in (n, n + TINY)]
        raise ValueError(f"config size {arg!r} is not one of tiny, {', '.join(choices)}")
    tiny = arg.endswith(TINY)
    return from_fields(tiny_twin(models[name]) if tiny else models[name], tiny=tiny)


def from_fields(arch: Mapping, *, tiny: bool = False):
    """The ConfigDict of an architecture's `model` and `moe` fields, with the tiny CPU
    training regime or the families' paper defaults (C4 in tfds, Adafactor)."""
    config = common.base()
    config.model.update(arch["model"])
    config.moe.update(arch.get("moe", {}))
    decoder = config.model.arch == "decoder"
    config.moe.causal = decoder
    if tiny and decoder:
        config.data.objective = "causal_lm"
        common.tiny_training(config, common.DECODER_TINY_BATCH)
    elif tiny:
        common.t5_tiny_training(config)
    elif decoder:
        common.decoder_paper_training(config)
    else:
        common.t5_paper_training(config)
    return config
