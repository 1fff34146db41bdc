"""The prepare job for parallel pairs: separate source / target vocabularies, split by source group,
rejected pairs with reasons, and the Beam → TFRecord → tf.data round trip."""

import itertools
import json

from pipelines import prepare
from pipelines.config import DataConfig, SplitConfig, TargetTokenizerConfig
from preprocessing.input_fns import load_examples, pad_batch
from preprocessing.vocab import BOS_ID, EOS_ID, Vocabulary


def _config(tmp_path, path, **kw):
    return DataConfig(dataset="pairs", files=[str(path)], level="char", max_length=6,
                      target=TargetTokenizerConfig(level="word"), output_dir=str(tmp_path / "out"),
                      split=SplitConfig(valid=0.3, test=0.3, seed=1), **kw)


def test_pairs_round_trip_with_separate_vocabularies_and_rejects(tmp_path):
    words = ["".join(p) for p in itertools.product("abc", repeat=3)]  # 27 words, every letter in train
    lines = [f"{w}\t{' '.join(w[::-1].upper())} X" for w in words]  # phoneme-like: "C B A X"
    lines += ["abc\tA A", "no tab", "toolongword\tA", "\tA", "ok\t ", "bad\xff".encode("latin-1").decode("latin-1")]
    data = ("\n".join(lines[:-1]) + "\n").encode() + b"bad\xff\tB\n"
    path = tmp_path / "pairs.tsv"
    path.write_bytes(data)
    data_dir = prepare.prepare(_config(tmp_path, path))
    manifest = prepare.load_manifest(data_dir)
    assert manifest["task"] == "seq2seq"
    assert manifest["target_tokenizer"]["level"] == "word"
    source_vocab = Vocabulary.load(data_dir / manifest["vocab"]["path"])
    target_vocab = Vocabulary.load(data_dir / manifest["target_vocab"]["path"])
    assert "a" in source_vocab and "X" in target_vocab and "a" not in target_vocab

    rejected = [json.loads(x) for x in (data_dir / manifest["rejected"]["path"]).read_text().splitlines()]
    reasons = {(r["line"], r["reason"]) for r in rejected}
    assert reasons == {(29, "bad_columns"), (30, "too_long"), (31, "empty"), (32, "empty"), (33, "invalid_utf8")}
    assert any("target:" in r["detail"] for r in rejected if r["line"] == 32)  # the empty side is named

    # every pair read back once, in its split; both pronunciations of w3 in the same split
    seen = {}
    for split in ("train", "valid", "test"):
        ex = load_examples(data_dir, split)
        for src, tgt in zip(ex.ids, ex.targets):
            word = "".join(source_vocab.decode(src))
            seen.setdefault(word, []).append((split, " ".join(target_vocab.decode(tgt))))
    assert sorted(seen) == sorted(words)
    assert len(seen["abc"]) == 2 and len({s for s, _ in seen["abc"]}) == 1
    assert {t for _, t in seen["abc"]} == {"C B A X", "A A"}
    assert all(m["examples"] > 0 for m in manifest["splits"].values())

    # decoder input / target: <bos> y and y <eos>
    ex = load_examples(data_dir, "train")
    batch = pad_batch(ex, [0])
    n = len(ex.targets[0])
    assert batch["target_in"][0, 0] == BOS_ID
    assert batch["target_in"][0, 1 : n + 1].tolist() == ex.targets[0].tolist()
    assert batch["target_out"][0, : n + 1].tolist() == ex.targets[0].tolist() + [EOS_ID]
    assert batch["source_ids"][0, : len(ex.ids[0])].tolist() == ex.ids[0].tolist()
