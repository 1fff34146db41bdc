import fnmatch

import numpy as np
import pytest
import tensorflow as tf

from pipelines import tasks
from pipelines.config import DataConfig
from preprocessing import schema
from preprocessing.schema import SCALAR, SEQUENCE

# one example per registered task, with the data config its records are prepared from
EXAMPLES = {
    "lm": {"ids": [5, 6, 7, 3]},
    "tagging": {"ids": [4, 5, 6], "tags": [1, 2, 1]},
    "classification": {"ids": [4, 9], "label": 2},
    "seq2seq": {"source_ids": [4, 5, 6, 7], "target_ids": [8, 3]},
}
DATA = {
    "lm": DataConfig(dataset="text", files=["a.txt"]),
    "tagging": DataConfig(dataset="conllu", files=["a.conllu"]),
    "classification": DataConfig(dataset="jsonl", files=["a.jsonl"]),
    "seq2seq": DataConfig(dataset="cmudict"),
}
# tagging with data.char_features also writes every token's character ids
WITH_CHARS = {"ids": [4, 5], "tags": [1, 2], "chars": [7, 8, 9, 7], "char_lengths": [3, 1]}


def spec_of(task: str) -> dict[str, str]:
    return tasks.get(task).features(DATA[task])


def test_every_task_has_an_example_here():
    assert set(EXAMPLES) == set(tasks.names()) == set(DATA)
    assert all(DATA[name].task == name for name in DATA)  # each config resolves to its task
    for name in tasks.names():
        spec = spec_of(name)
        assert schema.check_spec(spec) == spec
        assert set(spec) == set(EXAMPLES[name])
    assert spec_of("lm") == {"ids": "sequence"}
    assert spec_of("tagging") == {"ids": SEQUENCE, "tags": SEQUENCE}
    assert spec_of("classification") == {"ids": "sequence", "label": "scalar"}
    assert spec_of("seq2seq") == {"source_ids": SEQUENCE, "target_ids": SEQUENCE}
    chars = DataConfig(dataset="conllu", files=["a.conllu"], char_features=True)
    assert tasks.get("tagging").features(chars) == {"ids": SEQUENCE, "tags": SEQUENCE, "chars": SEQUENCE,
                                                    "char_lengths": SEQUENCE}
    assert set(WITH_CHARS) == set(tasks.get("tagging").features(chars))


CASES = {**{name: (spec_of(name), EXAMPLES[name]) for name in EXAMPLES},
         "tagging_chars": ({k: SEQUENCE for k in WITH_CHARS}, WITH_CHARS)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_round_trip_single(case):
    spec, example = CASES[case]
    data = schema.encode_example(spec, example)
    assert isinstance(data, bytes)
    parsed = schema.parse_example(spec, data)
    assert set(parsed) == set(example) == set(spec)  # exactly the spec's features, no optional extras
    for key, value in example.items():
        assert parsed[key].dtype == tf.int64
        assert parsed[key].numpy().tolist() == value
        if spec[key] == "sequence":
            assert parsed[key].shape.rank == 1
        else:
            assert parsed[key].shape.rank == 0


@pytest.mark.parametrize("case", sorted(CASES))
def test_round_trip_in_graph_through_tf_data(case):
    spec, example = CASES[case]
    data = [schema.encode_example(spec, example)] * 2
    ds = tf.data.Dataset.from_tensor_slices(data).map(lambda s: schema.parse_example(spec, s))
    for parsed in ds:
        for key, value in example.items():
            assert parsed[key].numpy().tolist() == value
    batched = schema.parse_example(spec, tf.constant(data))
    for key, value in example.items():
        got = batched[key]
        got = got.to_list() if isinstance(got, tf.RaggedTensor) else got.numpy().tolist()
        assert got == [value, value]


def test_encoding_is_deterministic_and_accepts_numpy():
    tagging, lm = spec_of("tagging"), {"ids": SEQUENCE}
    a = schema.encode_example(tagging, {"tags": [1, 2], "ids": [3, 4]})
    b = schema.encode_example(tagging, {"ids": np.array([3, 4]), "tags": (1, 2)})
    assert a == b
    # the spec's order does not matter either (map keys are sorted)
    assert schema.encode_example({"tags": SEQUENCE, "ids": SEQUENCE}, {"ids": [3, 4], "tags": [1, 2]}) == a
    assert schema.parse_example(lm, schema.encode_example(lm, {"ids": []}))["ids"].numpy().tolist() == []


def test_encode_errors():
    lm, tagging, classification = spec_of("lm"), spec_of("tagging"), spec_of("classification")
    # a task name is not a spec (the schema knows no tasks), nor is a spec with an unknown kind
    with pytest.raises(ValueError, match="a feature spec is a non-empty mapping"):
        schema.encode_example("translation", {"ids": [1]})
    with pytest.raises(ValueError, match="a feature spec is a non-empty mapping"):
        schema.encode_example({}, {})
    with pytest.raises(ValueError, match=r"feature 'ids': kind must be one of \('sequence', 'scalar'\), got 'ragged'"):
        schema.encode_example({"ids": "ragged"}, {"ids": [1]})
    with pytest.raises(ValueError, match="missing"):
        schema.encode_example(tagging, {"ids": [1]})
    with pytest.raises(ValueError, match="unexpected"):
        schema.encode_example(lm, {"ids": [1], "label": 2})
    with pytest.raises(ValueError, match="scalar"):
        schema.encode_example(classification, {"ids": [1], "label": [1, 2]})
    with pytest.raises(ValueError, match="1-D"):
        schema.encode_example(lm, {"ids": [[1, 2]]})


def test_check_spec_and_feature_spec():
    assert schema.KINDS == (SEQUENCE, SCALAR) == ("sequence", "scalar")
    with pytest.raises(ValueError, match="non-empty mapping"):
        schema.check_spec("lm")
    with pytest.raises(ValueError, match="kind must be one of"):
        schema.check_spec({1: SEQUENCE})
    with pytest.raises(ValueError, match="kind must be one of"):
        schema.parse_example({"ids": "int"}, schema.encode_example({"ids": SEQUENCE}, {"ids": [1]}))
    spec = schema.feature_spec(spec_of("classification"))
    assert isinstance(spec["ids"], tf.io.VarLenFeature) and isinstance(spec["label"], tf.io.FixedLenFeature)
    assert isinstance(schema.feature_spec(spec_of("classification"), batched=True)["ids"], tf.io.RaggedFeature)


def test_shard_names_sort_in_order():
    names = [schema.shard_name("train", i, 12) for i in range(12)]
    assert names[0] == "train-00000-of-00012.tfrecord.gz"
    assert sorted(names) == names
    assert all(fnmatch.fnmatch(n, "train-?????-of-00012.tfrecord.gz") for n in names)
    with pytest.raises(ValueError):
        schema.shard_name("train", 4, 4)
