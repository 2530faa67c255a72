r"""A workdir's checkpoint as a Hugging Face model directory (config.json + model.safetensors).

    python -m experiments.export_hf --workdir=W --out_dir=DIR [--step=N]

The stored config must match one of the layouts import_hf reads (Mixtral, OLMoE, Qwen2-MoE,
Qwen3-MoE, DeepSeek-V2, DeepSeek-V3: moejax/checkpoints/hf_config.py); transformers then
loads DIR with from_pretrained. Weights are written in float32.
"""

from __future__ import annotations

import jax
from absl import flags

from experiments import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir with checkpoints.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "The Hugging Face model directory to write.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.mark_flags_as_required(["workdir", "out_dir"])


def main(argv):
    del argv
    from absl import logging
    logging.set_verbosity(logging.WARNING)     # orbax logs every file it writes at INFO
    from moejax.checkpoints import hf_config, hf_io, info
    from moejax.checkpoints.restore import restore_model
    from moejax.train.config import resolve
    from moejax.train.mesh import training_mesh
    from moejax.train.state_memory import vocab_size
    step = info.choose_step(_WORKDIR.value, _STEP.value)
    config = info.read_config(_WORKDIR.value, step)
    hf_config.model_type_of(dict(config.model.items()), dict(config.moe.items()))
    model_cfg = resolve(config, vocab_size(config))
    mesh = training_mesh(config, model_cfg)
    with jax.set_mesh(mesh):
        model = restore_model(_WORKDIR.value, step, config, model_cfg, mesh)
    hf = hf_io.export_hf_dir(model, model_cfg, config, _OUT_DIR.value)
    print(f"wrote {_OUT_DIR.value} ({hf['model_type']}, step {step})")


if __name__ == "__main__":
    cli.run(main)
