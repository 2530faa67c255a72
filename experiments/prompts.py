"""Prompts and generated text for experiments/sample.py (importing it defines no flags): T5
span-corruption prompts with <X> / <extra_id_i> marks in, sentinel-led spans out."""

from __future__ import annotations

import re
from typing import List

import numpy as np

SENTINEL = re.compile(r"<X>|<extra_id_(\d+)>")


def encode_prompt(text: str, tokenizer, encoder_decoder: bool) -> np.ndarray:
    """Prompt ids [P]. Encoder-decoder: <X> / <extra_id_i> become sentinel ids (<X>s are
    numbered in order) and EOS ends the input, as in T5's span-corruption inputs."""
    if not encoder_decoder:
        return tokenizer.encode(text)
    ids: List[int] = []
    count = 0
    for i, part in enumerate(SENTINEL.split(text)):
        # re.split with one group: text, group, text, group, ... (the group is None for <X>)
        if i % 2 == 0:
            ids += [int(t) for t in tokenizer.encode(part)] if part else []
        else:
            number = count if part is None else int(part)
            ids.append(tokenizer.sentinel_id(number))
            count += 1
    return np.asarray(ids + [tokenizer.eos_id], np.int32)


def decode_text(ids, tokenizer, encoder_decoder: bool) -> str:
    """Text of generated ids, up to the first EOS; sentinels shown as <extra_id_i>."""
    ids = [int(i) for i in ids]
    if tokenizer.eos_id in ids:
        ids = ids[:ids.index(tokenizer.eos_id)]
    if not encoder_decoder:
        return tokenizer.decode(ids)
    sentinels = {tokenizer.sentinel_id(i): i for i in range(tokenizer.num_extra_ids)}
    out, run = [], []
    for token in ids + [None]:
        if token is None or token in sentinels:
            out.append(tokenizer.decode(run))
            run = []
            if token is not None:
                out.append(f"<extra_id_{sentinels[token]}>")
        else:
            run.append(token)
    return "".join(out)
