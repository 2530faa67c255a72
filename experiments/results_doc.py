r"""Gathers the reports of finished reproductions into one page (docs/RESULTS.md).

    python -m experiments.results_doc --runs=/tmp/moejax/repro --out=docs/RESULTS.md

--runs holds one directory per recipe (as `python -m experiments.reproduce --paper=NAME
--workdir=RUNS/NAME` makes them). The page starts with one line per paper claim (held / did
not hold / inconclusive at this scale), then every report with its tables and plots; the
plots are copied next to the page (docs/images/results/<recipe>_<plot>.png). --out is
required, and an existing page is overwritten only with --force. With --keep, a recipe that
--runs does not hold keeps its line and section from the existing page (so recipes run on
different machines or days can be gathered one at a time).
"""

import json
import os
import re
import shutil
import sys

from absl import flags

from configs import common
from experiments import cli
from experiments.recipes import RECIPES, runs

_RUNS = flags.DEFINE_string("runs", None, "Directory with one finished recipe per sub-directory.")
_OUT = flags.DEFINE_string("out", None, "The page to write (e.g. docs/RESULTS.md).")
_FORCE = flags.DEFINE_bool("force", False, "Overwrite --out if it exists.")
_PREAMBLE = flags.DEFINE_string("preamble", None, "Markdown file with notes on these runs, put "
                                 "after the setup paragraph.")
_KEEP = flags.DEFINE_bool("keep", False, "Keep the existing page's line and section of each "
                          "recipe that --runs does not hold.")
flags.mark_flags_as_required(["runs", "out"])


def setup() -> str:
    """The setup paragraph, from the tiny sizes in configs/common.py."""
    t5, decoder = common.T5_SIZES["tiny"], common.DECODER_SIZES["tiny"]
    tiny, lm = common.base(), common.base()
    common.t5_backbone(tiny, "tiny", num_experts={"base": 1})
    common.decoder_backbone(lm, "tiny", num_experts={"base": 1})
    optimizer = tiny.optimizer
    t5_batch, decoder_batch = common.T5_TINY_BATCH, common.DECODER_TINY_BATCH
    return (f"Each recipe below ran with one command (shown in its section) at the `tiny` size: "
            f"T5-style encoder-decoder ({t5['layers']} + {t5['layers']} layers, d_model "
            f"{t5['d_model']}, d_ff {t5['d_ff']}, {tiny.model.activation.upper()} FFNs, "
            f"batches of {t5_batch[0]} × {t5_batch[1]} tokens) or decoder-only "
            f"({decoder['layers']} layers, batches of "
            f"{decoder_batch[0]} × {decoder_batch[1]} tokens) models on the embedded English "
            f"corpus (encoder-decoders on the shipped SentencePiece model "
            f"`{tiny.data.spm_model_path}`, decoder-only models on bytes), Adafactor at a peak "
            f"learning rate of {optimizer.learning_rate:g} with T5's inverse square root "
            f"schedule, constant for the first {optimizer.warmup_steps} steps (encoder-decoders) "
            f"or {lm.optimizer.warmup_steps} (decoder-only), float32 on a 2-core CPU (XLA:CPU), "
            "seeds 0, 1 and 2 unless a recipe says otherwise. Quality claims are judged on "
            "paired 95% intervals over the seeds, and only where the recipe's validity gate "
            "passed. These are small models trained for minutes, so a claim that does not hold "
            "here may still hold at the papers' scale; every verdict says why. `--size=base` "
            "runs the same recipe at the papers' sizes on a pod.")


def section(name: str, directory: str, images_dir: str, out_dir: str) -> str:
    """A recipe's report with its headings one level down and its plots copied."""
    with open(os.path.join(directory, "report.md"), encoding="utf-8") as f:
        text = f.read()

    def copy(match):
        image = match.group(2)
        target = os.path.join(images_dir, f"{name}_{image}")
        shutil.copyfile(os.path.join(directory, image), target)
        return f"![{match.group(1)}]({os.path.relpath(target, out_dir)})"

    text = re.sub(r"!\[([^\]]*)\]\(([^)/]+\.png)\)", copy, text)
    return re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", text, flags=re.M)


def previous_page(path: str) -> dict:
    """{recipe: (its line of the outcome table, its section)} of an existing page."""
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        text = f.read()
    chunks = re.split(r"^(?=## )", text, flags=re.M)
    by_anchor = {_anchor(c.splitlines()[0][3:].strip()): c.strip() for c in chunks
                 if c.startswith("## ")}
    kept = {}
    for line in text.splitlines():
        m = re.match(r"\| \[(\w+)\]\(#([^)]+)\) \|", line)
        if m and m.group(2) in by_anchor:
            kept[m.group(1)] = (line, by_anchor[m.group(2)])
    return kept


def progress(directory: str) -> str:
    """'part-way: 13 runs finished (15 started), no verdict yet' for a recipe's workdir whose runs
    (directory/<arm>/seed_<s>, each judged finished at its own train.num_steps) have records
    but no verdict.json; '' if none has."""
    done = started = 0
    for arm in sorted(os.listdir(directory)) if os.path.isdir(directory) else ():
        for seed in sorted(os.listdir(os.path.join(directory, arm))
                           if os.path.isdir(os.path.join(directory, arm)) else ()):
            run_dir = os.path.join(directory, arm, seed)
            if not (seed.startswith("seed_") and
                    os.path.exists(os.path.join(run_dir, "metrics.jsonl"))):
                continue
            started += 1
            try:
                with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
                    steps = json.load(f)["config"]["train"]["num_steps"]
            except (OSError, ValueError, KeyError, TypeError):
                continue                                  # no budget to judge it by
            done += runs.finished(run_dir, steps)
    plural = "" if done == 1 else "s"
    return (f"part-way: {done} run{plural} finished ({started} started), no verdict yet"
            if started else "")


def main(argv):
    del argv
    if os.path.exists(_OUT.value) and not _FORCE.value:
        print(f"error: {_OUT.value} exists; add --force to overwrite it (and its plots in "
              f"images/results/ next to it)", file=sys.stderr)
        sys.exit(1)
    out_dir = os.path.dirname(os.path.abspath(_OUT.value))
    images_dir = os.path.join(out_dir, "images", "results")
    os.makedirs(images_dir, exist_ok=True)
    verdicts, sections = [], []
    kept = previous_page(_OUT.value) if _KEEP.value else {}
    for name in RECIPES:
        directory = os.path.join(_RUNS.value, name)
        path = os.path.join(directory, "verdict.json")
        partial = "" if os.path.exists(path) else progress(directory)
        if not os.path.exists(path) and not partial and name in kept:
            verdicts.append(kept[name][0])
            sections.append(kept[name][1])
            continue
        if not os.path.exists(path):
            verdicts.append(f"| {name} | {partial or 'not run yet'} | |")
            continue
        with open(path, encoding="utf-8") as f:
            v = json.load(f)
        verdicts.append(f"| [{name}](#{_anchor(v['title'])}) | **{v['outcome']}** | {v['why']} |")
        sections.append(section(name, directory, images_dir, out_dir))
    preamble = ""
    if _PREAMBLE.value:
        with open(_PREAMBLE.value, encoding="utf-8") as f:
            preamble = f.read().strip()
    parts = ["# Reproductions", setup(), preamble,
             "| recipe | outcome at this scale | why |\n|---|---|---|\n" + "\n".join(verdicts),
             *sections]
    with open(_OUT.value, "w", encoding="utf-8") as f:
        f.write("\n\n".join(p for p in parts if p) + "\n")
    print(f"wrote {_OUT.value}")


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


if __name__ == "__main__":
    cli.run(main)
