"""Prepared data is verified, not trusted: shard sha256 and counts in the manifest, checked on reuse
and on read; leftover temporary directories of dead jobs; an empty corpus is an error."""

import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys

import pytest
import tensorflow as tf

from pipelines import prepare
from pipelines.config import DataConfig, SplitConfig
from preprocessing import schema
from preprocessing.input_fns import lm_token_stream, load_examples, read_split
from preprocessing.manifest import DataError, load_manifest, manifest_fingerprint, split_paths, verify_shards

CORPUS = ["the cat sat on the mat", "the dog sat", "a cat and a dog", "on the mat the cat sat", "the end"] * 6


def _config(corpus, output_dir, **kw) -> DataConfig:
    return DataConfig(dataset="text", files=[str(corpus)], output_dir=str(output_dir), num_shards=2,
                      split={"valid": 0.2, "test": 0.2, "seed": 0}, **kw)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("verify") / "corpus.txt"
    path.write_text("\n".join(f"{line} {i}" for i, line in enumerate(CORPUS)) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
    return prepare.prepare(_config(corpus, tmp_path_factory.mktemp("verify_out")))


@pytest.fixture
def copy(prepared, tmp_path):
    """A private copy of the prepared directory, safe to damage."""
    target = tmp_path / prepared.name
    shutil.copytree(prepared, target)
    return target


def _train_shards(data_dir):
    return split_paths(data_dir, load_manifest(data_dir), "train")


def _flip_a_byte(path, offset=None):
    data = bytearray(open(path, "rb").read())
    offset = len(data) // 2 if offset is None else offset
    data[offset] ^= 0x20
    open(path, "wb").write(bytes(data))


def _truncate(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) * 2 // 3])


def _swap_in_valid_shard(data_dir):
    """A valid shard copied over the second train shard (a well-formed file with the wrong data)."""
    manifest = load_manifest(data_dir)
    target = _train_shards(data_dir)[1]
    shutil.copyfile(split_paths(data_dir, manifest, "valid")[0], target)
    return target


def _damage(data_dir, target, damage):
    """Damages ``target`` (a train shard of ``data_dir``): bit_flip, truncate, swap (a valid shard
    over the second train shard) or missing."""
    if damage == "bit_flip":
        _flip_a_byte(target)
    elif damage == "truncate":
        _truncate(target)
    elif damage == "swap":
        _swap_in_valid_shard(data_dir)
    else:
        os.remove(target)


# ------------------------------------------------------------------------------------- manifest
def test_manifest_records_each_shards_sha256_and_counts(prepared):
    manifest = load_manifest(prepared)
    assert manifest["prepare_version"] == prepare.PREPARE_VERSION >= 4
    for split, s in manifest["splits"].items():
        assert sorted(s["shard_info"]) == s["shards"], split
        ids = []
        for name in s["shards"]:
            info = s["shard_info"][name]
            data = (prepared / name).read_bytes()
            assert info["sha256"] == hashlib.sha256(data).hexdigest()
            assert info["bytes"] == len(data)
            ds = tf.data.TFRecordDataset(str(prepared / name), compression_type="GZIP")
            examples = [schema.parse_example({"ids": schema.SEQUENCE}, r)["ids"].numpy() for r in ds]
            assert info["examples"] == len(examples)
            assert info["tokens"] == sum(len(e) for e in examples)
            ids += examples
        assert sum(i["examples"] for i in s["shard_info"].values()) == s["examples"] == len(ids)
        assert sum(i["tokens"] for i in s["shard_info"].values()) == s["tokens"]
    edited = json.loads((prepared / "manifest.json").read_text())
    edited["splits"]["train"]["shard_info"][manifest["splits"]["train"]["shards"][0]]["sha256"] = "0" * 64
    assert manifest_fingerprint(edited) != manifest["fingerprint"], "the fingerprint covers the shard hashes"


# ---------------------------------------------------------------------------------- verify_shards
def test_verify_shards_passes_on_intact_data(prepared):
    verify_shards(prepared, load_manifest(prepared))
    verify_shards(prepared, load_manifest(prepared), splits=["valid"])


@pytest.mark.parametrize("damage", ["bit_flip", "truncate", "swap", "missing"])
def test_verify_shards_names_the_damaged_file_and_says_what_to_do(copy, damage):
    target = _train_shards(copy)[1]
    _damage(copy, target, damage)
    manifest = load_manifest(copy)
    verify_shards(copy, manifest, splits=["valid", "test"])  # the other splits are intact
    with pytest.raises(DataError) as info:
        verify_shards(copy, manifest)
    message = str(info.value)
    assert target in message
    assert "rnnflow prepare" in message and "--force" in message
    if damage == "missing":
        assert "missing" in message
    else:
        expected = manifest["splits"]["train"]["shard_info"][os.path.basename(target)]
        assert expected["sha256"] in message or str(expected["bytes"]) in message  # what was expected
        found = open(target, "rb").read()
        assert hashlib.sha256(found).hexdigest() in message or str(len(found)) in message  # what was found


def test_verify_shards_refuses_a_manifest_without_shard_hashes(copy):
    path = copy / "manifest.json"
    manifest = json.loads(path.read_text())
    for s in manifest["splits"].values():
        del s["shard_info"]
    manifest["fingerprint"] = manifest_fingerprint(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"no shard sha256.*rnnflow prepare .*--force"):
        verify_shards(copy, load_manifest(copy))


# ------------------------------------------------------------------------------------------ reuse
@pytest.mark.parametrize("damage", ["bit_flip", "swap", "missing", "vocab"])
def test_prepare_rebuilds_a_directory_that_fails_verification(corpus, tmp_path, caplog, damage):
    config = _config(corpus, tmp_path)
    data_dir = prepare.prepare(config)
    good = {name: (data_dir / name).read_bytes() for name in os.listdir(data_dir) if name.endswith(".gz")}
    good_vocab = (data_dir / "vocab" / "tokens.txt").read_bytes()
    target = _train_shards(data_dir)[1]
    if damage != "vocab":
        _damage(data_dir, target, damage)
    else:
        target = str(data_dir / "vocab" / "tokens.txt")
        with open(target, "ab") as f:
            f.write(b"extra\n")
    with caplog.at_level(logging.INFO, logger="pipelines.prepare"):
        assert prepare.prepare(config) == data_dir
    assert "reusing" not in caplog.text
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(target in w and "rebuilt" in w for w in warnings), warnings
    assert {name: (data_dir / name).read_bytes() for name in good} == good
    assert (data_dir / "vocab" / "tokens.txt").read_bytes() == good_vocab
    verify_shards(data_dir, load_manifest(data_dir))
    assert os.listdir(tmp_path) == [data_dir.name]


# --------------------------------------------------------------------------------------- training
def test_training_input_refuses_a_damaged_shard(copy):
    target = _train_shards(copy)[0]
    _flip_a_byte(target)
    for read in (lambda: lm_token_stream(copy, "train"), lambda: list(read_split(copy, "train"))):
        with pytest.raises(DataError, match=r"rnnflow prepare") as info:
            read()
        assert target in str(info.value)
    assert len(lm_token_stream(copy, "valid")) == load_manifest(copy)["splits"]["valid"]["tokens"]


@pytest.mark.parametrize("damage", ["bit_flip", "truncate"])
def test_a_read_error_names_the_file_instead_of_a_data_loss_traceback(copy, damage):
    target = _train_shards(copy)[1]
    (_flip_a_byte if damage == "bit_flip" else _truncate)(target)
    with pytest.raises(DataError, match=r"rnnflow prepare .*--force") as info:
        lm_token_stream(copy, "train", verify=False)  # the hashes not checked: the reader itself must name the file
    assert target in str(info.value)


def test_counts_read_must_equal_the_manifest(copy):
    target = _swap_in_valid_shard(copy)
    with pytest.raises(DataError, match=r"examples") as info:
        lm_token_stream(copy, "train", verify=False)
    assert target in str(info.value) and "rnnflow prepare" in str(info.value)
    with pytest.raises(DataError, match=r"sha256"):
        lm_token_stream(copy, "train")


@pytest.fixture(scope="module")
def classification(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify_cls")
    path = root / "docs.jsonl"
    docs = [{"text": f"{label}word common doc{i}", "label": label}
            for i, label in enumerate(("pos", "neg") * 10)]
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    config = DataConfig(dataset="jsonl", files=[str(path)], output_dir=str(root / "out"), num_shards=2,
                        split=SplitConfig(method="stratified", valid=0.2, test=0.2, seed=3))
    return prepare.prepare(config)


def test_load_examples_verifies_and_counts(classification, tmp_path):
    data_dir = tmp_path / "cls"
    shutil.copytree(classification, data_dir)
    manifest = load_manifest(data_dir)
    assert len(load_examples(data_dir, "train")) == manifest["splits"]["train"]["examples"]
    target = split_paths(data_dir, manifest, "train")[0]
    _truncate(target)
    with pytest.raises(DataError, match="rnnflow prepare") as info:
        load_examples(data_dir, "train")
    assert target in str(info.value)
    with pytest.raises(DataError, match="rnnflow prepare") as info:
        load_examples(data_dir, "train", verify=False)
    assert target in str(info.value)


# ------------------------------------------------------------------------------ leftover tmp dirs
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftover_tmp_dirs_are_removed_only_when_their_owner_is_gone(corpus, tmp_path, caplog):
    config = _config(corpus, tmp_path)
    name = prepare.prepare(config).name
    host = socket.gethostname()
    dead = tmp_path / prepare.tmp_dir_name(name, host, _dead_pid())
    live = tmp_path / prepare.tmp_dir_name(name, host, os.getpid())
    elsewhere = tmp_path / prepare.tmp_dir_name(name, "another-host.example", _dead_pid())
    unowned = tmp_path / f".{name}.tmp-0123abcd"  # the old naming: owner unknown
    other_dataset = tmp_path / prepare.tmp_dir_name("text-000000000000", host, _dead_pid())
    for d in (dead, live, elsewhere, unowned, other_dataset):
        (d / "vocab").mkdir(parents=True)
        (d / "train-00000-of-00001.tfrecord.gz").write_bytes(b"half a shard")
    with caplog.at_level(logging.INFO, logger="pipelines.prepare"):
        data_dir = prepare.prepare(config)
    assert data_dir.name == name
    assert sorted(os.listdir(tmp_path)) == sorted([name, live.name, elsewhere.name, unowned.name, other_dataset.name])
    assert dead.name in caplog.text and live.name in caplog.text  # removed / left: both logged
    # the tmp dir of a running prepare carries its owner
    assert prepare.tmp_owner(live.name) == (host, os.getpid())
    assert prepare.tmp_owner(unowned.name) is None


# ---------------------------------------------------------------------------------- empty corpus
def test_an_empty_corpus_is_an_error_naming_the_sources_and_the_rejections(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_bytes(b"  \n\t\n" + b" ".join([b"w"] * 20) + b"\n")
    out = tmp_path / "out"
    with pytest.raises(DataError) as info:
        prepare.prepare(DataConfig(dataset="text", files=[str(path)], output_dir=str(out), max_length=8))
    message = str(info.value)
    assert str(path) in message
    assert "0 training examples" in message
    assert "3 record(s) rejected" in message and "empty: 2" in message and "too_long: 1" in message
    assert os.listdir(out) == [], "no directory is left behind"


@pytest.mark.parametrize("fmt", ["columns", "tsv"])
def test_an_empty_labelled_corpus_is_an_error_naming_the_sources_and_the_rejections(tmp_path, fmt):
    """Tagging and classification too: no training example is a DataError from the prepare job
    (with the rejection reasons), not a failure deep in the pipeline."""
    if fmt == "columns":  # one column per line: no tag column, so every sentence is bad_columns
        path = tmp_path / "tokens.txt"
        path.write_text("the\ncat\n\na\ndog\n")
        reason = "bad_columns: 2"
    else:  # a label without text on every line
        path = tmp_path / "labels.tsv"
        path.write_text("sport\t\nnews\t \n")
        reason = "empty: 2"
    out = tmp_path / "out"
    with pytest.raises(DataError) as info:
        prepare.prepare(DataConfig(dataset=fmt, files=[str(path)], output_dir=str(out)))
    message = str(info.value)
    assert str(path) in message and "0 training examples" in message and reason in message, message
    assert os.listdir(out) == []
