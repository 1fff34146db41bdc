"""tf.data input: the Beam → TFRecord → tf.data round trip and the BPTT layout per replica."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from pipelines.config import DataConfig
from pipelines.prepare import prepare
from preprocessing.input_fns import bptt_dataset_fn, bptt_layout, lm_token_stream, read_split
from preprocessing.manifest import DataError, check_compatible, load_manifest
from preprocessing.vocab import EOS_ID, Vocabulary

CORPUS = ["the cat sat on the mat", "the dog sat", "a cat and a dog", "on the mat the cat sat", "the end"] * 8


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("roundtrip")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(f"{line} {i}" for i, line in enumerate(CORPUS)) + "\n", encoding="utf-8")
    config = DataConfig(dataset="text", files=[str(corpus)], output_dir=str(root / "out"), split={"valid": 0.2, "test": 0.2})
    return Path(prepare(config)), CORPUS


def test_beam_to_tfrecord_to_tfdata_round_trip(prepared):
    data_dir, corpus = prepared
    manifest = load_manifest(data_dir)
    vocab = Vocabulary.load(data_dir / manifest["vocab"]["path"])
    total = 0
    for split in ("train", "valid", "test"):
        examples = list(read_split(data_dir, split).as_numpy_iterator())
        assert len(examples) == manifest["splits"][split]["examples"]
        tokens = sum(len(e["ids"]) for e in examples)
        assert tokens == manifest["splits"][split]["tokens"]
        total += len(examples)
        decoded = [" ".join(vocab.decode(e["ids"][:-1])) for e in examples]
        assert all(e["ids"][-1] == EOS_ID for e in examples)
        # Corpus order: the trailing line number increases; every train token is in the vocabulary.
        numbers = [int(line.split()[-1]) if line.split()[-1].isdigit() else None for line in decoded]
        if split == "train":
            assert None not in numbers and numbers == sorted(numbers)
            for line in decoded:
                assert line == f"{CORPUS[int(line.split()[-1])]} {line.split()[-1]}"
    assert total == len(corpus)


def test_lm_token_stream_concatenates_lines_in_order(prepared):
    data_dir, _ = prepared
    stream = lm_token_stream(data_dir, "train")
    lines = [e["ids"] for e in read_split(data_dir, "train").as_numpy_iterator()]
    np.testing.assert_array_equal(stream, np.concatenate(lines))
    assert stream.dtype == np.int32


def test_manifest_mismatch_is_refused(prepared):
    data_dir, _ = prepared
    manifest = load_manifest(data_dir)
    with pytest.raises(DataError, match="task 'lm'.*'tagging'"):
        check_compatible(manifest, task="tagging")
    vocab = Vocabulary.load(data_dir / manifest["vocab"]["path"]).tokens
    check_compatible(manifest, task="lm", vocabulary=vocab)  # the data's own vocabulary passes
    with pytest.raises(DataError, match="vocabulary has"):
        check_compatible(manifest, task="lm", vocabulary=vocab + ["extra"])
    swapped = vocab[:4] + [vocab[5], vocab[4]] + vocab[6:]
    with pytest.raises(DataError, match="different contents"):
        check_compatible(manifest, task="lm", vocabulary=swapped)
    with pytest.raises(DataError, match="no manifest"):
        load_manifest(data_dir / "nope")


def test_bptt_layout_rows_and_windows():
    layout = bptt_layout(np.arange(41), num_streams=4, bptt=3)
    assert layout.inputs.shape == (4, 9) and layout.num_windows == 3
    np.testing.assert_array_equal(layout.inputs[1], np.arange(10, 19))
    np.testing.assert_array_equal(layout.targets[1], np.arange(11, 20))
    windows = list(layout.windows(drop_remainder=False))
    assert sum(t.size for _, t in windows) == layout.num_targets == 36
    with pytest.raises(ValueError, match="too short"):
        bptt_layout(np.arange(5), num_streams=4, bptt=3)


def test_each_replica_always_gets_the_same_rows():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")[:2]]
    strategy = tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    layout = bptt_layout(np.arange(4 * 13), num_streams=4, bptt=3)
    dataset = strategy.distribute_datasets_from_function(bptt_dataset_fn(layout))
    for k, batch in enumerate(dataset):
        per_replica = [x.numpy() for x in strategy.experimental_local_results(batch["ids"])]
        for r, ids in enumerate(per_replica):
            np.testing.assert_array_equal(ids, layout.inputs[2 * r : 2 * r + 2, 3 * k : 3 * k + 3])
    assert k + 1 == layout.num_windows


def test_skip_windows_resumes_mid_epoch():
    layout = bptt_layout(np.arange(60), num_streams=2, bptt=4)
    full = [b["ids"].numpy() for b in bptt_dataset_fn(layout)()]
    resumed = [b["ids"].numpy() for b in bptt_dataset_fn(layout, skip_windows=3)()]
    assert len(resumed) == len(full) - 3
    np.testing.assert_array_equal(np.stack(resumed), np.stack(full[3:]))
    shuffled = [b["ids"].numpy()[0, 0] for b in bptt_dataset_fn(layout, shuffle_windows=True, seed=1)()]
    assert sorted(shuffled) == [b[0, 0] for b in full] and shuffled != [b[0, 0] for b in full]
