"""The tagging / classification data path: its Beam transforms one by one, the whole prepare job on
small CoNLL-U, column, JSONL, TSV and class-folder fixtures (Beam → TFRecord → tf.data round trip),
and the packaged twt / bbc recipes."""

import collections
import hashlib
import json
import logging
import os
import unicodedata

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import datasets, prepare
from pipelines.beam.dedupe import DropDuplicates
from pipelines.beam.encode import EncodeLabelled, UnseenLabels, unseen_labels
from pipelines.beam.names import TAGS_FILE
from pipelines.beam.rejects import SplitRejected
from pipelines.beam.runners import local_runner
from pipelines.beam.splits import AssignSplit, interleave_split, stratified_assignment
from pipelines.beam.stats import SummarizeSplits
from pipelines.beam.vocabulary import BuildLabelSet, CountCharacters, CountLabels, WriteVocabulary
from pipelines.config import DataConfig, SplitConfig
from preprocessing.input_fns import read_split
from preprocessing.vocab import UNK_ID, LabelSet, Vocabulary
from requires import needs_bbc, needs_twt


def _pipeline():
    # FnApiRunner in-process: DirectRunner would first try to download the Prism runner.
    return test_pipeline.TestPipeline(runner=local_runner())


def _doc(source, line, raw, label, split=None, position=0, item=None):
    return {"index": (position, line), "split": split, "source": source, "line": line,
            "item": line - 1 if item is None else item, "raw": raw, "label": label}


def _sent(line, split, tokens, tags, source="s.conllu", item=0):
    return {"index": (0, line), "split": split, "source": source, "line": line, "item": item,
            "tokens": tokens, "tags": tags}


def _stratified_reference(records, valid, test, seed):
    """The documented rule, written out: per label, order by sha256(seed, source, line), rank r of n
    goes to valid if (r + 0.5) / n < valid, else to test if below valid + test, else to train."""
    by_label = collections.defaultdict(list)
    for r in records:
        key = hashlib.sha256(f"{seed}\x00{r['source']}\x00{r['line']}".encode()).hexdigest()
        by_label[r["label"]].append((key, r["index"]))
    out = {}
    for keys in by_label.values():
        keys.sort()
        for rank, (_, index) in enumerate(keys):
            u = (rank + 0.5) / len(keys)
            out[index] = "valid" if u < valid else "test" if u < valid + test else "train"
    return out


# =============================================================================== transforms
def test_split_rejected_sets_aside_records_with_a_reason():
    good = _sent(1, None, ["a"], ["X"])
    bad = {"index": (0, 3), "split": None, "source": "s.conllu", "line": 3, "reason": "bad_columns",
           "detail": "line 3: 9 tab-separated columns, expected 10", "text": "1\ta"}
    with _pipeline() as p:
        accepted, rejected = p | beam.Create([good, bad]) | SplitRejected()
        assert_that(accepted, equal_to([good]), label="accepted")
        assert_that(rejected, equal_to([bad]), label="rejected")


def test_drop_duplicates_keeps_the_first_by_index_and_names_it():
    first = _doc("a.txt", 1, b"same text", "sport", position=0)
    later_same_label = _doc("a.txt", 3, b"same text", "sport", position=0)
    later_other_label = _doc("b.txt", 2, b"same text", "tech", position=1)
    unique = _doc("a.txt", 2, b"other text", "sport", position=0)
    records = [later_other_label, later_same_label, unique, first]  # arrival order must not matter

    def rejected(r, detail):
        return {"index": r["index"], "split": None, "source": r["source"], "line": r["line"],
                "reason": "duplicate", "detail": detail, "text": "same text"}

    with _pipeline() as p:
        kept, dupes = p | beam.Create(records) | DropDuplicates()
        assert_that(kept, equal_to([first, unique]), label="kept")
        assert_that(
            dupes,
            equal_to([
                rejected(later_same_label, "same content as a.txt:1"),
                rejected(later_other_label, "same content as a.txt:1 (labelled 'tech' there: 'sport')"),
            ]),
            label="rejected",
        )


def test_drop_duplicates_of_tagged_sentences_compares_tokens_and_tags():
    a = _sent(1, None, ["Paris", "is", "big"], ["PROPN", "AUX", "ADJ"])
    same = _sent(5, None, ["Paris", "is", "big"], ["PROPN", "AUX", "ADJ"])
    other_tags = _sent(9, None, ["Paris", "is", "big"], ["PROPN", "VERB", "ADJ"])
    joined = _sent(12, None, ["Parisis", "big"], ["PROPN", "AUX"])
    with _pipeline() as p:
        kept, dupes = p | beam.Create([same, other_tags, a, joined]) | DropDuplicates()
        assert_that(kept, equal_to([a, other_tags, joined]), label="kept")
        assert_that(
            dupes | beam.Map(lambda r: (r["line"], r["reason"], r["detail"], r["text"])),
            equal_to([(5, "duplicate", "same content as s.conllu:1", "Paris is big")]),
            label="rejected",
        )


def test_interleave_split_is_the_twt_package_rule():
    got = [interleave_split(i, 0.1, 0.1, 10) for i in range(30)]
    assert [i for i, s in enumerate(got) if s == "valid"] == [8, 18, 28]
    assert [i for i, s in enumerate(got) if s == "test"] == [9, 19, 29]
    assert all(s == "train" for i, s in enumerate(got) if i % 10 < 8)
    # period 5, 0.2 / 0.2: the 4th of every 5 is valid, the 5th test
    assert "".join(interleave_split(i, 0.2, 0.2, 5)[1] for i in range(10)) == "rrraerrrae"
    assert {interleave_split(i, 0.0, 0.0, 10) for i in range(20)} == {"train"}


def test_assign_split_interleave_uses_the_item_ordinal_per_source():
    records = [_sent(100 + 3 * i, None, ["w"], ["X"], source=src, item=i) for src in ("a", "b") for i in range(20)]
    records = [dict(r, index=(0 if r["source"] == "a" else 1, r["line"])) for r in records]
    own = _sent(999, "test", ["w"], ["X"], item=8)  # has a split of its own: unchanged
    expected = [dict(r, split="valid" if r["item"] % 10 == 8 else "test" if r["item"] % 10 == 9 else "train")
                for r in records] + [own]
    with _pipeline() as p:
        out = p | beam.Create(records + [own]) | AssignSplit(0.1, 0.1, seed=5, method="interleave", period=10)
        assert_that(out, equal_to(expected))


def _stratify_fixture():
    records = []
    line = 0
    for label, n in (("big", 20), ("mid", 10), ("one", 1)):
        for _ in range(n):
            line += 1
            records.append(_doc("corpus.jsonl", line, f"text {line}".encode(), label))
    return records


def test_assign_split_stratified_exact_per_label_proportions_independent_of_order():
    records = _stratify_fixture()
    own = _doc("corpus.jsonl", 500, b"given", "big", split="valid")
    reference = _stratified_reference(records, 0.1, 0.2, seed=3)
    expected = [dict(r, split=reference[r["index"]]) for r in records] + [own]
    counts = collections.Counter((r["label"], reference[r["index"]]) for r in records)
    # (r + 0.5) / n cut at 0.1 and 0.3: big 2 / 4 / 14, mid 1 / 2 / 7, a single record stays in train
    assert counts == {("big", "valid"): 2, ("big", "test"): 4, ("big", "train"): 14,
                      ("mid", "valid"): 1, ("mid", "test"): 2, ("mid", "train"): 7, ("one", "train"): 1}
    assert stratified_assignment(list(range(10)), 0.1, 0.2) == ["valid", "test", "test"] + ["train"] * 7
    with _pipeline() as p:
        forward = p | "Forward" >> beam.Create(records + [own]) | "SplitF" >> AssignSplit(0.1, 0.2, 3, "stratified")
        backward = (p | "Backward" >> beam.Create([own] + records[::-1])
                    | "SplitB" >> AssignSplit(0.1, 0.2, 3, "stratified"))
        assert_that(forward, equal_to(expected), label="forward")
        assert_that(backward, equal_to(expected), label="backward")
    # another seed: another order within each label, the same counts
    other = _stratified_reference(records, 0.1, 0.2, seed=4)
    assert other != reference
    assert collections.Counter((r["label"], other[r["index"]]) for r in records) == counts


def test_assign_split_stratified_is_deterministic_across_runs():
    records = _stratify_fixture()
    expected = sorted((r["line"], s) for r, s in
                      ((r, _stratified_reference(records, 0.25, 0.25, seed=0)[r["index"]]) for r in records))
    for order in (records, records[::-1]):  # two separate runs, two input orders: the same splits
        with _pipeline() as p:
            out = p | beam.Create(order) | AssignSplit(0.25, 0.25, seed=0, method="stratified")
            assert_that(out | beam.Map(lambda r: (r["line"], r["split"])), equal_to(expected))


def test_assign_split_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown split method"):
        AssignSplit(0.1, 0.1, method="random")
    with pytest.raises(ValueError, match="sum below 1"):
        AssignSplit(0.5, 0.5)


def test_count_labels_and_build_label_set_sorted_from_train_only():
    tagged = [
        _sent(1, "train", ["a", "b", "c"], ["VERB", "ADJ", "VERB"]),
        _sent(2, "train", ["d"], ["NOUN"]),
        _sent(3, "test", ["e"], ["INTJ"]),
    ]
    docs = [_doc("d.jsonl", 1, b"x", "sport", "train"), _doc("d.jsonl", 2, b"y", "business", "train"),
            _doc("d.jsonl", 3, b"z", "sport", "train"), _doc("d.jsonl", 4, b"w", "tech", "valid")]
    with _pipeline() as p:
        tag_counts = p | "Tagged" >> beam.Create(tagged) | "CountTags" >> CountLabels("train")
        label_counts = p | "Docs" >> beam.Create(docs) | "CountDocs" >> CountLabels("train")
        all_counts = p | "All" >> beam.Create(tagged) | "CountAll" >> CountLabels(None)
        assert_that(tag_counts, equal_to([("VERB", 2), ("ADJ", 1), ("NOUN", 1)]), label="tags")
        assert_that(label_counts, equal_to([("sport", 2), ("business", 1)]), label="labels")
        assert_that(all_counts, equal_to([("VERB", 2), ("ADJ", 1), ("NOUN", 1), ("INTJ", 1)]), label="all")
        tag_set = tag_counts | "TagSet" >> BuildLabelSet("tags")
        label_set = label_counts | "LabelSet" >> BuildLabelSet("labels")
        assert_that(tag_set | "TagList" >> beam.Map(lambda s: s.labels), equal_to([["ADJ", "NOUN", "VERB"]]),
                    label="tag_set")
        assert_that(label_set | "LabelList" >> beam.Map(lambda s: s.labels), equal_to([["business", "sport"]]),
                    label="label_set")


def test_no_training_labels_reject_every_record_for_the_empty_corpus_error():
    """No training example: no label set (None), every record is rejected as having an unknown tag,
    and the prepare job then reports the empty corpus (test_prepare_verify) instead of failing here."""
    records = [_sent(1, "test", ["a"], ["X"])]
    with _pipeline() as p:
        labels = p | beam.Create(records) | CountLabels("train") | BuildLabelSet("tags")
        assert_that(labels, equal_to([None]), label="NoLabelSet")
        out = (p | "Records" >> beam.Create(records)
               | EncodeLabelled("tags", True, "unknown_tag", p | "Vocab" >> beam.Create([VOCAB]), labels,
                                p | "Unseen" >> beam.Create([None])))
        assert_that(out.accepted, equal_to([]), label="NoneAccepted")
        assert_that(out.rejected | beam.Map(lambda r: (r["reason"], "empty" in r["detail"])),
                    equal_to([("unknown_tag", True)]), label="Rejected")


def test_count_characters_counts_train_tokens():
    records = [_sent(1, "train", ["aab", "b"], ["X", "X"]), _sent(2, "valid", ["zz"], ["X"])]
    with _pipeline() as p:
        assert_that(p | beam.Create(records) | CountCharacters("train"), equal_to([("a", 2), ("b", 2)]))


VOCAB = Vocabulary.from_counts({"the": 3, "cat": 2, "sat": 1})  # the=4 cat=5 sat=6
CHARS = Vocabulary.from_counts({"t": 3, "a": 2, "c": 1, "e": 1, "h": 1})  # t=4 a=5 c=6 e=7 h=8
TAGS = LabelSet.from_labels(["VERB", "DET", "NOUN"])  # DET=0 NOUN=1 VERB=2


ENCODE_ARGS = {"tagging": ("tags", True, "unknown_tag"), "classification": ("label", False, "unknown_label")}


def _encode(task, records, labels, chars=None):
    """The tagging / classification encode step over ``records``; the unseen labels are computed from
    them as in the prepare job (every split's labels that the training label set lacks)."""
    p = _pipeline()
    vocab = p | "Vocab" >> beam.Create([VOCAB])
    label_set = p | "Labels" >> beam.Create([labels])
    char_vocab = p | "Chars" >> beam.Create([chars]) if chars is not None else None
    recs = p | "Records" >> beam.Create(records)
    unseen = recs | "CountAll" >> CountLabels(None) | UnseenLabels(label_set)
    out = recs | EncodeLabelled(*ENCODE_ARGS[task], vocab, label_set, unseen, char_vocab)
    return p, out


def test_encode_tagging_with_characters_keeps_tags_unseen_in_training():
    records = [
        _sent(1, "train", ["the", "cat", "sat"], ["DET", "NOUN", "VERB"]),
        _sent(2, "test", ["cat", "dog"], ["NOUN", "NOUN"]),
        _sent(3, "valid", ["the", "ox"], ["DET", "ADJ"]),  # ADJ is not a training tag
    ]
    p, out = _encode("tagging", records, TAGS, CHARS)
    with p:
        assert_that(
            out.accepted,
            equal_to([
                {"index": (0, 1), "split": "train", "unk": 0, "labels": ["DET", "NOUN", "VERB"], "unseen": [],
                 "features": {"ids": [4, 5, 6], "tags": [0, 1, 2],
                              "chars": [4, 8, 7, 6, 5, 4, UNK_ID, 5, 4], "char_lengths": [3, 3, 3]}},
                {"index": (0, 2), "split": "test", "unk": 1, "labels": ["NOUN", "NOUN"], "unseen": [],
                 "features": {"ids": [5, UNK_ID], "tags": [1, 1],
                              "chars": [6, 5, 4, UNK_ID, UNK_ID, UNK_ID], "char_lengths": [3, 3]}},
                # ADJ is not a training tag: kept, with the first id past the training set's 3 (never predicted)
                {"index": (0, 3), "split": "valid", "unk": 1, "labels": ["DET", "ADJ"], "unseen": ["ADJ"],
                 "features": {"ids": [4, UNK_ID], "tags": [0, 3],
                              "chars": [4, 8, 7, UNK_ID, UNK_ID], "char_lengths": [3, 2]}},
            ]),
            label="accepted",
        )
        assert_that(out.rejected, equal_to([]), label="rejected")


def test_encode_examples_tagging_without_characters():
    p, out = _encode("tagging", [_sent(1, "train", ["sat", "the"], ["VERB", "DET"])], TAGS)
    with p:
        assert_that(out.accepted | beam.Map(lambda r: r["features"]),
                    equal_to([{"ids": [6, 4], "tags": [2, 0]}]), label="accepted")
        assert_that(out.rejected, equal_to([]), label="rejected")


def test_encode_classification_keeps_labels_unseen_in_training():
    labels = LabelSet.from_labels(["sport", "business"])  # business=0 sport=1
    records = [
        dict(_doc("d.jsonl", 1, None, "sport", "train"), tokens=["the", "cat"]),
        dict(_doc("d.jsonl", 2, None, "business", "valid"), tokens=["a", "sat"]),
        dict(_doc("d.jsonl", 3, None, "weather", "test"), tokens=["the", "sat"]),
    ]
    records = [{k: v for k, v in r.items() if k != "raw"} for r in records]
    p, out = _encode("classification", records, labels)
    with p:
        assert_that(
            out.accepted,
            equal_to([
                {"index": (0, 1), "split": "train", "features": {"ids": [4, 5], "label": 1}, "unk": 0,
                 "labels": ["sport"], "unseen": []},
                {"index": (0, 2), "split": "valid", "features": {"ids": [UNK_ID, 6], "label": 0}, "unk": 1,
                 "labels": ["business"], "unseen": []},
                # weather is no training label: kept with id 2 (= the 2 training labels + its index 0)
                {"index": (0, 3), "split": "test", "features": {"ids": [4, 6], "label": 2}, "unk": 0,
                 "labels": ["weather"], "unseen": ["weather"]},
            ]),
            label="accepted",
        )
        assert_that(out.rejected, equal_to([]), label="rejected")


def test_unseen_labels_are_sorted_and_none_when_every_label_was_seen():
    known = LabelSet.from_labels(["a", "b"])
    assert unseen_labels([("z", 1), ("a", 3), ("c", 2)], known).labels == ["c", "z"]
    assert unseen_labels([("a", 1), ("b", 2)], known) is None
    assert unseen_labels([("a", 1)], None).labels == ["a"]


def test_summarize_splits_counts_labels_per_split():
    encoded = [
        {"index": (0, 1), "split": "train", "features": {"ids": [4, 5]}, "unk": 0, "labels": ["DET", "NOUN"]},
        {"index": (0, 2), "split": "train", "features": {"ids": [4]}, "unk": 0, "labels": ["NOUN"]},
        {"index": (0, 3), "split": "test", "features": {"ids": [1]}, "unk": 1, "labels": ["VERB"]},
    ]
    with _pipeline() as p:
        out = p | beam.Create(encoded) | SummarizeSplits() | beam.Map(lambda kv: (kv[0], kv[1]["label_counts"]))
        assert_that(out, equal_to([("train", {"DET": 1, "NOUN": 2}), ("test", {"VERB": 1})]))


def test_write_vocabulary_writes_a_label_set_to_the_given_path(tmp_path):
    with _pipeline() as p:
        info = p | beam.Create([TAGS]) | WriteVocabulary(str(tmp_path), TAGS_FILE)
        data = b"DET\nNOUN\nVERB\n"
        assert_that(info, equal_to([{"path": "vocab/tags.txt", "size": 3,
                                     "sha256": hashlib.sha256(data).hexdigest()}]))
    assert (tmp_path / "vocab" / "tags.txt").read_bytes() == b"DET\nNOUN\nVERB\n"
    assert LabelSet.load(tmp_path / "vocab" / "tags.txt") == TAGS


# ============================================================================== end to end
def _rejected_rows(data_dir):
    manifest = prepare.load_manifest(data_dir)
    text = (data_dir / manifest["rejected"]["path"]).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def _examples(data_dir, split):
    return list(read_split(data_dir, split).as_numpy_iterator())


def _word(i, form, tag):
    return f"{i}\t{form}\t{form.lower()}\t{tag}\t_\t_\t{0 if i == 1 else 1}\t{'root' if i == 1 else 'dep'}\t_\t_"


# sentence pool for the good CoNLL-U sentences (train tags: ADJ ADP DET NOUN PRON PROPN PUNCT VERB CCONJ)
POOL = [
    (["The", "cat", "sleeps", "."], ["DET", "NOUN", "VERB", "PUNCT"]),
    (["A", "big", "dog", "barks", "."], ["DET", "ADJ", "NOUN", "VERB", "PUNCT"]),
    (["She", "sees", "the", "\ufb01sh"], ["PRON", "VERB", "DET", "NOUN"]),  # NFKC: the fi ligature → "fi"
    (["Birds", "fly", "over", "the", "hill"], ["NOUN", "VERB", "ADP", "DET", "NOUN"]),
]


@pytest.fixture(scope="module")
def conllu_prepared(tmp_path_factory):
    """20 sentences (items 0..19; interleave: 8, 18 valid, 9, 19 test) with every kind of bad one."""
    root = tmp_path_factory.mktemp("conllu")
    path = str(root / "ud.conllu")
    lines: list[bytes] = [b"# newdoc id = doc1", b"# a block of comments only is not a sentence", b""]
    good = {"train": [], "valid": [], "test": []}  # (tokens, tags) in corpus order
    rejected = []  # (line, reason)

    def add(block, bad=None):
        """bad: (offset of the offending line in block, reason); returns the block's first line."""
        first = len(lines) + 1
        if bad is not None:
            rejected.append((first + bad[0], bad[1]))
        lines.extend(x.encode() if isinstance(x, str) else x for x in block)
        lines.append(b"")
        return first

    for item in range(20):
        split = interleave_split(item, 0.1, 0.1, 10)
        tokens, tags = POOL[item % len(POOL)]
        tokens = tokens + [f"w{item}"] if split == "train" else list(tokens)
        tags = tags + ["PROPN"] if split == "train" else list(tags)
        if item == 0:  # comments and a multiword range
            block = ["# sent_id = s0", "# text = Vámonos al mar",
                     "1-2\tVámonos\t_\t_\t_\t_\t_\t_\t_\t_", _word(1, "Vamos", "VERB"), _word(2, "nos", "PRON"),
                     "3-4\tal\t_\t_\t_\t_\t_\t_\t_\t_", _word(3, "a", "ADP"), _word(4, "el", "DET"),
                     _word(5, "mar", "NOUN")]
            tokens, tags = ["Vamos", "nos", "a", "el", "mar"], ["VERB", "PRON", "ADP", "DET", "NOUN"]
            add(block)
        elif item == 1:  # an empty node
            tokens, tags = ["Sue", "likes", "coffee", "and", "Bill", "tea"], \
                ["PROPN", "VERB", "NOUN", "CCONJ", "PROPN", "NOUN"]
            block = [_word(i + 1, t, g) for i, (t, g) in enumerate(zip(tokens[:5], tags[:5]))]
            block += ["5.1\tlikes\tlike\tVERB\t_\t_\t_\t_\t4:conj\t_", _word(6, "tea", "NOUN")]
            add(block)
        elif item == 2:  # a line with 9 columns
            block = ["# sent_id = s2", _word(1, "Good", "ADJ"), "2\tbad\tbad\tNOUN\t_\t_\t1\tdep\t_"]
            add(block, bad=(2, "bad_columns"))
            continue
        elif item == 4:  # a missing tag
            block = [_word(1, "Dogs", "NOUN"), _word(2, "run", "_"), _word(3, "fast", "ADV")]
            add(block, bad=(1, "missing_tag"))
            continue
        elif item == 6:  # bad UTF-8
            block = [_word(1, "Le", "DET"), b"2\tcaf\xe9\tcafe\tNOUN\t_\t_\t1\tdep\t_\t_"]
            add(block, bad=(1, "invalid_utf8"))
            continue
        elif item == 7:  # only a range line: no word at all
            add(["# sent_id = s7", "1-2\tdel\t_\t_\t_\t_\t_\t_\t_\t_"], bad=(1, "empty"))
            continue
        elif item == 9:  # test: a token no training sentence has
            tokens, tags = ["The", "zebra", "sleeps"], ["DET", "NOUN", "VERB"]
            add(["# sent_id = s9"] + [_word(i + 1, t, g) for i, (t, g) in enumerate(zip(tokens, tags))])
        elif item == 18:  # valid: a tag no training sentence has (kept; scored as wrong)
            tokens, tags = ["Wow", "cats"], ["INTJ", "NOUN"]
            add([_word(1, "Wow", "INTJ"), _word(2, "cats", "NOUN")])
        else:
            add([_word(i + 1, t, g) for i, (t, g) in enumerate(zip(tokens, tags))])
        good[split].append(([unicodedata.normalize("NFKC", t) for t in tokens], tags))
    (root / "ud.conllu").write_bytes(b"\n".join(lines) + b"\n")
    config = DataConfig(dataset="conllu", files=[path], split=SplitConfig(method="interleave", valid=0.1, test=0.1),
                        output_dir=str(root / "out"))
    data_dir = prepare.prepare(config)
    return config, data_dir, path, good, rejected


def test_conllu_manifest_and_tag_set(conllu_prepared):
    config, data_dir, path, good, _ = conllu_prepared
    manifest = prepare.load_manifest(data_dir)
    assert manifest["task"] == "tagging" and manifest["dataset"] == "conllu"
    assert manifest["config"]["split"]["method"] == "interleave"
    train_tags = sorted({t for _, tags in good["train"] for t in tags})
    assert (data_dir / "vocab" / "tags.txt").read_text(encoding="utf-8") == "".join(t + "\n" for t in train_tags)
    assert manifest["labels"]["path"] == "vocab/tags.txt" and manifest["labels"]["size"] == len(train_tags)
    assert "INTJ" not in train_tags and "ADV" not in train_tags
    assert "chars" not in manifest  # char_features is off
    for split in ("train", "valid", "test"):
        s = manifest["splits"][split]
        assert s["examples"] == len(good[split]), split
        tag_counts = collections.Counter(t for _, tags in good[split] for t in tags)
        assert s["label_counts"] == dict(sorted(tag_counts.items()))
        assert s["tokens"] == sum(len(tokens) for tokens, _ in good[split])
    assert [s["examples"] for s in manifest["splits"].values()] == [12, 2, 2]
    # the valid sentence with INTJ (no training sentence has it) is kept and counted
    assert manifest["splits"]["valid"]["unseen"] == {"examples": 1, "labels": {"INTJ": 1}}
    assert manifest["splits"]["train"]["unseen"] == manifest["splits"]["test"]["unseen"] == {"examples": 0, "labels": {}}
    assert manifest["unseen_labels"]["path"] == "vocab/unseen_tags.txt"
    assert (data_dir / "vocab" / "unseen_tags.txt").read_text(encoding="utf-8") == "INTJ\n"


def test_conllu_rejected_sentences_name_file_line_and_reason(conllu_prepared):
    _, data_dir, path, _, rejected = conllu_prepared
    manifest = prepare.load_manifest(data_dir)
    rows = _rejected_rows(data_dir)
    assert [(r["source"], r["line"], r["reason"]) for r in rows] == [(path, line, reason) for line, reason in rejected]
    assert manifest["rejected"]["count"] == 4  # the sentence with a tag unseen in training is kept
    assert manifest["rejected"]["by_reason"] == {"bad_columns": 1, "empty": 1, "invalid_utf8": 1, "missing_tag": 1}
    by_reason = {r["reason"]: r for r in rows}
    assert by_reason["bad_columns"]["detail"] == f"line {rejected[0][0]}: 9 tab-separated columns, expected 10"
    assert by_reason["missing_tag"]["detail"].startswith(f"line {rejected[1][0]}: UPOS (column 4) is '_'")
    assert by_reason["invalid_utf8"]["detail"].startswith(f"line {rejected[2][0]}: invalid UTF-8")
    assert "caf\\xe9" in by_reason["invalid_utf8"]["text"]
    assert all(by_reason[r]["split"] is None for r in ("bad_columns", "missing_tag", "invalid_utf8", "empty"))


def test_conllu_round_trip_through_tfrecords(conllu_prepared):
    _, data_dir, _, good, _ = conllu_prepared
    vocab = Vocabulary.load(data_dir / "vocab" / "tokens.txt")
    tags = LabelSet.load(data_dir / "vocab" / "tags.txt")
    # ids past the training tags name the unseen ones (vocab/unseen_tags.txt)
    tags = LabelSet(tags.labels + LabelSet.load(data_dir / "vocab" / "unseen_tags.txt").labels)
    assert set(vocab.tokens[4:]) == {t for tokens, _ in good["train"] for t in tokens}
    assert "fish" in vocab and "\ufb01sh" not in vocab and "zebra" not in vocab
    for split in ("train", "valid", "test"):
        examples = _examples(data_dir, split)
        assert [ex["ids"].tolist() for ex in examples] == [vocab.encode(tokens) for tokens, _ in good[split]], split
        assert [tags.decode(ex["tags"]) for ex in examples] == [t for _, t in good[split]], split
        assert all("chars" not in ex and "char_lengths" not in ex for ex in examples)  # not in the feature spec
    test_ids = [ex["ids"].tolist() for ex in _examples(data_dir, "test")]
    assert test_ids[0][1] == UNK_ID  # "zebra"


COLUMNS = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O

Germany NNP B-NP B-LOC
's POS B-NP O
representative NN I-NP O

Peter NNP B-NP B-PER
said VBD B-VP O

-DOCSTART- -X- -X- O

The DT B-NP O
\uff26\uff49\uff46\uff41 NNP I-NP B-ORG
\ufb01nal NN I-NP O

Two CD B-NP O
bad columns
here NN I-NP O

European NNP B-NP B-ORG
Union NNP I-NP I-ORG
said VBD B-VP O

Blackburn NNP B-NP B-PER
\u00e9t\u00e9 VB B-VP O

Fifa NNP B-NP B-ORG
won VBD B-VP O
"""


@pytest.fixture(scope="module")
def columns_prepared(tmp_path_factory):
    """CoNLL-2003 NER with character features; interleave period 5: items 3, 8 valid, 4, 9 test."""
    root = tmp_path_factory.mktemp("columns")
    path = root / "ner.txt"
    path.write_text(COLUMNS, encoding="utf-8")
    config = DataConfig(dataset="columns", files=[str(path)], tag_scheme="bio", char_features=True,
                        split=SplitConfig(method="interleave", valid=0.2, test=0.2, period=5),
                        output_dir=str(root / "out"))
    sentences = [
        [line.split() for line in block.splitlines() if not line.startswith("-DOCSTART-")]
        for block in COLUMNS.split("\n\n")
    ]
    sentences = [s for s in sentences if s]
    expected = {"train": [], "valid": [], "test": []}
    for item, sentence in enumerate(sentences):
        if any(len(cols) != 4 for cols in sentence):
            continue  # "bad columns" (item 6): rejected
        split = interleave_split(item, 0.2, 0.2, 5)
        expected[split].append(([unicodedata.normalize("NFKC", c[0]) for c in sentence], [c[-1] for c in sentence]))
    return config, prepare.prepare(config), str(path), expected


def test_columns_with_char_features_round_trip(columns_prepared):
    _, data_dir, path, expected = columns_prepared
    manifest = prepare.load_manifest(data_dir)
    assert manifest["task"] == "tagging" and manifest["config"]["tag_scheme"] == "bio"
    chars_file = data_dir / "vocab" / "chars.txt"
    assert manifest["chars"] == {"path": "vocab/chars.txt", "size": len(Vocabulary.load(chars_file)),
                                 "sha256": hashlib.sha256(chars_file.read_bytes()).hexdigest()}
    tags_file = data_dir / "vocab" / "tags.txt"
    assert manifest["labels"] == {"path": "vocab/tags.txt", "size": 7,
                                  "sha256": hashlib.sha256(tags_file.read_bytes()).hexdigest()}
    assert LabelSet.load(tags_file).labels == ["B-LOC", "B-MISC", "B-ORG", "B-PER", "I-ORG", "I-PER", "O"]
    rows = _rejected_rows(data_dir)
    bad_line = COLUMNS.splitlines().index("bad columns") + 1
    assert [(r["source"], r["line"], r["reason"]) for r in rows] == [(path, bad_line, "bad_columns")]
    assert rows[0]["detail"] == f"line {bad_line}: 2 columns, but the sentence's first line (line {bad_line - 1}) has 4"
    vocab = Vocabulary.load(data_dir / "vocab" / "tokens.txt")
    chars = Vocabulary.load(chars_file)
    tags = LabelSet.load(tags_file)
    train_chars = {c for tokens, _ in expected["train"] for t in tokens for c in t}
    assert set(chars.tokens[4:]) == train_chars
    assert "Fifa" in vocab and "final" in vocab  # NFKC-normalized forms (fullwidth letters, fi ligature)
    assert "\ufb01nal" not in vocab and "été" not in vocab  # été: only in valid
    assert [manifest["splits"][s]["examples"] for s in ("train", "valid", "test")] == [5, 2, 2]
    for split in ("train", "valid", "test"):
        examples = _examples(data_dir, split)
        assert len(examples) == len(expected[split])
        for ex, (tokens, tag_names) in zip(examples, expected[split]):
            assert ex["ids"].tolist() == vocab.encode(tokens)
            assert tags.decode(ex["tags"]) == tag_names
            lengths = ex["char_lengths"].tolist()
            assert lengths == [len(t) for t in tokens]
            assert sum(lengths) == len(ex["chars"])
            assert ex["chars"].tolist() == [chars.token_to_id(c) for t in tokens for c in t]
            if split == "train":  # every character known: the chars decode to the normalized tokens
                pieces, start = [], 0
                for n in lengths:
                    pieces.append("".join(chars.decode(ex["chars"][start:start + n])))
                    start += n
                assert pieces == tokens
    valid_chars = [c for tokens, _ in expected["valid"] for t in tokens for c in t]
    assert {c for c in valid_chars if c not in train_chars} == {"'", "v", "y", "é"}
    assert UNK_ID in [i for ex in _examples(data_dir, "valid") for i in ex["chars"].tolist()]


# ------------------------------------------------------------------------------ classification
def _jsonl_corpus(root):
    """3 labels × 10 distinct documents, a duplicate with the same and one with another label, bad JSON."""
    path = root / "docs.jsonl"
    objs, docs = [], []
    for i in range(30):
        label = ("pos", "neg", "neu")[i % 3]
        objs.append({"text": f"{label}word common doc{i} shared", "label": label})
    objs.insert(12, "{not json")
    objs.append({"text": objs[3]["text"], "label": objs[3]["label"], "id": 99})  # duplicate, same label (pos)
    objs.append({"text": objs[3]["text"], "label": "neg"})  # duplicate, another label
    lines = [o if isinstance(o, str) else json.dumps(o) for o in objs]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for number, o in enumerate(objs, start=1):
        if isinstance(o, dict):
            docs.append({"source": str(path), "line": number, "index": (0, number), "text": o["text"],
                         "label": o["label"]})
    return str(path), docs


@pytest.fixture(scope="module")
def jsonl_prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("jsonl")
    path, docs = _jsonl_corpus(root)
    config = DataConfig(dataset="jsonl", files=[path], output_dir=str(root / "out"),
                        split=SplitConfig(method="stratified", valid=0.2, test=0.2, seed=3))
    return config, prepare.prepare(config), path, docs


def test_jsonl_dedupes_before_a_stratified_split(jsonl_prepared):
    _, data_dir, path, docs = jsonl_prepared
    manifest = prepare.load_manifest(data_dir)
    assert manifest["task"] == "classification" and manifest["config"]["dedupe"] is None  # on by default
    kept, dup_lines = [], []
    seen = {}
    for d in docs:
        if d["text"] in seen:
            dup_lines.append((d["line"], seen[d["text"]]))
        else:
            seen[d["text"]] = d
            kept.append(d)
    assert len(kept) == 30 and len(dup_lines) == 2
    rows = _rejected_rows(data_dir)
    assert manifest["rejected"]["by_reason"] == {"bad_json": 1, "duplicate": 2}
    assert manifest["rejected"]["count"] == 3
    dupes = [r for r in rows if r["reason"] == "duplicate"]
    first = dup_lines[0][1]
    assert [(r["source"], r["line"]) for r in dupes] == [(path, line) for line, _ in dup_lines]
    assert dupes[0]["detail"] == f"same content as {path}:{first['line']}"
    assert dupes[1]["detail"] == f"same content as {path}:{first['line']} (labelled 'neg' there: 'pos')"
    assert [(r["line"], r["reason"]) for r in rows if r["reason"] != "duplicate"] == [(13, "bad_json")]

    reference = _stratified_reference(kept, 0.2, 0.2, seed=3)
    vocab = Vocabulary.load(data_dir / "vocab" / "tokens.txt")
    labels = LabelSet.load(data_dir / "vocab" / "labels.txt")
    assert labels.labels == ["neg", "neu", "pos"] and manifest["labels"]["path"] == "vocab/labels.txt"
    seen_texts = []
    for split in ("train", "valid", "test"):
        want = [d for d in kept if reference[d["index"]] == split]  # corpus order
        counts = dict(sorted(collections.Counter(d["label"] for d in want).items()))
        assert counts == ({"neg": 6, "neu": 6, "pos": 6} if split == "train" else {"neg": 2, "neu": 2, "pos": 2})
        assert manifest["splits"][split]["label_counts"] == counts
        examples = _examples(data_dir, split)
        assert [ex["ids"].tolist() for ex in examples] == [vocab.encode(d["text"].split()) for d in want], split
        assert [labels.decode([ex["label"]])[0] for ex in examples] == [d["label"] for d in want], split
        seen_texts += [d["text"] for d in want]
    duplicated = docs[3]["text"]
    assert docs[3]["label"] == "pos"
    assert seen_texts.count(duplicated) == 1  # in exactly one split, once
    assert sorted(seen_texts) == sorted(d["text"] for d in kept)


def test_rerun_reuses_the_directory_and_a_forced_rebuild_is_byte_identical(jsonl_prepared, monkeypatch, caplog):
    config, data_dir, _, _ = jsonl_prepared
    manifest_bytes = (data_dir / "manifest.json").read_bytes()
    files = {p.relative_to(data_dir): p.read_bytes() for p in data_dir.rglob("*") if p.is_file()}
    assert prepare.prepare(config, force=True) == data_dir
    assert (data_dir / "manifest.json").read_bytes() == manifest_bytes
    assert {p.relative_to(data_dir): p.read_bytes() for p in data_dir.rglob("*") if p.is_file()} == files
    assert os.listdir(data_dir.parent) == [data_dir.name]

    def no_pipeline(*args, **kwargs):
        raise AssertionError("the pipeline must not run when the data is already prepared")

    monkeypatch.setattr(prepare, "build_pipeline", no_pipeline)
    with caplog.at_level(logging.INFO, logger="pipelines.prepare"):
        assert prepare.prepare(config) == data_dir
    assert "reusing" in caplog.text
    assert (data_dir / "manifest.json").read_bytes() == manifest_bytes


@pytest.fixture(scope="module")
def tsv_prepared(tmp_path_factory):
    """20 items, interleave (8, 18 valid; 9, 19 test); item 9 has the only "rare" label."""
    root = tmp_path_factory.mktemp("tsv")
    path = root / "docs.tsv"
    rows, expected = [], {"train": [], "valid": [], "test": []}
    for item in range(20):
        label = "rare" if item == 9 else ("ham", "spam")[item % 2]
        text = f"{label} message number {item}\twith a tab"
        if item == 12:
            text = "message " + "\u00e9"  # fine UTF-8 in the text
        rows.append(f"{label}\t{text}".encode())
        if item == 14:
            rows[-1] = b"spam\tcaf\xe9 latin-1"  # invalid UTF-8 in the text: rejected by the tokenizer
        if item == 5:
            rows[-1] = b"no tab on this line"  # still an item: the interleave count goes on
        if item not in (5, 14):
            expected[interleave_split(item, 0.1, 0.1, 10)].append((text.split(), label))
    rows.insert(3, b"")  # blank lines are not items
    path.write_bytes(b"\r\n".join(rows) + b"\r\n")
    config = DataConfig(dataset="tsv", files=[str(path)], output_dir=str(root / "out"),
                        split=SplitConfig(method="interleave", valid=0.1, test=0.1))
    return prepare.prepare(config), str(path), expected


def test_tsv_label_only_in_test_is_kept_with_an_id_past_the_label_set(tsv_prepared):
    data_dir, path, expected = tsv_prepared
    manifest = prepare.load_manifest(data_dir)
    rows = _rejected_rows(data_dir)
    assert [(r["source"], r["line"], r["split"], r["reason"]) for r in rows] == [
        (path, 7, None, "bad_columns"),
        (path, 16, "train", "invalid_utf8"),
    ]
    assert manifest["rejected"]["by_reason"] == {"bad_columns": 1, "invalid_utf8": 1}
    labels = LabelSet.load(data_dir / "vocab" / "labels.txt")
    assert labels.labels == ["ham", "spam"] and "rare" not in labels
    assert LabelSet.load(data_dir / "vocab" / "unseen_labels.txt").labels == ["rare"]
    assert manifest["splits"]["test"]["unseen"] == {"examples": 1, "labels": {"rare": 1}}
    labels = LabelSet(labels.labels + ["rare"])  # "rare" has id 2: no model trained here predicts it
    vocab = Vocabulary.load(data_dir / "vocab" / "tokens.txt")
    for split in ("train", "valid", "test"):
        examples = _examples(data_dir, split)
        assert [ex["ids"].tolist() for ex in examples] == [vocab.encode(t) for t, _ in expected[split]], split
        assert [labels.decode([ex["label"]])[0] for ex in examples] == [lab for _, lab in expected[split]], split
        assert manifest["splits"][split]["label_counts"] == dict(
            sorted(collections.Counter(lab for _, lab in expected[split]).items()))
    assert manifest["splits"]["test"]["examples"] == 2
    assert manifest["splits"]["test"]["label_counts"] == {"rare": 1, "spam": 1}


def test_tsv_invalid_utf8_in_the_text_names_the_file_line(tsv_prepared):
    data_dir, path, _ = tsv_prepared
    row = [r for r in _rejected_rows(data_dir) if r["reason"] == "invalid_utf8"][0]
    assert (row["source"], row["line"]) == (path, 16)
    assert row["detail"] == "line 16: invalid UTF-8 at byte 3 of the text (invalid continuation byte)"
    assert row["text"] == "caf\\xe9 latin-1"


def _folder_corpus(root):
    """Class folders business / sport / tech, 10 documents each, plus hidden, empty, undecodable and a
    cross-label duplicate."""
    docs = []
    for label in ("business", "sport", "tech"):
        (root / label).mkdir(parents=True)
        for i in range(10):
            text = f"{label} story {i}\nsecond line of {label}\n"
            (root / label / f"{i:02d}.txt").write_text(text, encoding="utf-8")
    (root / "tech" / "50-copy.txt").write_bytes((root / "business" / "03.txt").read_bytes())
    (root / "sport" / "60-empty.txt").write_bytes(b" \n\t\n")
    (root / "tech" / "70-latin1.txt").write_bytes(b"caf\xe9 au lait")
    (root / "tech" / ".hidden.txt").write_text("not a document", encoding="utf-8")
    (root / "tech" / "subdir").mkdir()
    (root / "tech" / "subdir" / "x.txt").write_text("not a document either", encoding="utf-8")
    (root / ".git").mkdir()
    for label in ("business", "sport", "tech"):
        for name in sorted(os.listdir(root / label)):
            path = root / label / name
            if name.startswith(".") or path.is_dir():
                continue
            docs.append({"source": str(path), "line": 1, "label": label, "raw": path.read_bytes()})
    for position, d in enumerate(docs):
        d["index"] = (position, 1)
    return docs


def test_folder_dataset_end_to_end(tmp_path):
    root = tmp_path / "corpus"
    docs = _folder_corpus(root)
    config = DataConfig(dataset="folder", files=[str(root)], output_dir=str(tmp_path / "out"),
                        split=SplitConfig(method="stratified", valid=0.2, test=0.2))
    sources = datasets.corpus_sources(config)
    assert [s.name for s in sources] == [d["source"] for d in docs]
    assert all(s.format == "document" for s in sources)
    data_dir = prepare.prepare(config)
    manifest = prepare.load_manifest(data_dir)
    rows = _rejected_rows(data_dir)
    copy, latin1 = str(root / "tech" / "50-copy.txt"), str(root / "tech" / "70-latin1.txt")
    assert sorted((r["source"], r["reason"]) for r in rows) == sorted(
        [(copy, "duplicate"), (str(root / "sport" / "60-empty.txt"), "empty"), (latin1, "invalid_utf8")])
    dup = next(r for r in rows if r["reason"] == "duplicate")
    assert dup["detail"] == f"same content as {root / 'business' / '03.txt'}:1 (labelled 'tech' there: 'business')"
    assert manifest["rejected"]["by_reason"] == {"duplicate": 1, "empty": 1, "invalid_utf8": 1}

    # the stratified split sees the documents that survive reading and de-duplication
    candidates = [d for d in docs if d["source"] not in (copy, str(root / "sport" / "60-empty.txt"))]
    reference = _stratified_reference(candidates, 0.2, 0.2, seed=0)
    labels = LabelSet.load(data_dir / "vocab" / "labels.txt")
    assert labels.labels == ["business", "sport", "tech"]
    vocab = Vocabulary.load(data_dir / "vocab" / "tokens.txt")
    total = 0
    for split in ("train", "valid", "test"):
        want = [d for d in candidates if reference[d["index"]] == split and d["source"] != latin1]
        examples = _examples(data_dir, split)
        assert [ex["ids"].tolist() for ex in examples] == [vocab.encode(d["raw"].decode().split()) for d in want]
        assert [labels.decode([ex["label"]])[0] for ex in examples] == [d["label"] for d in want]
        counts = dict(sorted(collections.Counter(d["label"] for d in want).items()))
        assert manifest["splits"][split]["label_counts"] == counts
        total += len(examples)
        if split == "train":
            assert set(counts) == {"business", "sport", "tech"}  # every class keeps training data
        else:
            assert counts.get("business") == 2 and counts.get("sport") == 2  # (r + 0.5) / 10 cut at 0.2, 0.4
    assert total == 30  # 30 documents + copy + empty + latin1 - 3 rejected


# ------------------------------------------------------------------ refused split combinations
def test_stratified_split_on_a_tagging_corpus_is_refused_clearly(tmp_path):
    path = tmp_path / "ner.txt"
    path.write_text("EU B-ORG\nrejects O\n\nPeter B-PER\n", encoding="utf-8")
    with pytest.raises(ValueError, match="stratified"):
        config = DataConfig(dataset="columns", files=[str(path)], output_dir=str(tmp_path / "out"),
                            split=SplitConfig(method="stratified"))
        prepare.prepare(config)


def test_max_lines_on_a_corpus_stored_by_class_keeps_every_class(tmp_path, monkeypatch):
    # relative paths: the hash order is keyed on the source names, which must not hold the random tmp dir
    monkeypatch.chdir(tmp_path)
    for label in ("a", "b", "c"):
        (tmp_path / "c" / label).mkdir(parents=True)
        for i in range(20):
            (tmp_path / "c" / label / f"{i:02d}.txt").write_text(f"{label} document {i}", encoding="utf-8")
    config = DataConfig(dataset="folder", files=["c"], output_dir="out",
                        split=SplitConfig(method="stratified", valid=0.2, test=0.2), max_lines={"train": 9})
    data_dir = prepare.prepare(config)
    manifest = prepare.load_manifest(data_dir)
    assert manifest["splits"]["train"]["examples"] == 9
    # corpus order would keep 9 documents of "a"; the hash order keeps all three classes
    assert set(manifest["splits"]["train"]["label_counts"]) == {"a", "b", "c"}
    assert str(tmp_path) not in (data_dir / "manifest.json").read_text(encoding="utf-8")  # the order above is the same in every run


def test_interleave_split_on_a_class_folder_corpus_is_not_silently_all_train(tmp_path):
    for label in ("x", "y"):
        (tmp_path / "c" / label).mkdir(parents=True)
        for i in range(10):
            (tmp_path / "c" / label / f"{i:02d}.txt").write_text(f"{label} doc {i}", encoding="utf-8")
    try:
        config = DataConfig(dataset="folder", files=[str(tmp_path / "c")], output_dir=str(tmp_path / "out"),
                            split=SplitConfig(method="interleave", valid=0.1, test=0.1))
        data_dir = prepare.prepare(config)
    except ValueError:
        return  # refusing the combination is a fine fix too
    manifest = prepare.load_manifest(data_dir)
    assert manifest["splits"]["valid"]["examples"] > 0 and manifest["splits"]["test"]["examples"] > 0


# ------------------------------------------------------------------------------ real recipes


@needs_twt
def test_twt_recipe_reads_4851_sentences_without_rejections():
    config = DataConfig(dataset="twt")
    assert config.task == "tagging" and config.format == "conllu"
    sources = datasets.corpus_sources(config)
    assert [s.name for s in sources] == ["turkish-treebanks:data/web.conllu", "turkish-treebanks:data/wiki.conllu"]
    assert all(s.split is None and s.format == "conllu" for s in sources)
    records = [r for s in sources for r in s.records()]
    assert len(records) == 4851
    assert not [r for r in records if "reject" in r]
    assert all(len(r["tokens"]) == len(r["tags"]) > 0 for r in records)
    for s in sources:  # items are numbered per file, from 0, with no gap
        items = [r["item"] for r in records if r["source"] == s.name]
        assert items == list(range(len(items)))
    xpos = datasets.corpus_sources(DataConfig(dataset="twt", reader={"conllu_tag": "xpos"}))
    assert dict(xpos[0].options) == {"tag_column": "xpos"}


@needs_bbc
def test_bbc_recipe_has_2225_documents_in_5_labels():
    config = DataConfig(dataset="bbc")
    assert config.task == "classification" and config.dedupe_enabled
    sources = datasets.corpus_sources(config)
    assert len(sources) == 2225
    assert sorted({s.label for s in sources}) == ["business", "entertainment", "politics", "sports", "tech"]
    assert all(s.format == "document" and s.split is None for s in sources)
    assert [s.name for s in sources] == sorted(s.name for s in sources)


@needs_bbc
def test_bbc_full_prepare_stratified(tmp_path):
    # max_length: with the default 1000, 24 long articles would be rejected as too_long as well
    config = DataConfig(dataset="bbc", max_length=10000, output_dir=str(tmp_path),
                        split=SplitConfig(method="stratified", valid=0.1, test=0.1))
    data_dir = prepare.prepare(config)
    manifest = prepare.load_manifest(data_dir)
    assert manifest["rejected"]["by_reason"] == {"duplicate": 98, "invalid_utf8": 1}
    splits = manifest["splits"]
    assert sum(s["examples"] for s in splits.values()) == 2126
    assert manifest["labels"]["size"] == 5
    for label in ("business", "entertainment", "politics", "sports", "tech"):
        n = sum(s["label_counts"].get(label, 0) for s in splits.values())
        share = splits["valid"]["label_counts"][label] / n, splits["test"]["label_counts"][label] / n
        assert abs(share[0] - 0.1) < 0.01 and abs(share[1] - 0.1) < 0.01, label
