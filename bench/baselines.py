"""Baselines on the same splits as our models: NLTK's averaged perceptron (TWT UPOS) and TF-IDF +
logistic regression (BBC topics), both trained from scratch here (nothing is downloaded).

* ``twt``: the sentences of the config's prepared split, with their original tokens (the perceptron's
  features are its own: word, suffixes, prefix, case, neighbours, the two previous tags), read with
  the same reader and split rule as the prepare job; the sentence counts are checked against the
  prepared manifest. ``PerceptronTagger(load=False).train(..., nr_iter=5)``.
* ``bbc``: the documents of the config's prepared split as our classifier sees them (decoded token
  ids: normalized, lower-cased, rare words as ``<unk>``), TF-IDF over word 1-2-grams (sublinear tf)
  and ``LogisticRegression`` (C chosen on the validation split from 1, 10, 100).

Example::

    .venv/bin/python bench/baselines.py twt configs/twt_pos.yaml --output bench/results/twt_perceptron.json
    .venv/bin/python bench/baselines.py bbc configs/bbc_topics.yaml --output bench/results/bbc_tfidf.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from common import machine, write_report


def twt_sentences(config) -> dict[str, list[list[tuple[str, str]]]]:
    """``{split: [[(token, tag), ...], ...]}`` by the prepare job's reader and split rule."""
    from pipelines import datasets
    from pipelines.beam.splits import hash_split, interleave_split

    s = config.data.split
    out: dict[str, list] = {"train": [], "valid": [], "test": []}
    for source in datasets.corpus_sources(config.data):
        for record in source.records():
            if "reject" in record:
                continue
            if s.method == "interleave":
                split = interleave_split(record["item"], s.valid, s.test, s.period)
            else:
                split = hash_split(record["source"], record["line"], s.valid, s.test, s.seed)
            if len(record["tokens"]) <= config.data.max_length:
                out[split].append(list(zip(record["tokens"], record["tags"])))
    return out


def run_twt(config, data_dir) -> dict:
    from nltk.tag.perceptron import PerceptronTagger

    from preprocessing.manifest import load_manifest

    manifest = load_manifest(data_dir)
    sentences = twt_sentences(config)
    for split, sents in sentences.items():
        if len(sents) != manifest["splits"][split]["examples"]:
            raise RuntimeError(f"{split}: {len(sents)} sentences here, {manifest['splits'][split]['examples']} prepared")
    start = time.perf_counter()
    tagger = PerceptronTagger(load=False)
    tagger.train([list(s) for s in sentences["train"]], nr_iter=5)
    train_s = time.perf_counter() - start
    scores = {}
    for split in ("valid", "test"):
        gold = [t for s in sentences[split] for _, t in s]
        pred = [t for s in sentences[split] for _, t in tagger.tag([w for w, _ in s])]
        scores[f"{split}_accuracy"] = sum(a == b for a, b in zip(gold, pred)) / len(gold)
        scores[f"{split}_tokens"] = len(gold)
    return {"baseline": "NLTK averaged perceptron (5 iterations), original tokens", "train_s": round(train_s, 1),
            **{k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()}}


def run_bbc(config, data_dir) -> dict:
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    from preprocessing.input_fns import load_examples
    from preprocessing.manifest import load_manifest, vocab_path
    from preprocessing.vocab import Vocabulary

    vocab = Vocabulary.load(vocab_path(data_dir, load_manifest(data_dir)))
    splits = {s: load_examples(data_dir, s) for s in ("train", "valid", "test")}
    texts = {s: [" ".join(vocab.decode(ids)) for ids in ex.ids] for s, ex in splits.items()}
    start = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, token_pattern=r"\S+")
    x_train = vectorizer.fit_transform(texts["train"])
    best = None
    for c in (1.0, 10.0, 100.0):
        model = LogisticRegression(C=c, max_iter=2000).fit(x_train, splits["train"].labels)
        acc = float(np.mean(model.predict(vectorizer.transform(texts["valid"])) == splits["valid"].labels))
        if best is None or acc > best[0]:
            best = (acc, c, model)
    train_s = time.perf_counter() - start
    _, c, model = best
    scores = {}
    for split in ("valid", "test"):
        pred = model.predict(vectorizer.transform(texts[split]))
        gold = splits[split].labels
        scores[f"{split}_accuracy"] = round(float(np.mean(pred == gold)), 4)
        scores[f"{split}_macro_f1"] = round(float(f1_score(gold, pred, average="macro")), 4)
        scores[f"{split}_examples"] = len(gold)
    return {"baseline": f"TF-IDF word 1-2-grams + logistic regression (C={c:g}, chosen on valid)",
            "train_s": round(train_s, 1), **scores}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=["twt", "bbc"])
    parser.add_argument("config", help="the run config whose data (and split) the baseline uses")
    parser.add_argument("--output", help="write the results as JSON here")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from pipelines.config import load_config
    from pipelines.prepare import prepare

    config = load_config(args.config)
    data_dir = prepare(config.data)
    report = {"config": args.config, "data": str(data_dir), **(run_twt if args.task == "twt" else run_bbc)(config, data_dir),
              "machine": machine()}
    write_report(report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
