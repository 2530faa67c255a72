"""T5 span corruption and causal-LM chunking against the paper's definition and T5's numbers,
plus the wikitext stripper on hand-written markup."""

import numpy as np
import pytest

from moejax.data import objectives
from moejax.data.wikitext import strip_wikitext

VOCAB = 359
EOS = 1


def reconstruct(inputs, targets, vocab=VOCAB, base=259):
    """Plain loop: put each sentinel's target tokens back in place of it in the inputs."""
    assert inputs[-1] == EOS and targets[-1] == EOS
    spans, current = {}, None
    for t in targets[:-1]:
        if t >= base:
            current = int(t)
            spans[current] = []
        else:
            spans[current].append(int(t))
    out = []
    for t in inputs[:-1]:
        out.extend(spans.pop(int(t)) if t >= base else [int(t)])
    return out, spans


@pytest.mark.parametrize("inputs_length,raw,targets", [(512, 568, 114), (64, 70, 14)])
def test_span_budget_matches_t5_random_spans_helper(inputs_length, raw, targets):
    # T5 (t5.data.preprocessors.random_spans_helper): 512 inputs -> 568 tokens, 114 targets.
    assert objectives.span_corruption_budget(inputs_length) == (raw, targets)


def test_span_corruption_reconstructs_and_uses_descending_sentinels():
    rng = np.random.default_rng(0)
    for n in [2, 3, 5, 20, 100, 568]:
        for _ in range(20):
            tokens = rng.integers(3, 259, n).astype(np.int32)
            example = objectives.span_corruption(tokens, rng, eos_id=EOS, vocab_size=VOCAB)
            rebuilt, leftover = reconstruct(example["inputs"], example["targets"])
            assert rebuilt == tokens.tolist()
            assert all(v == [] for v in leftover.values())   # at most a trailing empty sentinel
            sentinels = [t for t in example["inputs"] if t >= 259]
            assert sentinels == list(range(VOCAB - 1, VOCAB - 1 - len(sentinels), -1))
            assert len(sentinels) >= 1
            if n == 568:
                assert len(example["inputs"]) <= 512 and len(example["targets"]) <= 114


def test_span_corruption_noise_density_and_mean_span_length():
    rng = np.random.default_rng(1)
    noise, spans, total = 0, 0, 0
    lengths = []
    for _ in range(400):
        n = 568
        mask = objectives.random_spans_noise_mask(n, 0.15, 3.0, rng)
        assert not mask[0] and mask[-1]                      # starts clean, ends with noise
        starts = mask & ~np.concatenate([[False], mask[:-1]])
        noise += mask.sum()
        spans += starts.sum()
        total += n
        # Span lengths by a plain loop.
        run = 0
        for m in list(mask) + [False]:
            if m:
                run += 1
            elif run:
                lengths.append(run)
                run = 0
    assert abs(noise / total - 0.15) < 0.005
    assert abs(noise / spans - 3.0) < 0.1
    assert abs(np.mean(lengths) - 3.0) < 0.1 and max(lengths) > 3    # random, not fixed length


def test_every_chunk_fits_the_budget():
    for inputs_length in (19, 32, 64, 128, 512):
        raw, targets_length = objectives.span_corruption_budget(inputs_length)
        for n in range(2, raw + 1):
            mask = objectives.random_spans_noise_mask(n, 0.15, 3.0, np.random.default_rng(n))
            spans = (mask & ~np.concatenate([[False], mask[:-1]])).sum()
            assert n - mask.sum() + spans + 1 <= inputs_length
            assert mask.sum() + spans + 1 <= targets_length


def test_span_corruption_chunks_are_near_equal_and_cover():
    tokens = np.arange(1000, dtype=np.int32)
    chunks = objectives.span_corruption_chunks(tokens, 568)
    assert [len(c) for c in chunks] == [500, 500]
    assert np.concatenate(chunks).tolist() == tokens.tolist()
    assert objectives.span_corruption_chunks(np.array([5]), 568) == []


def test_causal_lm_chunks_append_eos_and_cut_at_seq_length():
    chunks = objectives.causal_lm_chunks(np.arange(10, 20), EOS, 4)
    assert [c.tolist() for c in chunks] == [[10, 11, 12, 13], [14, 15, 16, 17], [18, 19, EOS]]


def test_strip_wikitext_keeps_prose_and_drops_markup():
    wikitext = """{{Infobox person|name=Ada|birth={{birth date|1815|12|10}}}}
'''Augusta Ada King''' was an [[England|English]] [[mathematician]].<ref>{{cite book|title=X}}</ref>
She worked on the [[Analytical Engine]]<ref name="a"/> of [[Charles Babbage]].
[[File:Ada.jpg|thumb|A portrait of [[Ada Lovelace|Ada]]]]
{| class="wikitable"
| a || b
|}
== Early life ==
* Born in [http://example.org London].
<!-- a comment -->
== References ==
{{reflist}}
[[Category:Mathematicians]]
"""
    assert strip_wikitext(wikitext) == (
        "Augusta Ada King was an English mathematician. She worked on the Analytical Engine of "
        "Charles Babbage.\n\nEarly life\n\nBorn in London.")
