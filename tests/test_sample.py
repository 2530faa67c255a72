"""experiments/sample.py: prompts in and text out, for both architectures."""

import os
import re
import subprocess
import sys

import pytest

from experiments import config_files
from experiments.prompts import decode_text, encode_prompt
from moejax.data.tokenizers import ByteTokenizer
from moejax.train import trainer
from test_train import ROOT, micro


def test_span_prompts_become_sentinels_and_back():
    tok = ByteTokenizer(num_extra_ids=10)
    ids = encode_prompt("ab<X>c<extra_id_5>d", tok, encoder_decoder=True)
    want = [*tok.encode("ab"), tok.sentinel_id(0), *tok.encode("c"), tok.sentinel_id(5),
            *tok.encode("d"), tok.eos_id]
    assert ids.tolist() == [int(i) for i in want]
    out = [tok.sentinel_id(0), *tok.encode("xy"), tok.sentinel_id(1), *tok.encode("z"),
           tok.eos_id, *tok.encode("ignored")]
    assert decode_text(out, tok, encoder_decoder=True) == "<extra_id_0>xy<extra_id_1>z"
    assert decode_text([*tok.encode("hi"), tok.eos_id, 70], tok, encoder_decoder=False) == "hi"


@pytest.fixture(scope="module")
def glam_run(data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("glam_run"))
    trainer.train_and_evaluate(micro("glam", data_dir, steps=2), workdir)
    return workdir


def test_sample_continues_the_prompt_and_shows_experts(glam_run):
    done = subprocess.run(
        [sys.executable, "-m", "experiments.sample", f"--workdir={glam_run}",
         "--prompt=In the beginning", "--max_new_tokens=6", "--temperature=0",
         "--show_experts"], cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    text = done.stdout.split("\n---")[0]
    assert text.startswith("In the beginning")
    # tokens 0..4 were fed back (the last one never is); GLaM routes each to 2 of its E experts
    micro_e = config_files.load("glam", "tiny").moe.num_experts
    shown = [line for line in done.stderr.splitlines() if line.startswith("token ")]
    assert [line.split()[1] for line in shown] == ["0", "1", "2", "3", "4"]
    for line in shown:
        layers = re.findall(r"(decoder layer \d+) \[([\d, ]*)\]", line)
        assert [name for name, _ in layers] == ["decoder layer 1"]        # micro GLaM's one
        for _, chosen in layers:
            experts = [int(e) for e in chosen.split(", ")]
            assert len(set(experts)) == 2 and max(experts) < micro_e


def test_bad_sampling_flags_are_one_line(glam_run):
    done = subprocess.run(
        [sys.executable, "-m", "experiments.sample", f"--workdir={glam_run}", "--prompt=x",
         "--num_samples=2", "--show_experts"], cwd=ROOT, capture_output=True, text=True,
        timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: --show_experts needs --num_samples=1"
