"""The grain pipeline on a small synthetic array_record dataset, checked against independent
computations: expected chunks and segments are recomputed here from the raw document texts
(UTF-8 bytes + 3, EOS = 1), never taken from the library.
"""

import collections
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from moejax.data import default_data_config, make_pipeline

EOS = 1
BYTE_OFFSET = 3
NUM_EXTRA_IDS = 100
BASE_VOCAB = 3 + 256
VOCAB = BASE_VOCAB + NUM_EXTRA_IDS
WORDS = ("alpha", "beta", "gamma", "délta", "epsilon", "zeta", "ēta", "theta", "iota", "kappa",
         "lambda", "mu—nu", "xi", "omicron", "pi")
NUM_TRAIN, NUM_VALIDATION = 150, 30


def make_document(i: int) -> str:
    """Document i: a unique tag then 3..70 pseudo-random words (some non-ASCII)."""
    rng = np.random.default_rng(1000 + i)
    words = [WORDS[k] for k in rng.integers(0, len(WORDS), rng.integers(3, 71))]
    return f"<doc{i:04d}> " + " ".join(words)


class MoejaxTestDocs(tfds.core.GeneratorBasedBuilder):
    """Synthetic documents: train 0..149, validation 150..179."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self, features=tfds.features.FeaturesDict({"text": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, NUM_TRAIN),
                "validation": self._generate_examples(NUM_TRAIN, NUM_TRAIN + NUM_VALIDATION)}

    def _generate_examples(self, start, stop):
        for i in range(start, stop):
            yield i, {"text": make_document(i)}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tfds"))
    MoejaxTestDocs(data_dir=path, file_format="array_record").download_and_prepare(
        file_format="array_record")
    return path


def make_config(data_dir, **overrides):
    config = default_data_config()
    config.tfds_name = "moejax_test_docs"
    config.data_dir = data_dir
    config.seq_length = 64
    config.batch_size = 4
    config.shuffle_buffer_size = 16
    config.num_packing_bins = 8
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def doc_tokens(i):
    return [b + BYTE_OFFSET for b in make_document(i).encode("utf-8")]


def take(pipeline, n):
    return [next(pipeline) for _ in range(n)]


def all_batches(pipeline):
    return list(pipeline)


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def segments(tokens, segment_ids):
    """{segment id: tokens} of one packed row, by a plain loop."""
    out = collections.OrderedDict()
    for t, s in zip(tokens.tolist(), segment_ids.tolist()):
        if s:
            out.setdefault(s, []).append(t)
    return out


# --- determinism and checkpointing -------------------------------------------------------------

@pytest.mark.parametrize("objective,seq_length", [("causal_lm", 64), ("span_corruption", 64)])
def test_same_seed_same_batches_other_seed_other_batches(data_dir, objective, seq_length):
    config = make_config(data_dir, objective=objective, seq_length=seq_length)
    first = take(make_pipeline(config, split="train", seed=7), 6)
    again = take(make_pipeline(config, split="train", seed=7), 6)
    other = take(make_pipeline(config, split="train", seed=8), 6)
    assert_batches_equal(first, again)
    key = "targets" if objective == "causal_lm" else "decoder_target_tokens"
    assert any(not np.array_equal(a[key], b[key]) for a, b in zip(first, other))


@pytest.mark.parametrize("objective", ["causal_lm", "span_corruption"])
@pytest.mark.parametrize("num_before", [1, 5, 13])
def test_restored_state_resumes_exactly(data_dir, objective, num_before):
    config = make_config(data_dir, objective=objective)
    uninterrupted = make_pipeline(config, split="train", seed=3, num_epochs=3)
    take(uninterrupted, num_before)
    state = json.loads(json.dumps(uninterrupted.get_state()))   # as a checkpoint stores it
    expected = take(uninterrupted, 12)
    resumed = make_pipeline(config, split="train", seed=3, num_epochs=3)
    resumed.set_state(state)
    assert_batches_equal(take(resumed, 12), expected)


def test_restored_state_after_epoch_boundary(data_dir):
    config = make_config(data_dir)
    pipeline = make_pipeline(config, split="validation", seed=1, num_epochs=2)
    one_epoch = len(all_batches(make_pipeline(config, split="validation", seed=1, num_epochs=1)))
    take(pipeline, one_epoch + 1)
    state = pipeline.get_state()
    rest = all_batches(pipeline)
    resumed = make_pipeline(config, split="validation", seed=1, num_epochs=2)
    resumed.set_state(state)
    assert_batches_equal(all_batches(resumed), rest)
    assert len(rest) >= 1


# --- packing ------------------------------------------------------------------------------------

def test_causal_lm_packing_segments_positions_and_chunks(data_dir):
    seq_length = 64
    config = make_config(data_dir, seq_length=seq_length)
    batches = all_batches(make_pipeline(config, split="train", seed=0, num_epochs=1))
    found = collections.Counter()
    for batch in batches:
        assert set(batch) == {"inputs", "targets", "segment_ids", "positions", "loss_mask"}
        for key, value in batch.items():
            assert value.shape == (4, seq_length), key
        for row in range(4):
            seg = batch["segment_ids"][row]
            pos = batch["positions"][row]
            tgt = batch["targets"][row]
            inp = batch["inputs"][row]
            # Independent recomputation: segment k starts where the id changes; ids count 1, 2..
            # in order; padding (0) only at the end; positions restart at 0 per segment.
            expected_pos, expected_inputs, current, next_id, padding = [], [], None, 1, False
            for j in range(seq_length):
                if seg[j] == 0:
                    padding = True
                    expected_pos.append(0)
                    expected_inputs.append(0)
                    continue
                assert not padding, "a segment after padding"
                if seg[j] != current:
                    assert seg[j] == next_id
                    current, next_id, start = seg[j], next_id + 1, j
                expected_pos.append(j - start)
                expected_inputs.append(0 if j == start else int(tgt[j - 1]))
            np.testing.assert_array_equal(pos, expected_pos)
            np.testing.assert_array_equal(inp, expected_inputs)
            np.testing.assert_array_equal(batch["loss_mask"][row], (seg > 0).astype(np.float32))
            np.testing.assert_array_equal(tgt[seg == 0], 0)
            # The attention mask allowed by the segment ids never links two documents.
            same_segment = (seg[:, None] == seg[None, :]) & (seg[:, None] > 0)
            for s, tokens in segments(tgt, seg).items():
                found[tuple(tokens)] += 1
                members = np.nonzero(seg == s)[0]
                assert same_segment[np.ix_(members, members)].all()
                assert not same_segment[np.ix_(members, np.nonzero(seg != s)[0])].any()
    # Every segment is one chunk of one document: the chunks of (bytes + EOS) cut every 64.
    expected = collections.Counter()
    for i in range(NUM_TRAIN):
        tokens = doc_tokens(i) + [EOS]
        for k in range(0, len(tokens), seq_length):
            expected[tuple(tokens[k:k + seq_length])] += 1
    assert found == expected


# --- span corruption through the pipeline -------------------------------------------------------

def reconstruct(inputs, targets):
    """Original tokens from T5 span-corruption inputs/targets (sentinels >= BASE_VOCAB)."""
    assert inputs[-1] == EOS and targets[-1] == EOS
    replaced, current = {}, None
    for t in targets[:-1]:
        if t >= BASE_VOCAB:
            current = t
            replaced[current] = []
        else:
            replaced[current].append(t)
    out = []
    for t in inputs[:-1]:
        out.extend(replaced.pop(t) if t >= BASE_VOCAB else [t])
    return out, replaced


def test_span_corruption_pipeline_reconstructs_every_document(data_dir):
    config = make_config(data_dir, objective="span_corruption", seq_length=64)
    batches = all_batches(make_pipeline(config, split="train", seed=0, num_epochs=1))
    pieces = collections.defaultdict(list)         # reconstructed chunk -> occurrences
    for batch in batches:
        assert batch["encoder_input_tokens"].shape == (4, 64)
        decoder_length = batch["decoder_target_tokens"].shape[1]
        assert decoder_length == 14                # T5 random_spans_helper: 10 + 3 + EOS
        for row in range(4):
            enc = segments(batch["encoder_input_tokens"][row], batch["encoder_segment_ids"][row])
            dec = segments(batch["decoder_target_tokens"][row], batch["decoder_segment_ids"][row])
            assert list(enc) == list(dec)           # one example = one segment id on both sides
            for s in enc:
                tokens, leftover = reconstruct(enc[s], dec[s])
                assert not leftover or list(leftover.values()) == [[]]
                sentinels = [t for t in enc[s] if t >= BASE_VOCAB]
                assert sentinels == list(range(VOCAB - 1, VOCAB - 1 - len(sentinels), -1))
                pieces[bytes(t - BYTE_OFFSET for t in tokens)].append(None)
            dec_seg = batch["decoder_segment_ids"][row]
            dec_pos = batch["decoder_positions"][row]
            tgt = batch["decoder_target_tokens"][row]
            shifted = np.where(dec_pos == 0, 0, np.concatenate([[0], tgt[:-1]]))
            np.testing.assert_array_equal(batch["decoder_input_tokens"][row], shifted)
            np.testing.assert_array_equal(batch["decoder_loss_weights"][row], dec_seg > 0)
    # Independently: T5's random_spans_helper gives 70 raw tokens for 64 inputs (70 - 10 noise
    # + 3 sentinels + EOS = 64), and a document of n tokens is cut into ceil(n / 70) near-equal
    # chunks. The reconstructed chunks must be exactly those chunks of the original documents.
    expected = collections.Counter()
    for i in range(NUM_TRAIN):
        raw = make_document(i).encode("utf-8")
        count = -(-len(raw) // 70)
        start = 0                     # near-equal: the first n % count chunks one longer
        base, extra = divmod(len(raw), count)
        for k in range(count):
            size = base + (1 if k < extra else 0)
            expected[raw[start:start + size]] += 1
            start += size
    assert collections.Counter({k: len(v) for k, v in pieces.items()}) == expected


# --- sharding and finite passes -----------------------------------------------------------------

def document_tags(batches):
    tags = []
    for batch in batches:
        for row in range(batch["targets"].shape[0]):
            for tokens in segments(batch["targets"][row], batch["segment_ids"][row]).values():
                text = bytes(t - BYTE_OFFSET for t in tokens if t >= BYTE_OFFSET).decode()
                tags.append(text[:9])
    return tags


@pytest.mark.parametrize("process_count", [1, 3])
def test_process_shards_are_disjoint_and_cover_the_split(data_dir, process_count):
    config = make_config(data_dir, seq_length=512, batch_size=6)   # every document fits a row
    shards = []
    for index in range(process_count):
        pipeline = make_pipeline(config, split="train", seed=5, process_index=index,
                                 process_count=process_count, num_epochs=1)
        batches = all_batches(pipeline)
        assert all(b["targets"].shape == (6 // process_count, 512) for b in batches)
        shards.append(document_tags(batches))
    for tags in shards:
        assert len(tags) == len(set(tags))          # each document once per shard
    seen = [t for tags in shards for t in tags]
    assert len(seen) == len(set(seen))              # shards are disjoint
    assert set(seen) == {f"<doc{i:04d}>" for i in range(NUM_TRAIN)}


def test_validation_pass_pads_the_last_batch_with_empty_rows(data_dir):
    config = make_config(data_dir, seq_length=512, batch_size=8)
    batches = all_batches(make_pipeline(config, split="validation", seed=0, num_epochs=1))
    assert all(b["targets"].shape == (8, 512) for b in batches)
    rows_used = sum(int((b["segment_ids"].max(axis=1) > 0).sum()) for b in batches)
    assert rows_used < 8 * len(batches)             # 30 short documents do not fill 8-row batches
    assert sorted(document_tags(batches)) == [f"<doc{i:04d}>" for i in range(150, 180)]
