"""preprocessing.manifest.Manifest: the loaded manifest's typed accessors."""

import json
import os

import pytest

from preprocessing.manifest import DataError, Manifest, load_manifest, manifest_fingerprint


def _write(tmp_path, **extra):
    body = {"task": "tagging", "dataset": "conllu", "sources": [], "tokenizer": {"level": "word"},
            "vocab": {"path": "vocab/tokens.txt", "size": 5, "sha256": "x"},
            "labels": {"path": "vocab/tags.txt", "size": 2, "sha256": "y"},
            "features": {"ids": "sequence", "tags": "sequence"},  # the spec the shards were written with
            "splits": {"train": {"examples": 1}}, "rejected": {"count": 0}, "config": {}, **extra}
    body["fingerprint"] = manifest_fingerprint(body)
    (tmp_path / "manifest.json").write_text(json.dumps(body))
    return body


def test_typed_accessors_and_files(tmp_path):
    body = _write(tmp_path)
    m = load_manifest(tmp_path)
    assert isinstance(m, Manifest) and dict(m) == body  # still the JSON object, read-only
    assert (m.task, m.fingerprint, m.tokenizer, m.target_tokenizer) == ("tagging", body["fingerprint"],
                                                                         {"level": "word"}, None)
    assert m.splits == {"train": {"examples": 1}}
    assert m.file("vocab") == os.path.join(str(tmp_path), "vocab/tokens.txt")
    assert m.has_file("labels") and not m.has_file("chars")
    with pytest.raises(DataError, match=r"no 'chars' file \(it has: vocab, labels\)"):
        m.file("chars")
    with pytest.raises(TypeError):
        m["task"] = "lm"  # read-only


def test_the_feature_spec_is_read_from_the_manifest(tmp_path):
    from preprocessing.input_fns import features_of

    _write(tmp_path)
    assert features_of(load_manifest(tmp_path), tmp_path) == {"ids": "sequence", "tags": "sequence"}
    _write(tmp_path, features={})  # prepared by an rnnflow that did not record it
    with pytest.raises(DataError, match="records no feature spec"):
        features_of(load_manifest(tmp_path), tmp_path)
    _write(tmp_path, features={"ids": "ragged"})
    with pytest.raises(ValueError, match="kind must be one of"):
        features_of(load_manifest(tmp_path), tmp_path)


def test_the_unseen_labels_file_is_a_recorded_file(tmp_path):
    _write(tmp_path, unseen_labels={"path": "vocab/unseen_tags.txt", "size": 1, "sha256": "z"})
    m = load_manifest(tmp_path)
    assert m.file("unseen_labels") == os.path.join(str(tmp_path), "vocab/unseen_tags.txt")
    with pytest.raises(DataError, match=r"it has: vocab, labels, unseen_labels\)"):
        m.file("chars")
