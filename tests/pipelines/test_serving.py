"""`mlflow models serve` of each task's registered champion: a tiny language model, tagger,
classifier and encoder-decoder, each trained once by `rnnflow run` (1 epoch, a few steps, a sqlite
store), served with ``--env-manager local`` on 127.0.0.1, and asked with raw strings
(``{"inputs": [...]}``). The answers must equal the in-process models' (MLflow's ``python_function``
model and the run's exported Keras model called directly); the logged signature and input example
must describe what the server takes and gives; a request that breaks the schema gets a 4xx answer
that says what is wrong, and the server keeps serving.

One module-scoped fixture trains the four models and starts each one's server as soon as it is
registered (so servers start while the next model trains); every test then reads its task's entry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import traceback
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import tensorflow as tf
from mlflow.models import Model

from keras_models import saving
from pipelines.config import parse_config
from pipelines.run import execute
from services import ServedURL, http_status, models_serve, show_logs_on_failure
from test_run import LINES
from test_run_tasks import _conll_2003
from test_unseen_labels_run import TINY, TRAINING

pytestmark = pytest.mark.timeout(600)  # the first test also waits for the module's four trainings

REPO = Path(__file__).resolve().parents[2]
TOPICS = {"sport": "the team won the match", "money": "the bank raised the rates", "tech": "the new phone has a chip"}


@dataclasses.dataclass
class TaskCase:
    name: str  # the registered model
    texts: list[str]  # what is sent
    keys: set[str]  # the outputs

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@champion"


CASES = {
    "lm": TaskCase("serve-lm", ["the cat sat on the mat", "a dog", "zebras unknown here"],
                   {"log_prob", "num_tokens", "perplexity"}),
    "tagger": TaskCase("serve-tagger", ["John visited Paris yesterday .", "The EU office in Berlin is closed .",
                                        "Mary met Ali ."], {"tokens", "tags", "length"}),
    "classifier": TaskCase("serve-classifier", ["the team won the match", "the new phone", "words never seen"],
                           {"label", "probabilities"}),
    "seq2seq": TaskCase("serve-seq2seq", ["abxcd", "fedy", "ceyfa"], {"output", "hypotheses", "scores"}),
}
BEAM = 2


def _configs(root: Path, store: str) -> dict:
    (root / "corpus.txt").write_text("\n".join(LINES * 30) + "\n", encoding="utf-8")
    (root / "ner.txt").write_text(_conll_2003(60), encoding="utf-8")
    (root / "docs.tsv").write_text(
        "\n".join(f"{label}\t{text} number {i}" for i in range(20) for label, text in TOPICS.items()) + "\n",
        encoding="utf-8")
    hashed = {"method": "hash", "valid": 0.2, "test": 0.2, "seed": 0}

    def config(task, data, model, **extra):
        name = CASES[task].name
        return parse_config({
            "name": name, "work_dir": str(root / "runs" / name), "data": {"output_dir": str(root / "data"), **data},
            "model": {**TINY, "cell": "gru", **model}, "training": TRAINING,
            "tracking": {"tracking_uri": store, "experiment": "serving", "registered_model": name}, **extra})

    return {
        "lm": config("lm", {"dataset": "text", "files": [str(root / "corpus.txt")],
                            "split": {"valid": 0.15, "test": 0.15}}, {}),
        "tagger": config("tagger", {"dataset": "columns", "files": [str(root / "ner.txt")], "tag_scheme": "bio",
                                    "split": hashed}, {"type": "tagger"}),
        "classifier": config("classifier", {"dataset": "tsv", "files": [str(root / "docs.tsv")], "split": hashed},
                             {"type": "classifier"}),
        "seq2seq": config("seq2seq", {
            "dataset": "pairs", "files": [str(REPO / "tests" / "fixtures" / "reverse_noise.tsv")], "level": "char",
            "max_length": 20, "max_lines": {"train": 100, "valid": 8, "test": 8},
            "target": {"level": "char", "normalization": "none"}, "split": {**hashed, "valid": 0.1, "test": 0.1}},
            {"type": "seq2seq", "attention": "dot"}, decode={"beam_size": BEAM, "max_length": 8, "attention_samples": 0}),
    }


@dataclasses.dataclass
class Served:
    case: TaskCase
    url: ServedURL
    model_path: str  # the run's exported Keras model file
    pyfunc: Any = None  # mlflow.pyfunc.load_model(models:/NAME@champion), in this process
    info: Any = None  # mlflow.models.get_model_info(models:/NAME@champion)
    local: Path | None = None  # the champion's model directory, downloaded


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """task → :class:`Served`, or the formatted error of that task's training or start."""
    root = tmp_path_factory.mktemp("serving")
    store = f"sqlite:///{root}/mlflow.db"
    out: dict[str, Served | str] = {}
    with contextlib.ExitStack() as servers:
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(root)
            for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
                mp.delenv(key, raising=False)
            for task, config in _configs(root, store).items():
                try:
                    result = execute(config)
                    assert result.registered_version == "1" and result.promotion["promoted"], result
                    url = servers.enter_context(
                        models_serve(CASES[task].uri, store, root / "logs", wait=False))
                    out[task] = Served(CASES[task], url, result.model_path)
                except Exception:  # noqa: BLE001 - reported by that task's tests
                    out[task] = traceback.format_exc()
            mlflow.set_tracking_uri(store)
            for task, entry in out.items():
                if isinstance(entry, str):
                    continue
                try:
                    entry.pyfunc = mlflow.pyfunc.load_model(entry.case.uri)
                    entry.info = mlflow.models.get_model_info(entry.case.uri)
                    entry.local = Path(mlflow.artifacts.download_artifacts(
                        artifact_uri=entry.case.uri, dst_path=str(root / "downloaded" / task)))
                    entry.url.wait_ready(120)
                except Exception:  # noqa: BLE001
                    out[task] = traceback.format_exc() + "\n" + entry.url.service.describe()
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)
        yield out


def _entry(served, task) -> Served:
    entry = served[task]
    if isinstance(entry, str):
        pytest.fail(f"{task}: training, registering or serving failed:\n{entry}", pytrace=False)
    return entry


def _post(url: str, body: Any, content_type: str = "application/json") -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/invocations", data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode()
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def _assert_same(got: dict, want: dict, what: str) -> None:
    """Numbers equal to rtol 1e-5 (integers exactly), strings exactly."""
    assert set(got) == set(want), what
    for key, expected in want.items():
        expected = np.asarray(expected)
        actual = got[key]
        if expected.dtype.kind == "f":
            np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=1e-5,
                                       err_msg=f"{what}: {key}")
        elif expected.dtype.kind in "iu":
            np.testing.assert_array_equal(np.asarray(actual), expected, err_msg=f"{what}: {key}")
        else:
            assert np.asarray(actual, dtype=object).tolist() == expected.tolist(), f"{what}: {key}"


def _direct(model_path: str, texts: list[str]) -> dict:
    """The run's exported Keras model called on the texts, byte strings decoded."""
    export = saving.load_model(model_path)
    outputs = export(tf.constant(texts))
    decoded = {}
    for key, value in outputs.items():
        array = np.asarray(value)
        if array.dtype == object:
            array = np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(array)
        decoded[key] = array
    return decoded


def _check_answer(task: str, texts: list[str], answer: dict, entry: Served) -> None:
    """What each task's answer must mean, beyond equality with the in-process model."""
    if task == "lm":  # one score per text: the words and </s>, perplexity = exp(-log_prob / tokens)
        assert answer["num_tokens"] == [len(t.split()) + 1 for t in texts]
        expected = np.exp(-np.asarray(answer["log_prob"]) / np.asarray(answer["num_tokens"]))
        np.testing.assert_allclose(answer["perplexity"], expected, rtol=1e-4)
    elif task == "tagger":  # a tag per token, padded to the longest text
        tag_names = set(entry.pyfunc.get_raw_model().tag_names)
        width = max(len(t.split()) for t in texts)
        for text, tokens, tags, n in zip(texts, answer["tokens"], answer["tags"], answer["length"]):
            assert n == len(text.split()) and tokens[:n] == text.split()
            assert len(tokens) == len(tags) == width and set(tags[:n]) <= tag_names and tags[n:] == [""] * (width - n)
    elif task == "classifier":  # the label is the most probable class, the probabilities a distribution
        labels = entry.pyfunc.get_raw_model().label_names
        assert sorted(labels) == sorted(TOPICS)
        for label, probs in zip(answer["label"], answer["probabilities"]):
            assert len(probs) == len(labels) and sum(probs) == pytest.approx(1.0, abs=1e-5)
            assert label == labels[int(np.argmax(probs))]
    else:  # seq2seq: the best of BEAM hypotheses, scores best first
        for output, hyps, scores in zip(answer["output"], answer["hypotheses"], answer["scores"]):
            assert len(hyps) == len(scores) == BEAM and output == hyps[0]
            assert scores == sorted(scores, reverse=True)
            assert set(output) <= set("abcdef")  # letters of the target vocabulary only


@pytest.mark.parametrize("task", list(CASES))
def test_served_answers_equal_the_in_process_model(served, task):
    entry = _entry(served, task)
    texts = entry.case.texts
    with show_logs_on_failure([entry.url.service]):
        status, body = _post(entry.url, {"inputs": texts})
        assert status == 200, body
        answer = body["predictions"]
        assert set(answer) == entry.case.keys
        expected = entry.pyfunc.predict(np.asarray(texts, dtype=object))
        _assert_same(answer, expected, f"{task}: served vs mlflow.pyfunc")
        _assert_same(answer, _direct(entry.model_path, texts), f"{task}: served vs the exported Keras model")
        _check_answer(task, texts, answer, entry)
        # one text at a time gives what the batch gave for it (padding does not leak into the answer)
        status, single = _post(entry.url, {"inputs": texts[1:2]})
        assert status == 200, single
        alone = entry.pyfunc.predict(np.asarray(texts[1:2], dtype=object))
        _assert_same(single["predictions"], alone, f"{task}: one text")


@pytest.mark.parametrize("task", list(CASES))
def test_logged_signature_and_input_example_describe_the_server(served, task):
    entry = _entry(served, task)
    signature = entry.info.signature
    assert signature is not None
    (spec,) = signature.inputs.inputs  # one tensor of texts, any batch size
    assert spec.type == np.dtype(object) and spec.shape == (-1,) and spec.name is None
    outputs = {o.name: o for o in signature.outputs.inputs}
    assert set(outputs) == entry.case.keys
    assert all(o.shape[0] == -1 for o in outputs.values())
    shapes = {name: o.shape for name, o in outputs.items()}
    dtypes = {name: o.type for name, o in outputs.items()}
    if task == "tagger":  # as many tokens as the longest text: not fixed by the example
        assert shapes["tokens"] == shapes["tags"] == (-1, -1) and dtypes["tags"] == np.dtype(object)
        assert dtypes["length"] == np.dtype("int32")
    elif task == "classifier":
        assert shapes["probabilities"] == (-1, len(TOPICS)) and dtypes["label"] == np.dtype(object)
    elif task == "seq2seq":
        assert shapes["hypotheses"] == shapes["scores"] == (-1, BEAM) and dtypes["scores"] == np.dtype("float32")
    else:
        assert all(s == (-1,) and dtypes[n] == np.dtype("float32") for n, s in shapes.items())

    # the input example and its serving payload are logged with the model, and the server takes the payload
    example_info = entry.info.saved_input_example_info
    assert example_info and example_info["type"] == "ndarray"
    model = Model.load(str(entry.local / "MLmodel"))
    example = model.load_input_example(str(entry.local))
    assert isinstance(example, np.ndarray) and example.ndim == 1 and len(example) >= 1
    assert all(isinstance(x, str) and x.strip() for x in example)
    payload = (entry.local / example_info["serving_input_path"]).read_bytes()
    assert json.loads(payload) == {"inputs": example.tolist()}
    with show_logs_on_failure([entry.url.service]):
        status, body = _post(entry.url, payload)
        assert status == 200, body
        _assert_same(body["predictions"], entry.pyfunc.predict(example.astype(object)), f"{task}: input example")


@pytest.mark.parametrize("task", list(CASES))
def test_requests_that_break_the_schema_get_a_4xx_that_says_why(served, task):
    entry = _entry(served, task)
    with show_logs_on_failure([entry.url.service]):
        status, body = _post(entry.url, {"inputs": [1, 2]})  # numbers, not texts
        assert 400 <= status < 500, (status, body)
        assert body["error_code"] == "INVALID_PARAMETER_VALUE" and "expected texts (strings)" in body["message"]
        status, body = _post(entry.url, {"inputs": entry.case.texts[0]})  # one text, not a batch
        assert 400 <= status < 500 and "batch" in body["message"], (status, body)
        status, body = _post(entry.url, {"texts": entry.case.texts})  # not one of MLflow's keys
        assert 400 <= status < 500 and "inputs" in body["message"], (status, body)
        status, body = _post(entry.url, b"{not json")
        assert 400 <= status < 500 and "JSON" in body["message"], (status, body)
        # still serving, and still right
        assert entry.url.service.running() and http_status(f"{entry.url}/ping") == 200
        status, body = _post(entry.url, {"inputs": entry.case.texts})
        assert status == 200, body
        _assert_same(body["predictions"], entry.pyfunc.predict(np.asarray(entry.case.texts, dtype=object)),
                     f"{task}: after the bad requests")
