"""Batch scoring as a Beam job (``rnnflow predict``, :mod:`pipelines.predict`, :mod:`pipelines.beam.inference`):
for every task, the job's predictions are the in-process MLflow pyfunc model's for the same lines;
invalid UTF-8 and empty lines go to ``rejected/``; the counts add up; the output appears only when
complete (a failing job leaves nothing, ``--force`` replaces only a finished one); the alias is
resolved on the launcher; the model is loaded once per process; and the DaskRunner (a scheduler and
two workers started here on 127.0.0.1) writes what the in-process runner writes (floats up to their
last float32 digit).

The models are tiny exports (vocabulary ~11, units 4) built with fixed seeds, logged and registered
in a module-wide sqlite store, as ``tests/pipelines/test_model_loading.py`` does: what is scored is
the export, trained or not.
"""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path

import apache_beam as beam
import keras
import mlflow
import numpy as np
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from mlflow import MlflowClient

from keras_models.export import (LanguageModelScorer, Seq2SeqExport, SequenceTaggerExport, TextClassifierExport,
                                 TextToIds)
from keras_models.models.classifier import RNNClassifier
from keras_models.models.language_model import RNNLanguageModel
from keras_models.models.seq2seq import Seq2SeqModel
from keras_models.models.tagger import RNNTagger
from pipelines import cli, predict, tracking
from pipelines.beam import inference
from pipelines.beam.names import REJECTED_FILE
from pipelines.beam.runners import local_runner
from pipelines.run import EXIT_OK, EXIT_USAGE
from preprocessing.tokenizers import TokenizerConfig
from services import dask_cluster, show_logs_on_failure

WORDS = ["<pad>", "<unk>", "<bos>", "<eos>", "the", "cat", "sat", "on", "mat", "a", "dog"]
CHARS = ["<pad>", "<unk>", "<bos>", "<eos>", *"acdegmnost "]
PHONES = ["<pad>", "<unk>", "<bos>", "<eos>", "AH", "K", "T", "D", "G", "S", "M"]
TAGS = ["DET", "NOUN", "VERB", "ADP"]
LABELS = ["pets", "places", "other"]
WORD_TOKENIZER = TokenizerConfig().to_dict()
CHAR_TOKENIZER = TokenizerConfig(level="char").to_dict()
TASKS = ("lm", "tagging", "classification", "seq2seq")


def pipeline():
    return test_pipeline.TestPipeline(runner=local_runner())  # in-process (DirectRunner would try Prism)


# ------------------------------------------------------------------------------------- models
def _randomize(*layers_with_kernels, seed=3):
    """Large random weights so that outputs differ from line to line (argmax, tags, hypotheses)."""
    rng = np.random.default_rng(seed)
    for weight in layers_with_kernels:
        weight.assign(rng.normal(scale=2.0, size=weight.shape).astype("float32"))


def _build(task: str):
    keras.utils.set_random_seed(0)
    if task == "lm":
        lm = RNNLanguageModel(vocab_size=len(WORDS), cell="gru", num_layers=1, embedding_dim=4, hidden_dim=4)
        lm.build((None, None))
        return LanguageModelScorer(TextToIds(WORD_TOKENIZER, WORDS), lm)
    if task == "tagging":
        tagger = RNNTagger(len(WORDS), len(TAGS), cell="lstm", embedding_dim=4, hidden_dim=4, seed=5)
        tagger.build((None, None))
        _randomize(tagger.embedding.embeddings, tagger.output_layer.kernel)
        return SequenceTaggerExport(TextToIds(WORD_TOKENIZER, WORDS, append_eos=False), tagger, TAGS)
    if task == "classification":
        classifier = RNNClassifier(len(WORDS), len(LABELS), cell="gru", embedding_dim=4, hidden_dim=4,
                                   pooling="mean", mlp_dims=[5], seed=5)
        classifier.build((None, None))
        _randomize(classifier.embedding.embeddings, classifier.output_layer.kernel)
        return TextClassifierExport(TextToIds(WORD_TOKENIZER, WORDS, append_eos=False), classifier, LABELS)
    model = Seq2SeqModel(len(CHARS), len(PHONES), cell="gru", encoder_layers=1, embedding_dim=4, hidden_dim=4,
                         decoder_dim=8, attention="dot", seed=5)
    model.build()
    return Seq2SeqExport(TextToIds(CHAR_TOKENIZER, CHARS, append_eos=False), model, PHONES, beam_size=2,
                         max_length=6)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Each task's export logged and registered as ``predict-<task>`` version 1, alias ``champion``, in
    a module-wide sqlite store; returns ``(store URI, {task: logged model URI})``."""
    root = tmp_path_factory.mktemp("registry")
    store = f"sqlite:///{root}/mlflow.db"
    logged = {}
    with tracking.Tracker(store, "predict", run_name="exports") as t:
        for task in TASKS:
            logged[task] = t.log_model(_build(task), task, input_example=["the cat", "a dog sat"])
            assert t.register_model(logged[task], f"predict-{task}") == "1"
    client = MlflowClient(store)
    for task in TASKS:
        client.set_registered_model_alias(f"predict-{task}", "champion", "1")
    return store, logged


# ------------------------------------------------------------------------------------- corpus
# (file, line) of the lines to be rejected, and why
BAD = {("a.txt", 3): "invalid_utf8", ("a.txt", 5): "empty", ("b.txt", 2): "empty"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two files of short sentences (known and unknown words): in ``a.txt`` an invalid UTF-8 line (3)
    and an empty one (5), in ``b.txt`` a whitespace-only line (2) and a CRLF line ending."""
    root = tmp_path_factory.mktemp("inputs")
    words = ["the", "cat", "sat", "on", "a", "mat", "dog", "zebra"]
    a = [" ".join(words[(i + j) % len(words)] for j in range(1 + i % 4)).encode() for i in range(14)]
    b = [" ".join(words[(2 * i + j) % len(words)] for j in range(1 + i % 3)).encode() for i in range(9)]
    a[2] = b"caf\xe9 cat"
    a[4] = b""
    b[1] = b" \t "
    (root / "a.txt").write_bytes(b"\n".join(a) + b"\n")
    (root / "b.txt").write_bytes(b"\r\n".join(b) + b"\r\n")
    return root


def _texts(corpus) -> list[tuple[str, int, str]]:
    """``(file, line, text)`` of every line the job should score, in input order."""
    out = []
    for name in ("a.txt", "b.txt"):
        for number, raw in enumerate((corpus / name).read_bytes().split(b"\n")[:-1], start=1):
            if (name, number) not in BAD:
                out.append((str(corpus / name), number, raw.rstrip(b"\r").decode()))
    return out


def _predictions(out_dir) -> list[dict]:
    manifest = json.loads((out_dir / "manifest.json").read_text())
    rows = []
    for shard in manifest["shards"]:
        rows += [json.loads(line) for line in (out_dir / shard["name"]).read_text(encoding="utf-8").splitlines()]
    return rows


def _files(directory) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(Path(directory).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def scored(registry, corpus, tmp_path_factory):
    """Every task's champion over the corpus with the in-process runner: ``{task: output dir}``
    (batches of 4, 3 shards)."""
    store, _ = registry
    root = tmp_path_factory.mktemp("scored")
    return {task: predict.predict(f"models:/predict-{task}@champion", [str(corpus / "*.txt")], str(root / task),
                                  tracking_uri=store, batch_size=4, num_shards=3)
            for task in TASKS}


def _pyfunc_rows(store, task, texts) -> list[dict]:
    """The MLflow pyfunc model's outputs for ``texts`` in one call, row by row (per-token outputs cut to
    the row's ``length``, as the job writes them)."""
    mlflow.set_tracking_uri(store)
    outputs = mlflow.pyfunc.load_model(f"models:/predict-{task}/1").predict(np.array(texts, dtype=object))
    rows = []
    for i in range(len(texts)):
        row = {k: v[i] for k, v in outputs.items()}
        if "length" in row:
            row = {k: (v[: int(row["length"])] if k in ("tokens", "tags") else v) for k, v in row.items()}
        rows.append(row)
    return rows


def _assert_same(job: dict, reference: dict, where) -> None:
    assert sorted(job) == sorted(reference), where
    for key, want in reference.items():
        want = np.asarray(want)
        got = job[key]
        if want.dtype.kind in "fc":
            np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want.astype(np.float64), rtol=1e-5,
                                       atol=1e-6, err_msg=f"{where}: {key}")
        elif want.dtype.kind in "iu":
            assert got == want.tolist(), (where, key)
        else:
            assert got == [str(x) for x in want.ravel()] if want.ndim else got == str(want), (where, key)


# ---------------------------------------------------------------------- the job, every task
@pytest.mark.parametrize("task", TASKS)
def test_the_jobs_predictions_are_the_pyfunc_models(task, registry, corpus, scored):
    store, _ = registry
    rows = _predictions(scored[task])
    expected = _texts(corpus)
    assert [(r["source"], r["line"], r["input"]) for r in rows] == expected  # every line once, in input order
    assert all(r["model"] == {"name": f"predict-{task}", "version": "1", "uri": f"models:/predict-{task}/1"}
               for r in rows)
    reference = _pyfunc_rows(store, task, [text for _, _, text in expected])
    for row, want in zip(rows, reference):
        _assert_same(row["prediction"], want, (task, row["source"], row["line"]))
    keys = {"lm": ["log_prob", "num_tokens", "perplexity"], "tagging": ["length", "tags", "tokens"],
            "classification": ["label", "probabilities"], "seq2seq": ["hypotheses", "output", "scores"]}[task]
    assert list(rows[0]["prediction"]) == keys
    if task == "tagging":
        assert all(len(r["prediction"]["tags"]) == len(r["input"].split()) for r in rows)
    if task == "classification":  # the random weights make different lines get different labels
        assert len({r["prediction"]["label"] for r in rows}) > 1


def test_rejected_lines_and_the_manifest(registry, corpus, scored):
    out = scored["classification"]
    rejected = [json.loads(line) for line in (out / REJECTED_FILE).read_text(encoding="utf-8").splitlines()]
    assert {(Path(r["source"]).name, r["line"]): r["reason"] for r in rejected} == BAD
    assert [Path(r["source"]).name for r in rejected] == ["a.txt", "a.txt", "b.txt"]  # input order
    invalid = rejected[0]
    assert invalid["detail"].startswith("line 3: invalid UTF-8 at byte 3") and invalid["text"] == "caf\\xe9 cat"
    assert rejected[2]["detail"] == "only whitespace"

    manifest = json.loads((out / "manifest.json").read_text())
    n = len(_texts(corpus))
    assert manifest["counts"] == {"read": n + len(BAD), "predicted": n, "rejected": len(BAD)}
    assert manifest["rejected"] == {"count": 3, "by_reason": {"empty": 2, "invalid_utf8": 1}, "path": REJECTED_FILE}
    assert [Path(i["path"]).name for i in manifest["inputs"]] == ["a.txt", "b.txt"]
    for info in manifest["inputs"]:
        data = Path(info["path"]).read_bytes()
        assert info["lines"] == data.count(b"\n") and info["bytes"] == len(data)
        assert info["sha256"] == predict.datasets.sha256_bytes(data)
    assert [s["name"] for s in manifest["shards"]] == [f"predictions-{i:05d}-of-00003.jsonl" for i in range(3)]
    assert sum(s["lines"] for s in manifest["shards"]) == n
    for shard in manifest["shards"]:
        data = (out / shard["name"]).read_bytes()
        assert shard["sha256"] == predict.datasets.sha256_bytes(data) and shard["bytes"] == len(data)
    model = manifest["model"]
    assert model["requested"] == "models:/predict-classification@champion" and model["version"] == "1"
    assert model["task"] == "classification" and model["labels"] == LABELS
    assert manifest["batching"] == {"min_batch_size": 4, "max_batch_size": 4}
    assert manifest["runner"] == {"name": "DirectRunner", "args": []}
    assert manifest["started"] <= manifest["finished"]
    assert sorted(os.listdir(out)) == sorted(["manifest.json", "rejected", *[s["name"] for s in manifest["shards"]]])
    assert [e for e in os.listdir(out.parent) if e.startswith(".")] == []  # no temporary directory left


# ----------------------------------------------------------------- failures, --force, aliases
def test_a_failing_job_leaves_no_directory(registry, corpus, tmp_path, monkeypatch):
    store, _ = registry
    out = tmp_path / "out"

    def broken(self, texts):
        raise RuntimeError("the model broke")

    monkeypatch.setattr(inference.Predictor, "__call__", broken)
    with pytest.raises(Exception, match="the model broke"):
        predict.predict("models:/predict-lm/1", [str(corpus / "a.txt")], str(out), tracking_uri=store)
    assert os.listdir(tmp_path) == []


def test_a_runner_that_loses_lines_fails_the_job_and_keeps_nothing(registry, corpus, tmp_path, monkeypatch):
    store, _ = registry
    write_shard = inference._write_shard

    def lossy(item, output_dir, num_shards):  # drops a shard's first prediction
        shard, values = item
        return write_shard((shard, [v for v in values if v is not None][1:]), output_dir, num_shards)

    monkeypatch.setattr(inference, "_write_shard", lossy)
    with pytest.raises(RuntimeError, match=r"the runner lost lines: the inputs hold 23, 23 were read, 17 predicted "
                                           r"and 3 rejected \(3 missing\)"):
        predict.predict("models:/predict-lm/1", [str(corpus / "*.txt")], str(tmp_path / "out"), tracking_uri=store,
                        num_shards=3)
    assert os.listdir(tmp_path) == []


def test_an_existing_output_is_refused_unless_forced(registry, corpus, tmp_path, capsys, monkeypatch):
    store, _ = registry
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["predict", "--model", "models:/predict-classification@champion", "--input", str(corpus / "b.txt"),
            "--output", str(out), "--tracking-uri", store]
    assert cli.main(args) == EXIT_USAGE
    assert "exists" in capsys.readouterr().err and _files(out) == {"keep.txt": b"mine"}

    def broken(self, texts):
        raise RuntimeError("the model broke")

    with monkeypatch.context() as m:  # a failed forced job keeps the old directory
        m.setattr(inference.Predictor, "__call__", broken)
        with pytest.raises(Exception, match="the model broke"):
            predict.predict("models:/predict-classification/1", [str(corpus / "b.txt")], str(out), tracking_uri=store,
                            force=True)
    assert _files(out) == {"keep.txt": b"mine"} and sorted(os.listdir(tmp_path)) == ["out"]

    assert cli.main([*args, "--force"]) == EXIT_OK
    assert capsys.readouterr().out.strip() == str(out)
    assert "keep.txt" not in os.listdir(out) and (out / "manifest.json").is_file()
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_the_alias_is_resolved_on_the_launcher(registry, corpus, scored, tmp_path):
    """The workers get ``models:/NAME/VERSION``: moving the alias after the launcher resolved it changes
    nothing. Version 2 of the name is another task's model, so a worker loading the alias would show."""
    store, logged = registry
    name = "predict-alias"
    client = MlflowClient(store)
    assert tracking.register_model(logged["classification"], name, store) == "1"
    assert tracking.register_model(logged["lm"], name, store) == "2"
    client.set_registered_model_alias(name, "champion", "1")

    ref = predict.resolve_model(f"models:/{name}@champion", store)
    assert (ref.uri, ref.name, ref.version) == (f"models:/{name}/1", name, "1")
    client.set_registered_model_alias(name, "champion", "2")  # moved after resolving
    out = predict.predict(ref, [str(corpus / "*.txt")], str(tmp_path / "out"), tracking_uri=store, batch_size=4,
                          num_shards=3)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["version"] == "1" and manifest["model"]["task"] == "classification"
    rows, want = _predictions(out), _predictions(scored["classification"])
    assert all(r["model"] == {"name": name, "version": "1", "uri": f"models:/{name}/1"} for r in rows)
    assert [r["prediction"] for r in rows] == [r["prediction"] for r in want]
    assert predict.resolve_model(f"models:/{name}@champion", store).version == "2"


def test_a_bad_model_is_one_line_with_exit_code_2_and_no_output(registry, corpus, tmp_path, capsys):
    store, _ = registry
    out = tmp_path / "out"
    rc = cli.main(["predict", "--model", "models:/predict-lm@nope", "--input", str(corpus / "a.txt"),
                   "--output", str(out), "--tracking-uri", store])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no alias 'nope'" in err and "@champion = version 1" in err
    assert not out.exists() and os.listdir(tmp_path) == []
    rc = cli.main(["predict", "--model", "models:/predict-lm/1", "--input", str(tmp_path / "none*.txt"),
                   "--output", str(out), "--tracking-uri", store])
    assert rc == 1 and "matches no file" in capsys.readouterr().err and not out.exists()


def test_the_model_is_loaded_once_per_process_and_batched(registry, corpus, tmp_path, monkeypatch):
    """The launcher's check and the in-process worker share one load (the per-process cache); every call
    gets at most ``--batch-size`` lines."""
    store, _ = registry
    monkeypatch.setattr(inference, "_CACHE", collections.OrderedDict())
    loads, sizes = [], []
    load_export, call = inference.load_export, inference.Predictor.__call__
    monkeypatch.setattr(inference, "load_export", lambda *a: loads.append(a) or load_export(*a))
    monkeypatch.setattr(inference.Predictor, "__call__", lambda self, texts: sizes.append(len(texts)) or call(self, texts))
    predict.predict("models:/predict-tagging@champion", [str(corpus / "*.txt")], str(tmp_path / "out"),
                    tracking_uri=store, batch_size=3, min_batch_size=1)
    assert loads == [("models:/predict-tagging/1", store)]
    assert sum(sizes) == len(_texts(corpus)) and max(sizes) <= 3 and len(sizes) >= 7


# -------------------------------------------------------------------------------- DaskRunner
@pytest.fixture(scope="module")
def dask_scheduler(tmp_path_factory):
    pytest.importorskip("distributed")
    with dask_cluster(tmp_path_factory.mktemp("dask"), workers=2) as cluster:
        yield cluster


def _close(a, b) -> bool:
    """``a == b``, but floats within a relative 1e-6 (a few float32 ulps)."""
    if isinstance(a, float) and isinstance(b, float):
        return bool(np.isclose(a, b, rtol=1e-6, atol=0))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _same_output(reference, other, runner_args) -> None:
    """The same files; the same predictions line by line, every string and integer exact, floats up to
    the last float32 digit or two (another process may round differently: seen as 1 ulp in a
    beam-search score on a Dask worker); rejected records byte for byte; the manifests equal but for the
    runner, the times and the shards' sha256 and size."""
    want, got = _files(reference), _files(other)
    assert sorted(got) == sorted(want)
    want_manifest, got_manifest = json.loads(want.pop("manifest.json")), json.loads(got.pop("manifest.json"))
    for name in sorted(want):
        if name.startswith("predictions-"):
            a, b = want[name].decode().splitlines(), got[name].decode().splitlines()
            assert len(a) == len(b), name
            bad = [(x, y) for x, y in zip(a, b) if not _close(json.loads(x), json.loads(y))]
            assert bad == [], f"{name} differs from the in-process run's: {bad[:2]}"
        else:
            assert got[name] == want[name], f"{name} differs from the in-process run's"
    for m in (want_manifest, got_manifest):
        m.pop("started"), m.pop("finished")
        for shard in m["shards"]:
            shard.pop("sha256"), shard.pop("bytes")
    assert got_manifest.pop("runner") == {"name": "DaskRunner", "args": runner_args}
    want_manifest.pop("runner")
    assert got_manifest == want_manifest


@pytest.mark.timeout(240)
@pytest.mark.parametrize("task", ["classification", "seq2seq"])
def test_the_dask_runner_writes_the_same_predictions(task, registry, corpus, scored, dask_scheduler, tmp_path, capsys):
    """``rnnflow predict ... --runner DaskRunner --dask_client_address tcp://...``: two workers, each
    loading the pinned version itself, write what the in-process runner wrote (:func:`_same_output`)."""
    store, _ = registry
    address, services = dask_scheduler
    out = tmp_path / "out"
    beam_args = ["--runner", "DaskRunner", "--dask_client_address", address]
    with show_logs_on_failure(services):
        assert cli.main(["predict", "--model", f"models:/predict-{task}@champion", "--input", str(corpus / "*.txt"),
                         "--output", str(out), "--tracking-uri", store, "--batch-size", "4", "--num-shards", "3",
                         *beam_args]) == EXIT_OK
    assert capsys.readouterr().out.strip() == str(out)
    _same_output(scored[task], out, beam_args)


# ------------------------------------------------------------------------- the graph, the steps
def _leaves(registry, corpus, tmp_path):
    store, _ = registry
    p = beam.Pipeline(runner=local_runner())
    sources = predict.input_sources([str(corpus / "*.txt")])
    inputs = [{"path": s.name, "sha256": "0" * 64, "lines": 10} for s in sources]
    handler = inference.ExportModelHandler("models:/predict-lm/1", store)
    predict.build_pipeline(p, sources, inputs, str(tmp_path), handler, {"name": "n", "version": "1", "uri": "u"}, 2)
    found = []

    class Visitor(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node):
            found.append(node)

    p.visit(Visitor())
    return p, found


def test_the_graph_has_no_multi_output_pardo_and_every_writer_feeds_the_last_step(registry, corpus, tmp_path):
    """As for the prepare job (tests/pipelines/test_prepare_runners.py): Beam 2.77's DaskRunner hands
    every output of a multi-output ParDo to every consumer, and a writer must be upstream of the last step."""
    p, leaves = _leaves(registry, corpus, tmp_path)
    assert [n.full_label for n in leaves if isinstance(n.transform, beam.ParDo) and len(n.outputs) != 1] == []
    last = leaves[-1]
    assert last.full_label.startswith("WriteSummary/")
    upstream, todo = set(), [last]
    while todo:
        node = todo.pop()
        for value in [*node.inputs, *(s.pvalue for s in node.side_inputs)]:
            producer = getattr(value, "producer", None)
            if producer is not None and producer not in upstream:
                upstream.add(producer)
                todo.append(producer)
    writers = [n.full_label for n in leaves if any(part.startswith("Write") for part in n.full_label.split("/"))]
    assert {"WritePredictions/WriteShard", "WriteRejected/Write"} <= set(writers)
    assert [w for w in writers if w != last.full_label and all(w != n.full_label for n in upstream)] == []
    assert any("RunInference" in n.full_label for n in leaves)


def test_decode_lines_sets_aside_invalid_and_empty_lines():
    records = [{"index": (0, i), "split": None, "source": "s", "line": i, "item": i - 1, "raw": raw}
               for i, raw in enumerate([b"ok", b"", b"  ", b"\xff x", "é".encode()], start=1)]
    with pipeline() as p:
        lines, rejected = p | beam.Create(records) | inference.DecodeLines()
        assert_that(lines, equal_to([{"index": (0, 1), "source": "s", "line": 1, "text": "ok"},
                                     {"index": (0, 5), "source": "s", "line": 5, "text": "é"}]), label="lines")
        assert_that(rejected | beam.Map(lambda r: (r["line"], r["reason"], r["detail"])),
                    equal_to([(2, "empty", "empty line"), (3, "empty", "only whitespace"),
                              (4, "invalid_utf8", "line 4: invalid UTF-8 at byte 0 of the line (invalid start byte)")]),
                    label="rejected")


def test_write_predictions_writes_every_shard_in_input_order(tmp_path):
    results = [inference.PredictionResult({"index": (s, n), "source": f"f{s}", "line": n, "text": f"t{s}{n}"},
                                          {"x": n}, "u") for s, n in [(1, 2), (0, 2), (0, 1), (1, 1)]]
    with pipeline() as p:
        infos = (p | beam.Create(results)
                 | inference.WritePredictions(str(tmp_path), 4, offsets=[0, 3], total=5, model_info={"v": "1"}))
        assert_that(infos | beam.Map(lambda i: (i["name"], i["lines"])),
                    equal_to([("predictions-00000-of-00004.jsonl", 2), ("predictions-00001-of-00004.jsonl", 0),
                              ("predictions-00002-of-00004.jsonl", 1), ("predictions-00003-of-00004.jsonl", 1)]))
    lines = [json.loads(line) for i in range(4)
             for line in (tmp_path / f"predictions-{i:05d}-of-00004.jsonl").read_text().splitlines()]
    assert [(r["source"], r["line"]) for r in lines] == [("f0", 1), ("f0", 2), ("f1", 1), ("f1", 2)]
    assert lines[0] == {"input": "t01", "source": "f0", "line": 1, "prediction": {"x": 1}, "model": {"v": "1"}}


def test_prediction_rows_are_json_values_cut_to_each_lines_length():
    tagged = inference.prediction_rows({"tags": np.array([[b"A", b"B", b""], [b"C", b"", b""]]),
                                        "length": np.array([2, 1], np.int32)})
    assert tagged == [{"length": 2, "tags": ["A", "B"]}, {"length": 1, "tags": ["C"]}]
    labelled = inference.prediction_rows({"probabilities": np.array([[0.1, 0.9], [0.5, 0.5]], np.float32),
                                          "label": np.array([b"x", "é".encode()])})
    assert labelled == [{"label": "x", "probabilities": [0.1, 0.9]}, {"label": "é", "probabilities": [0.5, 0.5]}]
    assert json.dumps(inference.json_value(np.float32(1 / 3))) == "0.33333334"  # float32 digits, not float64's
    assert [inference.shard_of((0, n), [0], 10, 3) for n in range(1, 11)] == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_the_handler_checks_its_batch_sizes():
    with pytest.raises(ValueError, match="min_batch_size 8 > max_batch_size 4"):
        inference.ExportModelHandler("models:/m/1", None, 8, 4)
    with pytest.raises(ValueError, match="max_batch_size must be an int >= 1"):
        inference.ExportModelHandler("models:/m/1", None, 1, 0)
    handler = inference.ExportModelHandler("models:/m/1", None, 2, 16)
    assert handler.batch_elements_kwargs() == {"min_batch_size": 2, "max_batch_size": 16}
    assert not handler.share_model_across_processes()


def test_predict_help_explains_the_output_and_the_runners(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["predict", "--help"])
    text = capsys.readouterr().out
    for needle in ("predictions-NNNNN-of-NNNNN.jsonl", "rejected/", "manifest.json", "--force", "DaskRunner",
                   "--batch-size", "models:/NAME@ALIAS is resolved to its version"):
        assert needle in text, needle
