"""Models saved by an earlier rnnflow (``tests/fixtures/saved_models``, written by its ``make.py``)
still load through the safe loader and give the same outputs: moving a class between modules or
restructuring a model must not break the registry's champions."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from keras_models import saving
from keras_models.saving import load_model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "saved_models"
_spec = importlib.util.spec_from_file_location("saved_models_make", FIXTURES / "make.py")
make = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make)
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED["outputs"]))
def test_an_earlier_saved_model_loads_and_gives_the_same_outputs(name):
    model = load_model(FIXTURES / f"{name}.keras")
    got = make.outputs(model, EXPECTED["texts"])
    want = EXPECTED["outputs"][name]
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        if isinstance(np.asarray(value).flat[0], str):
            assert got[key] == value, key
        else:
            np.testing.assert_allclose(np.asarray(got[key], dtype=float), np.asarray(value, dtype=float),
                                       rtol=1e-5, atol=1e-6, err_msg=key)


def test_the_fixtures_name_the_modules_of_before_the_move():
    # What the test above proves: classes saved under their earlier modules (keras_models.tagger, ...).
    modules = {obj.get("module") for obj in saving._objects(saving.read_config(FIXTURES / "tagger_crf_chars.keras"))}
    assert "keras_models.tagger" in modules and "keras_models.models.tagger" not in modules


@pytest.mark.parametrize("module", ["keras_models.tagger", "keras_models.models.tagger", "pipelines.anything", None])
def test_an_rnnflow_class_may_name_any_module_of_rnnflow(module):
    config = {"class_name": "RNNTagger", "module": module, "registered_name": "rnnflow>RNNTagger", "config": {}}
    saving.check_config(config, "model.keras")


@pytest.mark.parametrize("module", ["os", "keras", "keras_models_evil.tagger", "keras_models..tagger", "x.keras_models"])
def test_an_rnnflow_class_naming_a_module_outside_rnnflow_is_refused(module):
    config = {"class_name": "RNNTagger", "module": module, "registered_name": "rnnflow>RNNTagger", "config": {}}
    with pytest.raises(saving.UnsafeModelError, match="does not match rnnflow's rnnflow>RNNTagger"):
        saving.check_config(config, "model.keras")
