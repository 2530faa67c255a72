r"""A Hugging Face MoE model directory into a trainer workdir (step 0), weights and all.

    python -m experiments.import_hf --hf_dir=DIR --workdir=W \
        [--config=configs/open/<family>.py:<model> [--config.* ...]]

DIR holds config.json and the weights as safetensors (one file or shards): Mixtral, OLMoE,
Qwen1.5/Qwen2-MoE, Qwen3-MoE, DeepSeek-V2 and DeepSeek-V3 layouts (moejax/checkpoints/
hf_config.py). Nothing is downloaded. The moejax architecture is read from config.json; with
--config it must equal that config's (one line names the first field that differs), and the
config's training sections are kept, so `python -m experiments.train` with the same --config
and --workdir continues training the imported model. Without --config, the training sections
are the decoder families' paper defaults (C4 in tfds); SentencePiece models bring their
tokenizer (DIR/tokenizer.model is used when present).

The workdir then works with train, evaluate, sample and inspect_checkpoint (and its config
with the memory and AOT tools); `python -m experiments.export_hf` writes it back.
"""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from experiments import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<family>.py:<size> the model "
                                          "must match (optional)", lock_config=True)
_HF_DIR = flags.DEFINE_string("hf_dir", None, "A Hugging Face model directory.")
_WORKDIR = flags.DEFINE_string("workdir", None, "A new workdir.")
flags.mark_flags_as_required(["hf_dir", "workdir"])

# fields where a --config may differ from config.json: training settings, not architecture
FREE_MOE_FIELDS = ("capacity_factor", "eval_capacity_factor", "load_balance_loss",
                   "router_z_loss", "sequence_balance_loss", "bias_update_rate", "jitter_eps",
                   "expert_dropout", "dtype", "router_dtype", "group_size", "grouped_matmul",
                   "block_size", "dropless_all_to_all", "router_init_std", "expert_init_scale",
                   "min_capacity")


def experiment_config(architecture, given):
    """The ConfigDict to write: `given` (checked against `architecture`) or the defaults."""
    from configs.open.architecture import from_fields
    from moejax.errors import check
    if given is None:
        return from_fields(architecture)
    if given.model.vocab_size is None:          # the tokenizer's: the model's must cover it
        given.model.vocab_size = architecture["model"]["vocab_size"]
    for section, free in (("model", ()), ("moe", FREE_MOE_FIELDS)):
        for name, value in architecture[section].items():
            if name in free:
                continue
            mine = given[section][name]
            mine = tuple(mine) if isinstance(mine, list) else mine
            check(mine == value, f"import: --config {section}.{name}={mine!r} but the model "
                                 f"directory's config.json gives {value!r}")
    return given


def main(argv):
    del argv
    from absl import logging
    logging.set_verbosity(logging.WARNING)     # orbax logs every file it writes at INFO
    from moejax.checkpoints import hf_config, hf_io
    from moejax.train.config import resolve
    hf = hf_io.read_hf_dir(_HF_DIR.value)
    architecture = hf_config.to_moejax(hf.config)
    config = experiment_config(architecture, _CONFIG.value)
    spm = os.path.join(_HF_DIR.value, "tokenizer.model")
    if _CONFIG.value is None and os.path.exists(spm):
        config.data.update(tokenizer="sentencepiece", spm_model_path=spm)
    model_cfg = resolve(config, config.model.vocab_size)
    print(f"wrote {hf_io.write_workdir(config, model_cfg, hf, _WORKDIR.value)}")


if __name__ == "__main__":
    cli.run(main)
