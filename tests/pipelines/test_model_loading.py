"""Loading a model never runs code shipped with it (issue 9 §1), and a bad ``--model`` is one clear
line with exit code 2 that creates nothing (§5): through ``tracking.load_model``, the CLI and
MLflow's pyfunc loader."""

from __future__ import annotations

import shutil
import sys
import zipfile
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
import tensorflow as tf
import yaml

from keras_models import saving
from keras_models.export import LanguageModelScorer, TextToIds
from keras_models.models.language_model import RNNLanguageModel
from pipelines import cli, tracking
from preprocessing.tokenizers import TokenizerConfig

VOCAB = ["<pad>", "<unk>", "<bos>", "<eos>", "the", "cat", "sat", "on", "mat", "a", "dog"]
TEXTS = ["the cat sat on the mat", "a dog"]
EVIL = "rnnflow_planted_module"


@keras.saving.register_keras_serializable(package="rnnflow_tests")
class HashTokens(keras.layers.Layer):
    """A layer from outside rnnflow (registered by this test module, not by rnnflow).

    Args:
        num_bins: hash buckets.

    Call arguments:
        inputs: ``tf.string`` texts.
    """

    def __init__(self, num_bins=11, **kwargs):
        super().__init__(**kwargs)
        self.num_bins = num_bins

    def call(self, inputs):
        return tf.strings.to_hash_bucket_fast(tf.strings.split(inputs), self.num_bins).to_tensor(shape=[None, 5])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 5)

    def get_config(self):
        return {**super().get_config(), "num_bins": self.num_bins}


def scorer() -> LanguageModelScorer:
    keras.utils.set_random_seed(0)
    lm = RNNLanguageModel(vocab_size=len(VOCAB), cell="gru", num_layers=1, embedding_dim=4, hidden_dim=4)
    lm.build((None, None))
    model = LanguageModelScorer(TextToIds(TokenizerConfig().to_dict(), VOCAB), lm)
    model(tf.constant(["the cat"]))
    return model


@pytest.fixture(autouse=True)
def _restore_sys_path():
    path = list(sys.path)
    yield
    sys.path[:] = path
    sys.modules.pop(EVIL, None)


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A scorer logged and registered as ``loading-lm`` version 1 in a module-wide sqlite store;
    returns (store URI, local copy of the logged model directory, expected scores)."""
    root = tmp_path_factory.mktemp("loading")
    store = f"sqlite:///{root}/mlflow.db"
    model = scorer()
    expected = model(tf.constant(TEXTS))["log_prob"].numpy()
    with tracking.Tracker(store, "loading", run_name="lm") as t:
        uri = t.log_model(model, "model", input_example=TEXTS)
        assert t.register_model(uri, "loading-lm") == "1"
    local = mlflow.artifacts.download_artifacts(uri, dst_path=str(root / "clean"))
    return store, Path(local), expected


def planted(logged, tmp_path: Path, *, code_key: bool) -> tuple[Path, Path]:
    """The issue's reproduction: a copy of a logged model with ``code/<EVIL>.py`` (which writes a
    marker file when imported) and ``EVIL`` appended to the metadata's module list; with
    ``code_key`` also ``flavors.keras.code: code`` (and ``python_function.code``)."""
    _, clean, _ = logged
    target = tmp_path / "evil_model"
    shutil.copytree(clean, target)
    marker = tmp_path / "planted_code_ran"
    (target / "code").mkdir()
    (target / "code" / f"{EVIL}.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    mlmodel = yaml.safe_load((target / "MLmodel").read_text())
    mlmodel.setdefault("metadata", {}).setdefault("rnnflow_custom_modules", []).append(EVIL)
    if code_key:
        mlmodel["flavors"]["keras"]["code"] = "code"
        mlmodel["flavors"]["python_function"]["code"] = "code"
    (target / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    return target, marker


def _assert_not_run(marker: Path) -> None:
    assert not marker.exists(), "code shipped inside the artifact was executed"
    assert EVIL not in sys.modules


# ------------------------------------------------------------------------------ planted code
@pytest.mark.parametrize("code_key", [True, False], ids=["code-folder-declared", "metadata-only"])
def test_load_model_never_runs_planted_code(logged, tmp_path, code_key):
    target, marker = planted(logged, tmp_path, code_key=code_key)
    if code_key:
        with pytest.raises(saving.UnsafeModelError, match="ships code"):
            tracking.load_model(f"file://{target}")
    else:
        loaded = tracking.load_model(f"file://{target}")
        np.testing.assert_allclose(loaded(tf.constant(TEXTS))["log_prob"].numpy(), logged[2], rtol=1e-5)
    _assert_not_run(marker)
    assert not any(str(target) in p for p in sys.path)


@pytest.mark.parametrize("code_key", [True, False], ids=["code-folder-declared", "metadata-only"])
def test_cli_generate_never_runs_planted_code(logged, tmp_path, code_key, capsys):
    target, marker = planted(logged, tmp_path, code_key=code_key)
    code = cli.main(["generate", "--model", f"file://{target}", "--prompt", "the", "--max-tokens", "3"])
    captured = capsys.readouterr()
    _assert_not_run(marker)
    if code_key:
        assert code == cli.EXIT_USAGE
        assert "ships code" in captured.err and "Traceback" not in captured.err
    else:
        assert code == cli.EXIT_OK and captured.out.startswith("the")


@pytest.mark.parametrize("code_key", [True, False], ids=["code-folder-declared", "metadata-only"])
def test_pyfunc_loader_never_runs_planted_code(logged, tmp_path, code_key):
    target, marker = planted(logged, tmp_path, code_key=code_key)
    if code_key:
        with pytest.raises(saving.UnsafeModelError, match="ships code"):
            mlflow.pyfunc.load_model(str(target))
    else:
        served = mlflow.pyfunc.load_model(str(target))
        out = served.predict(np.asarray(TEXTS, dtype=object))
        np.testing.assert_allclose(np.asarray(out["log_prob"]), logged[2], rtol=1e-5)
    _assert_not_run(marker)
    assert not any(str(target) in p for p in sys.path)  # MLflow's sys.path entry is taken out again


def test_registered_model_loads_through_pyfunc_and_load_model(logged):
    store, _, expected = logged
    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    info = mlflow.models.get_model_info("models:/loading-lm/1")
    assert info.flavors["python_function"]["loader_module"] == "pipelines.tracking"
    assert "rnnflow_custom_modules" not in (info.metadata or {})
    model = tracking.load_model("models:/loading-lm/1", store)
    np.testing.assert_allclose(model(tf.constant(TEXTS))["log_prob"].numpy(), expected, rtol=1e-5)
    served = mlflow.pyfunc.load_model("models:/loading-lm/1")
    np.testing.assert_allclose(np.asarray(served.predict(np.asarray(TEXTS, dtype=object))["log_prob"]),
                               expected, rtol=1e-5)


def test_a_model_outside_rnnflow_is_refused_naming_the_class(tmp_path):
    inputs = keras.Input(shape=(), dtype="string")
    x = keras.layers.Embedding(11, 4)(HashTokens()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(x)))
    path = tmp_path / "foreign.keras"
    model.save(path)
    with pytest.raises(saving.UnsafeModelError, match="HashTokens") as err:
        saving.load_model(path)
    assert "rnnflow_tests>HashTokens" in str(err.value)
    # through the MLflow path too
    store = f"sqlite:///{tmp_path}/mlflow.db"
    with tracking.Tracker(store, "foreign") as t:
        uri = t.log_model(model, "model", input_example=["a b"])
    with pytest.raises(saving.UnsafeModelError, match="HashTokens"):
        tracking.load_model(uri, store)


def test_a_config_that_dresses_a_foreign_module_as_rnnflow_is_refused(tmp_path):
    path = tmp_path / "scorer.keras"
    scorer().save(path)
    forged = tmp_path / "forged.keras"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(forged, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            if item == "config.json":
                data = data.replace(b'"module": "keras_models.export"', b'"module": "os"', 1)
            dst.writestr(item, data)
    with pytest.raises(saving.UnsafeModelError, match="does not match rnnflow's"):
        saving.load_model(forged)


def test_a_lambda_layer_is_refused(tmp_path):
    inputs = keras.Input(shape=(3,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2.0)(inputs))
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(saving.UnsafeModelError, match="lambda|Lambda"):
        saving.load_model(path)
    assert cli.main(["generate", "--model", str(path)]) == cli.EXIT_USAGE


def test_a_saved_scorer_round_trips_through_the_safe_loader(tmp_path):
    model = scorer()
    path = tmp_path / "scorer.keras"
    model.save(path)
    loaded = saving.load_model(path)
    np.testing.assert_allclose(loaded(tf.constant(TEXTS))["log_prob"].numpy(),
                               model(tf.constant(TEXTS))["log_prob"].numpy(), rtol=1e-6)


# ------------------------------------------------------------------------------ --model errors
def _one_line_usage_error(code: int, err: str, *needles: str) -> None:
    assert code == cli.EXIT_USAGE, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.startswith("rnnflow:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A fresh current directory with no MLflow store and no MLFLOW_TRACKING_URI."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return cwd


def test_missing_model_path_is_one_line_and_creates_nothing(elsewhere, capsys):
    code = cli.main(["generate", "--model", "no/such/model.keras"])
    _one_line_usage_error(code, capsys.readouterr().err, "no/such/model.keras", "no such file")
    assert list(elsewhere.iterdir()) == []


def test_registry_uri_without_a_store_creates_nothing(elsewhere, capsys):
    code = cli.main(["classify", "--model", "models:/nothing@champion", "a text"])
    _one_line_usage_error(code, capsys.readouterr().err, "no MLflow store")
    assert list(elsewhere.iterdir()) == []


def test_missing_version_lists_versions_and_aliases(logged, elsewhere, capsys):
    store = logged[0]
    tracking.promote(store, "loading-lm", "1", "val_perplexity", 10.0, greater_is_better=False, log_to_run=False)
    code = cli.main(["generate", "--model", "models:/loading-lm/99", "--tracking-uri", store])
    _one_line_usage_error(code, capsys.readouterr().err, "no version 99", "versions: 1", "@champion = version 1")
    code = cli.main(["generate", "--model", "models:/loading-lm@nobody", "--tracking-uri", store])
    _one_line_usage_error(code, capsys.readouterr().err, "no alias 'nobody'")
    code = cli.main(["generate", "--model", "models:/no-such-name/1", "--tracking-uri", store])
    _one_line_usage_error(code, capsys.readouterr().err, "no registered model 'no-such-name'", "loading-lm")
    assert list(elsewhere.iterdir()) == []


def test_bad_run_id_is_one_line(logged, elsewhere, capsys):
    code = cli.main(["tag", "--model", "runs:/0123456789abcdef/model", "--tracking-uri", logged[0], "a b"])
    _one_line_usage_error(code, capsys.readouterr().err, "no run '0123456789abcdef'")


def test_a_keras_file_that_is_not_a_zip_says_so(elsewhere, capsys):
    bogus = elsewhere / "model.keras"
    bogus.write_text("not a model")
    code = cli.main(["generate", "--model", str(bogus)])
    _one_line_usage_error(code, capsys.readouterr().err, "not a .keras model file")
