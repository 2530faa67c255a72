r"""Text from a checkpoint: continuation for decoder-only LMs, span filling for encoder-decoders.

    python -m experiments.sample --workdir=W --prompt="And God said" [--max_new_tokens=200]
        [--temperature=0.8] [--top_k=40] [--seed=0] [--num_samples=1] [--show_experts]
        [--dispatch=dropless]
    python -m experiments.sample --workdir=W \
        --prompt="And God said, Let there be <X>: and there was light."

Restores W's checkpoint (--step, default the latest) and decodes with a key/value cache
(moejax/models/decode.py: each step runs only the new token; its logits equal the full forward
pass's). Decoder-only: the prompt is continued. Encoder-decoder (T5 span corruption): write
<X> (or <extra_id_0>, <extra_id_1>, ...) where text is missing; the model writes each
sentinel followed by the span it fills, as it was trained to.

Routing one token at a time: a decode step's routing groups hold that step's tokens only, so
a capacity-limited MoE layer has at least min_capacity slots per expert for one token per row
and drops nothing. `--dispatch=dropless` routes every token to its k experts with no capacity
at all, prompt included (token-choice routers). --show_experts prints, for each generated
token, the experts that each MoE layer sent it through (with --num_samples=1).
--temperature=0 decodes greedily. Errors are one line (`error: ...`, exit 1).
"""

from __future__ import annotations

import sys

import numpy as np
from absl import flags, logging

from experiments import cli
from experiments.prompts import decode_text, encode_prompt

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir whose checkpoint to sample from.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_PROMPT = flags.DEFINE_string("prompt", "", "Text to continue (or, for an encoder-decoder, "
                                            "text with <X> where spans are missing).")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 200, "Tokens to generate.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.8, "Sampling temperature (0: greedy).")
_TOP_K = flags.DEFINE_integer("top_k", 40, "Sample among the k most likely tokens (0: all).")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed of the draws.")
_NUM = flags.DEFINE_integer("num_samples", 1, "Samples of the same prompt (one batch).")
_SHOW = flags.DEFINE_bool("show_experts", False, "Print each generated token's experts.")
_DISPATCH = flags.DEFINE_enum("dispatch", None, ["index", "einsum", "dropless"],
                              "Override moe.dispatch for decoding (default: as trained).")
flags.mark_flags_as_required(["workdir"])

def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    import jax
    import jax.numpy as jnp

    from moejax.checkpoints import info
    from moejax.checkpoints.restore import restore_model
    from moejax.data import make_tokenizer
    from moejax.errors import ConfigError, check
    from moejax.models import decode
    from moejax.models.config import moe_layer_names
    from moejax.routing.registry import family
    from moejax.train.config import resolve
    from moejax.train.mesh import training_mesh

    try:
        check(_MAX_NEW.value >= 1, f"--max_new_tokens={_MAX_NEW.value} must be >= 1")
        check(_NUM.value >= 1, f"--num_samples={_NUM.value} must be >= 1")
        check(_TEMPERATURE.value >= 0, f"--temperature={_TEMPERATURE.value} must be >= 0")
        check(not (_SHOW.value and _NUM.value > 1), "--show_experts needs --num_samples=1")
        step = info.choose_step(_WORKDIR.value, _STEP.value)
        config = info.read_config(_WORKDIR.value, step)
        if _DISPATCH.value:
            config.moe.dispatch = _DISPATCH.value
        config.mesh.num_devices = 1                 # decoding one batch: one device
        tokenizer = make_tokenizer(config.data)
        model_cfg = resolve(config, tokenizer.vocab_size)
        encoder_decoder = model_cfg.arch == "encoder_decoder"
        check(not (model_cfg.has_moe and not family(model_cfg.moe).causal),
              f"moe.router={model_cfg.moe.router!r} routes a token by the whole sequence "
              "(not causal): it cannot decode token by token")
        prompt = encode_prompt(_PROMPT.value, tokenizer, encoder_decoder)
        check(encoder_decoder or len(prompt) >= 1, "--prompt is empty: give text to continue")
        mesh = training_mesh(config, model_cfg)
        with jax.set_mesh(mesh):
            model = restore_model(_WORKDIR.value, step, config, model_cfg, mesh)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    names = moe_layer_names(model_cfg)
    if encoder_decoder:                  # decode stats cover the decoder's MoE layers only
        names = [n for n in names if n.startswith("decoder")]

    previous = []

    def show(i, new, counts):
        """Step i's counts are those of its input: token i − 1 (step 0's, the prompt's)."""
        if _SHOW.value and counts is not None and previous:
            used = "; ".join(f"{name} {np.flatnonzero(np.asarray(c) > 0).tolist()}"
                             for name, c in zip(names, counts))
            token = previous[-1]
            text = decode_text([token], tokenizer, False) or f"<id {token}>"
            print(f"token {i - 1} {text!r}: experts {used}", file=sys.stderr)
        previous.append(int(np.asarray(new)[0]))

    batch = jnp.asarray(np.tile(prompt, (_NUM.value, 1)))
    with jax.set_mesh(mesh):
        new = decode.generate(model, batch, _MAX_NEW.value, jax.random.key(_SEED.value),
                              temperature=_TEMPERATURE.value, top_k=_TOP_K.value or None,
                              on_token=show)
    for row in np.asarray(new):
        text = decode_text(row, tokenizer, encoder_decoder)
        print(text if encoder_decoder else _PROMPT.value + text)
        print("---")


if __name__ == "__main__":
    cli.run(main)
