"""The streaming language-model input: the same windows as the in-memory layout, read from the shards."""

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from pipelines.config import DataConfig
from pipelines.prepare import prepare
from preprocessing.input_fns import bptt_dataset_fn, bptt_layout, lm_token_stream
from preprocessing.manifest import DataError, manifest_fingerprint
from preprocessing.streams import TokenStream

WORDS = "the cat sat on a mat dog and end big small red".split()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    rng = random.Random(3)
    root = tmp_path_factory.mktemp("streams")
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30))) + f" w{i % 50}" for i in range(1200)]
    (root / "c.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = DataConfig(dataset="text", files=[str(root / "c.txt")], output_dir=str(root / "out"), num_shards=7,
                        split={"valid": 0.1, "test": 0.1})
    return Path(prepare(config))


def _rewrite(directory, manifest):
    """An edited manifest, fingerprinted again (as a buggy or hostile writer would)."""
    manifest["fingerprint"] = manifest_fingerprint(manifest)
    (directory / "manifest.json").write_text(json.dumps(manifest))


def _same(a, b):
    a, b = list(a), list(b)
    assert len(a) == len(b) > 0
    for (x, y), (u, v) in zip(a, b):
        np.testing.assert_array_equal(x, u)
        np.testing.assert_array_equal(y, v)


@pytest.mark.parametrize("split,rows,bptt,block", [("train", 5, 7, 3), ("train", 13, 35, 16), ("valid", 3, 10, 1),
                                                   ("train", 1, 4, 64)])
def test_windows_equal_the_in_memory_layout(data_dir, split, rows, bptt, block):
    reference = bptt_layout(lm_token_stream(data_dir, split), rows, bptt)
    stream = TokenStream(data_dir, split, rows, bptt, block_windows=block, records_per_read=17)
    assert (stream.num_windows, stream.num_targets, stream.num_streams) == (
        reference.num_windows, reference.num_targets, reference.num_streams)
    for drop in (True, False):  # training windows, and evaluation's with the last short one
        _same(reference.windows(drop_remainder=drop), stream.windows(drop_remainder=drop))
    np.testing.assert_array_equal(stream.head(2, 9)[1], reference.head(2, 9)[1])


@pytest.mark.parametrize("skip", [0, 1, 6])
def test_a_block_of_rows_from_a_later_window_resumes_exactly(data_dir, skip):
    reference = bptt_layout(lm_token_stream(data_dir, "train"), 6, 9)
    stream = TokenStream(data_dir, "train", 6, 9, block_windows=4)
    expected = [(x[2:5], y[2:5]) for x, y in reference.windows()][skip:]
    _same(expected, stream.dataset(2, 3, skip_windows=skip).as_numpy_iterator())


def test_each_row_reads_only_the_shards_of_its_segment(data_dir):
    stream = TokenStream(data_dir, "train", 4, 5)
    assert len(stream.paths) == 7
    offsets = stream.offsets
    first, last, skip = stream._shards_for(offsets[3] + 2, offsets[5])
    assert (first, last, skip) == (3, 5, 2)
    first, last, skip = stream._shards_for(0, 1)
    assert (first, last, skip) == (0, 1, 0)


def test_two_replicas_get_the_rows_of_the_one_replica_layout(data_dir):
    devices = [d.name for d in tf.config.list_logical_devices("CPU")[:2]]  # conftest makes two
    strategy = tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    reference = bptt_layout(lm_token_stream(data_dir, "train"), 4, 6)
    stream = TokenStream(data_dir, "train", 4, 6)
    for layout in (reference, stream):
        batches = strategy.distribute_datasets_from_function(bptt_dataset_fn(layout, skip_windows=2))
        got = []
        for batch in batches:
            got.append(np.concatenate([t.numpy() for t in strategy.experimental_local_results(batch["ids"])]))
        expected = [x for x, _ in reference.windows()][2:]
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)


def test_shuffled_windows_are_the_same_for_every_reader_and_resume(data_dir):
    stream = TokenStream(data_dir, "train", 3, 5)
    full = [x for x, _ in stream.dataset(shuffle_seed=4, shuffle_buffer=50).as_numpy_iterator()]
    again = [x for x, _ in stream.dataset(shuffle_seed=4, shuffle_buffer=50).as_numpy_iterator()]
    resumed = [x for x, _ in stream.dataset(shuffle_seed=4, shuffle_buffer=50, skip_windows=7).as_numpy_iterator()]
    in_order = [x for x, _ in stream.dataset().as_numpy_iterator()]
    _same(zip(full, full), zip(again, again))
    _same(zip(full[7:], full[7:]), zip(resumed, resumed))
    assert len(full) == len(in_order) and not all(np.array_equal(a, b) for a, b in zip(full, in_order))
    assert sorted(a.tobytes() for a in full) == sorted(a.tobytes() for a in in_order)


def test_too_many_rows_for_the_split_is_a_clear_error(data_dir):
    with pytest.raises(ValueError, match="too short for"):
        TokenStream(data_dir, "valid", 100_000, 5)


def test_a_language_model_stream_refuses_other_records(data_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(data_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["features"] = {"ids": "sequence", "label": "scalar"}
    _rewrite(copy, manifest)
    with pytest.raises(DataError, match="language-model shards"):
        TokenStream(copy, "train", 2, 5, verify=False)


def test_shards_shorter_than_the_manifest_are_an_error_not_a_short_epoch(data_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(data_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    split = manifest["splits"]["train"]
    last = sorted(split["shards"])[-1]
    split["shard_info"][last]["tokens"] += 500  # the manifest now promises more ids than the shards hold
    split["tokens"] += 500
    _rewrite(copy, manifest)
    stream = TokenStream(copy, "train", 2, 5, verify=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="shards end before the token count the manifest records"):
        list(stream.windows())


def test_a_tampered_shard_is_refused_before_reading(data_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(data_dir, copy)
    shard = sorted(copy.glob("train-*"))[2]
    shard.write_bytes(shard.read_bytes()[:-3])
    with pytest.raises(DataError, match=shard.name):
        TokenStream(copy, "train", 2, 5)


# ------------------------------------------------------------------------------- example streams
@pytest.fixture(scope="module")
def tagged_dir(tmp_path_factory):
    """Tagged sentences of 1..40 words; word ``u<i>`` makes every sentence's ids unique."""
    rng = random.Random(5)
    root = tmp_path_factory.mktemp("tagged")
    lines = []
    for i in range(700):
        words = [f"{rng.choice(WORDS)}/{rng.choice(['A', 'B', 'C'])}" for _ in range(rng.randint(0, 39))]
        lines.append(" ".join([f"u{i}/U", *words]))
    (root / "t.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = DataConfig(dataset="slash_tagged", files=[str(root / "t.txt")], output_dir=str(root / "out"),
                        num_shards=5, char_features=True, split={"valid": 0.1, "test": 0.1})
    return Path(prepare(config))


def _by_ids(examples):
    return {x.tobytes(): i for i, x in enumerate(examples.ids)}


@pytest.mark.parametrize("max_length,max_chars", [(None, None), (12, 3)])
def test_example_batches_are_pad_batch_of_the_examples_they_hold(tagged_dir, max_length, max_chars):
    from preprocessing.input_fns import load_examples, pad_batch
    from preprocessing.streams import ExampleStream

    examples = load_examples(tagged_dir, "train", with_chars=True)
    stream = ExampleStream(tagged_dir, "train", with_chars=True)
    assert len(stream) == len(examples)
    index = _by_ids(examples)
    batches = list(stream.batches(8, seed=1, shuffle_buffer=64, max_length=max_length, max_chars=max_chars)
                   .as_numpy_iterator())
    assert len(batches) == len(examples) // 8
    seen = []
    for batch in batches:
        rows = []
        for ids in batch["ids"]:
            n = int((ids != 0).sum())
            full = next(i for key, i in index.items() if np.frombuffer(key, np.int32)[:n].tobytes()
                        == ids[:n].astype(np.int32).tobytes()) if max_length else index[ids[:n].astype(np.int32).tobytes()]
            rows.append(full)
        expected = pad_batch(examples, rows, max_length, max_chars)
        assert sorted(expected) == sorted(batch) == ["chars", "ids", "tags"]
        for key in expected:
            np.testing.assert_array_equal(batch[key], expected[key])
        lengths = [min(len(examples.ids[i]), max_length or 10**9) for i in rows]
        assert lengths == sorted(lengths)  # length-grouped
        seen += rows
    assert len(set(seen)) == len(seen)  # no example twice in an epoch


def test_example_batches_are_the_same_on_every_reader_and_resume_exactly(tagged_dir):
    from preprocessing.streams import ExampleStream

    stream = ExampleStream(tagged_dir, "train")
    tf.random.set_seed(123)  # the order must not depend on TensorFlow's global seed
    full = [b["ids"] for b in stream.batches(4, seed=7, shuffle_buffer=50).as_numpy_iterator()]
    tf.random.set_seed(9)
    resumed = [b["ids"] for b in stream.batches(4, seed=7, shuffle_buffer=50, skip_batches=5).as_numpy_iterator()]
    other = [b["ids"] for b in stream.batches(4, seed=8, shuffle_buffer=50).as_numpy_iterator()]
    assert len(resumed) == len(full) - 5
    for a, b in zip(full[5:], resumed):
        np.testing.assert_array_equal(a, b)
    assert any(a.shape != b.shape or not np.array_equal(a, b) for a, b in zip(full, other))


def test_two_replicas_share_each_global_example_batch(tagged_dir):
    from preprocessing.streams import ExampleStream

    devices = [d.name for d in tf.config.list_logical_devices("CPU")[:2]]
    strategy = tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    stream = ExampleStream(tagged_dir, "train")
    expected = [b["tags"] for b in stream.batches(6, seed=2).as_numpy_iterator()]
    got = [np.concatenate([t.numpy() for t in strategy.experimental_local_results(b["tags"])])
           for b in strategy.distribute_datasets_from_function(stream.dataset_fn(6, seed=2))]
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------- evaluation batches
@pytest.mark.parametrize("split,max_chars", [("train", None), ("valid", 3)])
def test_eval_batches_cover_every_example_once_padded_like_pad_batch(tagged_dir, split, max_chars):
    from preprocessing.input_fns import load_examples, pad_batch
    from preprocessing.streams import ExampleStream

    examples = load_examples(tagged_dir, split, with_chars=True)
    stream = ExampleStream(tagged_dir, split, with_chars=True, eval_window=3)
    assert len(stream.paths) > 1 and len(stream) == len(examples)
    seen = []
    for positions, lengths, batch in stream.eval_batches(7, max_chars):
        expected = pad_batch(examples, positions, None, max_chars)  # nothing cut: no max_length
        assert sorted(batch) == sorted(expected) == ["chars", "ids", "tags"]
        for key in expected:
            np.testing.assert_array_equal(batch[key], expected[key])
        np.testing.assert_array_equal(lengths, examples.lengths[positions])
        seen += positions.tolist()
    assert sorted(seen) == list(range(len(examples)))  # every example of every shard, exactly once


def test_eval_batches_sort_only_within_bounded_windows(tagged_dir):
    from preprocessing.streams import ExampleStream

    b, k = 4, 3
    window = b * k
    stream = ExampleStream(tagged_dir, "train", eval_window=k)
    # the window stage: consecutive records in corpus order, never more than W at once
    sizes = [(int(start), len(records)) for start, records in stream.eval_windows(window).as_numpy_iterator()]
    assert all(n <= window for _, n in sizes) and sum(n for _, n in sizes) == len(stream)
    assert [s for s, _ in sizes] == list(range(0, len(stream), window))
    # batches: each within one window's block of positions, the blocks in order, length-sorted inside
    blocks: dict[int, list] = {}
    order = []
    for positions, lengths, batch in stream.eval_batches(b):
        block = {int(p) // window for p in positions}
        assert len(block) == 1 and len(positions) <= b
        (block,) = block
        if not order or order[-1] != block:
            order.append(block)
        blocks.setdefault(block, []).extend(lengths.tolist())
    assert order == sorted(set(order)) == list(range(len(sizes)))  # a window's batches come together
    assert all(lengths == sorted(lengths) for lengths in blocks.values())


def test_eval_batches_of_a_split_shorter_than_its_manifest_are_an_error(tagged_dir, tmp_path):
    from preprocessing.streams import ExampleStream

    copy = tmp_path / "copy"
    shutil.copytree(tagged_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["splits"]["test"]["examples"] += 1
    _rewrite(copy, manifest)
    stream = ExampleStream(copy, "test", verify=False)
    with pytest.raises(DataError, match="read .* examples, the manifest records"):
        list(stream.eval_batches(8))


def test_head_reads_the_first_examples_in_corpus_order(tagged_dir):
    from preprocessing.input_fns import load_examples
    from preprocessing.streams import ExampleStream

    examples = load_examples(tagged_dir, "valid", with_chars=True)
    head = ExampleStream(tagged_dir, "valid", with_chars=True).head(9)
    assert len(head) == 9 and head.task == examples.task
    for i in range(9):
        np.testing.assert_array_equal(head.ids[i], examples.ids[i])
        np.testing.assert_array_equal(head.tags[i], examples.tags[i])
        assert [w.tolist() for w in head.chars[i]] == [w.tolist() for w in examples.chars[i]]
