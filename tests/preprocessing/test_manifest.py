"""preprocessing.manifest.Manifest: the loaded manifest's typed accessors."""

import json
import os

import pytest

from preprocessing.manifest import DataError, Manifest, load_manifest, manifest_fingerprint


def _write(tmp_path, **extra):
    body = {"task": "tagging", "dataset": "conllu", "sources": [], "tokenizer": {"level": "word"},
            "vocab": {"path": "vocab/tokens.txt", "size": 5, "sha256": "x"},
            "labels": {"path": "vocab/tags.txt", "size": 2, "sha256": "y"},
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
