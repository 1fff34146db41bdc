"""Models saved by an earlier rnnflow (``tests/fixtures/saved_models``, written by its ``make.py``)
still load through the safe loader and give the same outputs: moving a class between modules or
restructuring a model must not break the registry's champions."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

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
