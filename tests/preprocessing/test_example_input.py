"""Tagging / classification input: in-memory examples → length-grouped, padded batches per replica,
and the prepared-directory → :class:`Examples` round trip."""

import numpy as np
import pytest
import tensorflow as tf

from preprocessing.input_fns import (
    Examples,
    batch_indices,
    bucket_length,
    eval_batches,
    example_dataset_fn,
    load_examples,
    pad_batch,
)

LENGTHS = [5, 1, 9, 3, 7, 2, 8, 4, 6, 9, 3]  # 11 sentences, lengths 1..9, in corpus order
VOCAB, TAGS, CHARS = 20, 5, 30


def _tagging(lengths=LENGTHS, seed=0, with_chars=True):
    rng = np.random.default_rng(seed)
    ids = [rng.integers(1, VOCAB, n).astype(np.int32) for n in lengths]  # never 0: 0 is padding
    tags = [rng.integers(0, TAGS, n).astype(np.int32) for n in lengths]
    chars = None
    if with_chars:
        chars = [[rng.integers(1, CHARS, rng.integers(1, 12)).astype(np.int32) for _ in range(n)] for n in lengths]
    return Examples(task="tagging", ids=ids, tags=tags, chars=chars)


def _classification(lengths=LENGTHS, seed=1):
    rng = np.random.default_rng(seed)
    ids = [rng.integers(1, VOCAB, n).astype(np.int32) for n in lengths]
    return Examples(task="classification", ids=ids, labels=rng.integers(0, 3, len(lengths)).astype(np.int32))


# ------------------------------------------------------------------------------ bucket_length
def test_bucket_length_values():
    expected = {0: 8, 1: 8, 7: 8, 8: 8, 9: 16, 16: 16, 17: 24, 24: 24, 25: 32, 32: 32, 33: 48, 48: 48, 49: 64,
                64: 64, 65: 96, 96: 96, 97: 128, 128: 128, 129: 192, 192: 192, 193: 256, 257: 384, 385: 512,
                1000: 1024}
    assert {n: bucket_length(n) for n in expected} == expected


def test_bucket_length_is_monotone_holds_the_length_and_takes_few_values():
    values = [bucket_length(n) for n in range(0, 2049)]
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert all(v >= max(n, 1) for n, v in enumerate(values))
    assert all(v < 1.51 * n for n, v in enumerate(values) if n > 32)  # never more than x1.5 padding past 32
    assert sorted(set(values)) == [8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048]
    assert all(bucket_length(v) == v for v in set(values))  # every bucket is a fixed point


# ------------------------------------------------------------------------------ batch_indices
def test_batch_indices_without_shuffle_sorts_by_length_and_covers_everything():
    lengths = np.array(LENGTHS)
    batches = batch_indices(lengths, 3, shuffle=False)
    assert [len(b) for b in batches] == [3, 3, 3, 2]
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    np.testing.assert_array_equal(flat, np.argsort(lengths, kind="stable"))  # stable: ties in corpus order
    assert np.all(np.diff(lengths[flat]) >= 0)
    assert flat[:4].tolist() == [1, 5, 3, 10]  # lengths 1, 2, 3, 3 (index 3 before 10)
    # drop_remainder without shuffling: only the full batches
    assert [len(b) for b in batch_indices(lengths, 3, shuffle=False, drop_remainder=True)] == [3, 3, 3]


def test_batch_indices_shuffle_is_deterministic_per_seed_and_differs_across_seeds():
    lengths = np.random.default_rng(0).integers(1, 40, 100)
    a = batch_indices(lengths, 4, shuffle=True, seed=7, sort_window=2)
    b = batch_indices(lengths, 4, shuffle=True, seed=7, sort_window=2)
    c = batch_indices(lengths, 4, shuffle=True, seed=8, sort_window=2)
    assert [x.tolist() for x in a] == [x.tolist() for x in b]
    assert [x.tolist() for x in a] != [x.tolist() for x in c]
    # without drop_remainder every index is there exactly once
    for batches in (a, c):
        assert sorted(np.concatenate(batches).tolist()) == list(range(100))


@pytest.mark.parametrize("n, batch_size", [(11, 3), (100, 4), (101, 4), (7, 7), (6, 7)])
def test_batch_indices_drop_remainder_gives_only_full_batches(n, batch_size):
    lengths = np.random.default_rng(n).integers(1, 30, n)
    for seed in range(3):
        batches = batch_indices(lengths, batch_size, shuffle=True, seed=seed, sort_window=3, drop_remainder=True)
        assert len(batches) == n // batch_size
        assert all(len(b) == batch_size for b in batches)
        flat = np.concatenate(batches) if batches else np.zeros([0], int)
        assert len(set(flat.tolist())) == len(flat)  # each index at most once
        assert set(flat.tolist()) <= set(range(n))


def test_shuffled_batches_hold_similar_lengths_within_a_sort_window():
    n, batch_size, sort_window, seed = 96, 4, 3, 5
    lengths = np.random.default_rng(1).integers(1, 50, n)
    batches = batch_indices(lengths, batch_size, shuffle=True, seed=seed, sort_window=sort_window)
    # The documented construction: a permutation from seed, windows of batch_size * sort_window.
    perm = np.random.default_rng(seed).permutation(n)
    window = batch_size * sort_window
    window_of = {int(i): k // window for k, i in enumerate(perm)}
    by_window: dict[int, list[np.ndarray]] = {}
    for b in batches:
        owners = {window_of[int(i)] for i in b}
        assert len(owners) == 1, "a batch mixes examples of two sort windows"
        by_window.setdefault(owners.pop(), []).append(b)
    for group in by_window.values():
        assert len(group) == sort_window
        # inside a window the batches are consecutive slices of the length-sorted window: no overlap
        ranges = sorted((lengths[b].min(), lengths[b].max()) for b in group)
        assert all(hi <= lo_next for (_, hi), (lo_next, _) in zip(ranges, ranges[1:]))
    # and the grouping pays off: less padding than the same batches without sorting
    padded = sum(len(b) * lengths[b].max() for b in batches)
    unsorted = sum(batch_size * lengths[perm[i : i + batch_size]].max() for i in range(0, n, batch_size))
    assert padded < unsorted
    # the batch order is shuffled: not simply window by window
    assert [window_of[int(b[0])] for b in batches] != sorted(window_of[int(b[0])] for b in batches)


# ------------------------------------------------------------------------------ pad_batch
def _hand_tagging():
    ids = [np.array([4, 5, 6], np.int32), np.array([7], np.int32), np.array([8, 9, 10, 11, 12], np.int32)]
    tags = [np.array([1, 2, 3], np.int32), np.array([4], np.int32), np.array([0, 1, 2, 3, 4], np.int32)]
    chars = [
        [np.array([1, 2]), np.array([3]), np.array([4, 5, 6])],
        [np.array([7, 8, 9, 10, 11, 12, 13, 14, 15, 16])],  # 10 characters: bucket 16
        [np.array([1]), np.array([2, 3]), np.array([4]), np.array([5]), np.array([6, 7])],
    ]
    chars = [[c.astype(np.int32) for c in word] for word in chars]
    return Examples(task="tagging", ids=ids, tags=tags, chars=chars)


def test_pad_batch_tagging_exact_arrays():
    ex = _hand_tagging()
    batch = pad_batch(ex, [2, 0])
    assert set(batch) == {"ids", "tags", "chars"}
    expected_ids = np.zeros((2, 8), np.int32)
    expected_ids[0, :5] = [8, 9, 10, 11, 12]
    expected_ids[1, :3] = [4, 5, 6]
    expected_tags = np.zeros((2, 8), np.int32)
    expected_tags[0, :5] = [0, 1, 2, 3, 4]
    expected_tags[1, :3] = [1, 2, 3]
    expected_chars = np.zeros((2, 8, 8), np.int32)  # longest word: 3 characters → bucket 8
    for j, w in enumerate([[1], [2, 3], [4], [5], [6, 7]]):
        expected_chars[0, j, : len(w)] = w
    for j, w in enumerate([[1, 2], [3], [4, 5, 6]]):
        expected_chars[1, j, : len(w)] = w
    for key, want in (("ids", expected_ids), ("tags", expected_tags), ("chars", expected_chars)):
        assert batch[key].dtype == np.int32, key
        np.testing.assert_array_equal(batch[key], want, err_msg=key)

    # the 10-character word widens the char axis to its bucket (16); max_chars fixes and cuts it
    wide = pad_batch(ex, [1])
    assert wide["chars"].shape == (1, 8, 16)
    np.testing.assert_array_equal(wide["chars"][0, 0, :10], np.arange(7, 17))
    assert not wide["chars"][0, 0, 10:].any() and not wide["chars"][0, 1:].any()
    cut = pad_batch(ex, [1, 0], max_chars=4)
    assert cut["chars"].shape == (2, 8, 4)
    np.testing.assert_array_equal(cut["chars"][0, 0], [7, 8, 9, 10])
    np.testing.assert_array_equal(cut["chars"][1, :3], [[1, 2, 0, 0], [3, 0, 0, 0], [4, 5, 6, 0]])


def test_pad_batch_max_length_cuts_tokens_tags_and_chars():
    ex = _hand_tagging()
    batch = pad_batch(ex, [0, 2], max_length=2, max_chars=3)
    np.testing.assert_array_equal(batch["ids"], [[4, 5], [8, 9]])  # T = min(bucket, max_length)
    np.testing.assert_array_equal(batch["tags"], [[1, 2], [0, 1]])
    np.testing.assert_array_equal(batch["chars"], [[[1, 2, 0], [3, 0, 0]], [[1, 0, 0], [2, 3, 0]]])
    # a cut longer than the bucket: T stays the bucket of the (cut) longest row
    assert pad_batch(ex, [0, 2], max_length=100)["ids"].shape == (2, 8)
    assert pad_batch(ex, [2], max_length=4)["ids"].tolist() == [[8, 9, 10, 11]]


def test_pad_batch_bucket_grows_with_the_longest_example():
    ex = _tagging([20, 3], with_chars=False)
    batch = pad_batch(ex, [1, 0])
    assert set(batch) == {"ids", "tags"}
    assert batch["ids"].shape == (2, 24) and batch["tags"].shape == (2, 24)
    np.testing.assert_array_equal(batch["ids"][0], np.concatenate([ex.ids[1], np.zeros(21, np.int32)]))
    np.testing.assert_array_equal(batch["ids"][1], np.concatenate([ex.ids[0], np.zeros(4, np.int32)]))
    np.testing.assert_array_equal(batch["tags"][1, :20], ex.tags[0])
    assert not batch["tags"][1, 20:].any() and not batch["tags"][0, 3:].any()


def test_pad_batch_classification_exact_arrays():
    ex = Examples(task="classification", ids=[np.array([3, 4], np.int32), np.array([5, 6, 7], np.int32),
                                             np.array([9], np.int32)], labels=np.array([2, 0, 1], np.int32))
    batch = pad_batch(ex, [1, 2, 0])
    assert set(batch) == {"ids", "label"}
    expected = np.zeros((3, 8), np.int32)
    expected[0, :3] = [5, 6, 7]
    expected[1, :1] = [9]
    expected[2, :2] = [3, 4]
    np.testing.assert_array_equal(batch["ids"], expected)
    np.testing.assert_array_equal(batch["label"], [0, 1, 2])
    assert batch["label"].dtype == np.int32 and batch["ids"].dtype == np.int32
    np.testing.assert_array_equal(pad_batch(ex, np.array([1]), max_length=2)["ids"], [[5, 6]])


def test_eval_batches_cover_every_example_uncut_in_length_order():
    ex = _tagging()
    seen = []
    for indices, batch in eval_batches(ex, 4, max_chars=5):
        assert batch["ids"].shape[1] == bucket_length(max(LENGTHS[i] for i in indices))
        assert batch["chars"].shape[2] == 5
        for row, i in enumerate(indices):
            np.testing.assert_array_equal(batch["ids"][row, : LENGTHS[i]], ex.ids[i])
        seen += list(indices)
    assert sorted(seen) == list(range(len(LENGTHS)))
    assert [LENGTHS[i] for i in seen] == sorted(LENGTHS)


# ------------------------------------------------------------------------------ example_dataset_fn
def _elements(dataset_fn, ctx=None):
    return [{k: v.numpy() for k, v in el.items()} for el in dataset_fn(ctx)]


def _real_rows(batch):
    """Per row: the real tokens' ids, tags / label and chars (padding columns dropped)."""
    rows = []
    for r in range(batch["ids"].shape[0]):
        n = int(np.count_nonzero(batch["ids"][r]))  # ids are never 0 in these examples
        row = {"ids": batch["ids"][r, :n].tolist()}
        if "tags" in batch:
            row["tags"] = batch["tags"][r, :n].tolist()
            assert not batch["ids"][r, n:].any() and not batch["tags"][r, n:].any()
        if "chars" in batch:
            row["chars"] = batch["chars"][r, :n].tolist()
            assert not batch["chars"][r, n:].any()
        if "label" in batch:
            row["label"] = int(batch["label"][r])
        rows.append(row)
    return rows


TWO_REPLICAS = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=2)


@pytest.mark.parametrize("make", [_tagging, _classification], ids=["tagging", "classification"])
def test_two_replicas_get_halves_of_the_one_replica_batches(make):
    ex = make()
    fn = example_dataset_fn(ex, 4, seed=3, max_chars=6, sort_window=2)
    single = _elements(fn)
    halves = _elements(fn, TWO_REPLICAS)
    assert len(single) == len(ex) // 4 == 2
    assert len(halves) == 2 * len(single)  # replica 0's half, replica 1's half, next batch, ...
    expected_batches = batch_indices(ex.lengths, 4, shuffle=True, seed=3, sort_window=2, drop_remainder=True)
    for k, (full, indices) in enumerate(zip(single, expected_batches)):
        first, second = halves[2 * k], halves[2 * k + 1]
        assert first["ids"].shape[0] == second["ids"].shape[0] == 2
        assert _real_rows(first) + _real_rows(second) == _real_rows(full)
        # the rows are the examples of the k-th global batch, in order, each padded to its own bucket
        assert [r["ids"] for r in _real_rows(full)] == [ex.ids[i].tolist() for i in indices]
        assert full["ids"].shape[1] == bucket_length(max(len(ex.ids[i]) for i in indices))
        for half, idx in ((first, indices[:2]), (second, indices[2:])):
            assert half["ids"].shape[1] == bucket_length(max(len(ex.ids[i]) for i in idx))
        if "chars" in full:
            assert full["chars"].shape[2] == first["chars"].shape[2] == 6
            assert _real_rows(full)[0]["chars"][0] == (
                list(ex.chars[indices[0]][0][:6]) + [0] * max(0, 6 - len(ex.chars[indices[0]][0])))
        if "label" in full:
            np.testing.assert_array_equal(full["label"], ex.labels[indices])


def test_every_replica_must_get_an_equal_share():
    fn = example_dataset_fn(_tagging(), 3, seed=0)
    with pytest.raises(ValueError, match="not divisible"):
        fn(TWO_REPLICAS)


def test_skip_batches_resumes_at_the_right_batch():
    ex = _tagging(list(range(1, 10)) * 3)  # 27 sentences: 6 batches of 4
    full = _elements(example_dataset_fn(ex, 4, seed=11, max_chars=4, sort_window=2))
    assert len(full) == 6
    for skip in (1, 4, 6):
        resumed = _elements(example_dataset_fn(ex, 4, seed=11, skip_batches=skip, max_chars=4, sort_window=2))
        assert len(resumed) == 6 - skip
        for a, b in zip(resumed, full[skip:]):
            assert a.keys() == b.keys()
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])
    # under two replicas too: the halves of the remaining batches
    halves = _elements(example_dataset_fn(ex, 4, seed=11, skip_batches=4, max_chars=4, sort_window=2), TWO_REPLICAS)
    assert len(halves) == 4
    assert _real_rows(halves[0]) + _real_rows(halves[1]) == _real_rows(full[4])
    assert _real_rows(halves[2]) + _real_rows(halves[3]) == _real_rows(full[5])


def test_training_batches_respect_max_length():
    ex = _tagging()
    for batch in _elements(example_dataset_fn(ex, 2, seed=0, max_length=4, max_chars=3)):
        assert batch["ids"].shape[1] <= 4 and batch["chars"].shape[1:] == (batch["ids"].shape[1], 3)
    # the (cut) rows are the first tokens of their examples
    rows = [r["ids"] for b in _elements(example_dataset_fn(ex, 2, seed=0, max_length=4)) for r in _real_rows(b)]
    originals = {tuple(x[:4].tolist()) for x in ex.ids}
    assert all(tuple(r) in originals and len(r) <= 4 for r in rows)
    assert len(rows) == 10


# ------------------------------------------------------------------------------ load_examples
CONLLU_SENTENCES = [
    (["The", "cat", "sleeps", "."], ["DET", "NOUN", "VERB", "PUNCT"]),
    (["A", "big", "dog", "barks"], ["DET", "ADJ", "NOUN", "VERB"]),
    (["Birds", "fly"], ["NOUN", "VERB"]),
    (["The", "dog", "runs", "."], ["DET", "NOUN", "VERB", "PUNCT"]),  # item 3: valid
    (["A", "zebra", "sleeps"], ["DET", "NOUN", "VERB"]),  # item 4: test
    (["She", "sees", "the", "big", "hill"], ["PRON", "VERB", "DET", "ADJ", "NOUN"]),
    (["Cats", "sleep", "."], ["NOUN", "VERB", "PUNCT"]),
    (["It", "rains"], ["PRON", "VERB"]),
    (["Quick", "owls", "hoot", "."], ["ADJ", "NOUN", "VERB", "PUNCT"]),  # item 8: valid
    (["Birds", "sing"], ["NOUN", "VERB"]),  # item 9: test
]


def _conllu_word(i, form, tag):
    return f"{i}\t{form}\t{form.lower()}\t{tag}\t_\t_\t{0 if i == 1 else 1}\t{'root' if i == 1 else 'dep'}\t_\t_"


@pytest.fixture(scope="module")
def prepared_conllu(tmp_path_factory):
    from pipelines.config import DataConfig, SplitConfig
    from pipelines.prepare import prepare

    root = tmp_path_factory.mktemp("conllu_examples")
    blocks = []
    for k, (tokens, tags) in enumerate(CONLLU_SENTENCES):
        lines = [f"# sent_id = s{k}"] + [_conllu_word(i + 1, t, g) for i, (t, g) in enumerate(zip(tokens, tags))]
        blocks.append("\n".join(lines))
    path = root / "tiny.conllu"
    path.write_text("\n\n".join(blocks) + "\n\n", encoding="utf-8")
    config = DataConfig(dataset="conllu", files=[str(path)], char_features=True,
                        split=SplitConfig(method="interleave", valid=0.2, test=0.2, period=5),
                        output_dir=str(root / "out"))
    expected = {"train": [s for k, s in enumerate(CONLLU_SENTENCES) if k % 5 < 3],
                "valid": [s for k, s in enumerate(CONLLU_SENTENCES) if k % 5 == 3],
                "test": [s for k, s in enumerate(CONLLU_SENTENCES) if k % 5 == 4]}
    return prepare(config), expected


def test_load_examples_round_trip_from_a_prepared_directory(prepared_conllu):
    from preprocessing.vocab import UNK_ID, LabelSet, Vocabulary

    data_dir, expected = prepared_conllu
    vocab = Vocabulary.load(data_dir / "vocab" / "tokens.txt")
    tags = LabelSet.load(data_dir / "vocab" / "tags.txt")
    chars = Vocabulary.load(data_dir / "vocab" / "chars.txt")
    for split in ("train", "valid", "test"):
        ex = load_examples(data_dir, split, with_chars=True)
        assert ex.task == "tagging" and ex.labels is None
        assert len(ex) == len(expected[split]), split
        for i, (tokens, tag_names) in enumerate(expected[split]):
            assert ex.ids[i].dtype == np.int32 and ex.tags[i].dtype == np.int32
            assert ex.ids[i].tolist() == vocab.encode(tokens)
            assert ex.tags[i].tolist() == tags.encode(tag_names)
            assert len(ex.chars[i]) == len(tokens)
            assert [c.tolist() for c in ex.chars[i]] == [chars.encode(list(t)) for t in tokens]
            assert all(c.dtype == np.int32 for c in ex.chars[i])
        np.testing.assert_array_equal(ex.lengths, [len(t) for t, _ in expected[split]])
    test = load_examples(data_dir, "test", with_chars=True)
    assert test.ids[0][1] == UNK_ID  # "zebra" is not in the training vocabulary
    assert UNK_ID in test.chars[0][1].tolist()  # nor its "z"
    train = load_examples(data_dir, "train", with_chars=True)
    # every training word's characters are known: they decode back to the word
    for i, (tokens, _) in enumerate(expected["train"]):
        assert ["".join(chars.decode(c)) for c in train.chars[i]] == tokens
    # without characters
    plain = load_examples(data_dir, "train")
    assert plain.chars is None
    assert [x.tolist() for x in plain.ids] == [x.tolist() for x in train.ids]
    # and the batches built from them carry the same tokens
    indices, batch = next(eval_batches(train, 2, max_chars=4))
    for row, i in enumerate(indices):
        n = len(train.ids[i])
        np.testing.assert_array_equal(batch["ids"][row, :n], train.ids[i])
        np.testing.assert_array_equal(batch["tags"][row, :n], train.tags[i])


def test_load_examples_refuses_what_it_cannot_read(prepared_conllu, monkeypatch):
    import preprocessing.input_fns as input_fns
    from preprocessing.manifest import load_manifest
    from preprocessing.schema import SEQUENCE

    data_dir, expected = prepared_conllu
    manifest = load_manifest(data_dir)
    tagged_ids = [x.tolist() for x in load_examples(data_dir, "train").ids]
    assert len(tagged_ids) == len(expected["train"])
    assert manifest["features"] == {"ids": SEQUENCE, "tags": SEQUENCE, "chars": SEQUENCE, "char_lengths": SEQUENCE}

    def serve(edited):
        # (an edited manifest.json fails its fingerprint check, so the edited copy is served directly)
        monkeypatch.setattr(input_fns, "load_manifest", lambda d: edited)

    # data prepared without data.char_features: no chars file, and no chars in the feature spec
    without_chars = {k: v for k, v in manifest.items() if k != "chars"}
    without_chars["features"] = {"ids": SEQUENCE, "tags": SEQUENCE}
    serve(without_chars)
    with pytest.raises(ValueError, match="char_features"):
        load_examples(data_dir, "train", with_chars=True)
    assert len(load_examples(data_dir, "train")) == 6
    # what is loaded follows the feature spec, not the task name: records with ids but no
    # tags or label are read as plain token sequences (the task is only named in messages)
    serve({**manifest, "task": "lm", "features": {"ids": SEQUENCE}})
    plain = load_examples(data_dir, "train")
    assert plain.task == "lm" and len(plain) == 6
    assert plain.tags is None and plain.labels is None and plain.chars is None and plain.targets is None
    assert [x.tolist() for x in plain.ids] == tagged_ids
    # a spec without token ids (ids / source_ids) is not example records
    serve({**manifest, "features": {"tags": SEQUENCE}})
    with pytest.raises(ValueError, match=r"reads example records \(ids or source_ids\), not \['tags'\]"):
        load_examples(data_dir, "train")
    # a manifest from before the spec was recorded
    serve({k: v for k, v in manifest.items() if k != "features"})
    with pytest.raises(input_fns.DataError, match="records no feature spec"):
        load_examples(data_dir, "train")
