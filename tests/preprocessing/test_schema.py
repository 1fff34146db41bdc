import fnmatch

import numpy as np
import pytest
import tensorflow as tf

from preprocessing import schema

EXAMPLES = {
    "lm": {"ids": [5, 6, 7, 3]},
    "tagging": {"ids": [4, 5, 6], "tags": [1, 2, 1]},
    "classification": {"ids": [4, 9], "label": 2},
    "seq2seq": {"source_ids": [4, 5, 6, 7], "target_ids": [8, 3]},
}


def test_every_task_has_an_example_here():
    assert set(EXAMPLES) == set(schema.TASK_FEATURES)
    assert schema.TASK_FEATURES["lm"] == {"ids": "sequence"}
    assert schema.TASK_FEATURES["classification"] == {"ids": "sequence", "label": "scalar"}


@pytest.mark.parametrize("task", sorted(EXAMPLES))
def test_round_trip_single(task):
    data = schema.encode_example(task, EXAMPLES[task])
    assert isinstance(data, bytes)
    parsed = schema.parse_example(task, data)
    assert set(parsed) == set(EXAMPLES[task]) | set(schema.OPTIONAL_FEATURES.get(task, {}))
    for key, value in EXAMPLES[task].items():
        assert parsed[key].dtype == tf.int64
        assert parsed[key].numpy().tolist() == value
        if schema.TASK_FEATURES[task][key] == "sequence":
            assert parsed[key].shape.rank == 1


@pytest.mark.parametrize("task", sorted(EXAMPLES))
def test_round_trip_in_graph_through_tf_data(task):
    data = [schema.encode_example(task, EXAMPLES[task])] * 2
    ds = tf.data.Dataset.from_tensor_slices(data).map(lambda s: schema.parse_example(task, s))
    for parsed in ds:
        for key, value in EXAMPLES[task].items():
            assert parsed[key].numpy().tolist() == value
    batched = schema.parse_example(task, tf.constant(data))
    for key, value in EXAMPLES[task].items():
        got = batched[key]
        got = got.to_list() if isinstance(got, tf.RaggedTensor) else got.numpy().tolist()
        assert got == [value, value]


def test_encoding_is_deterministic_and_accepts_numpy():
    a = schema.encode_example("tagging", {"tags": [1, 2], "ids": [3, 4]})
    b = schema.encode_example("tagging", {"ids": np.array([3, 4]), "tags": (1, 2)})
    assert a == b
    assert schema.parse_example("lm", schema.encode_example("lm", {"ids": []}))["ids"].numpy().tolist() == []


def test_encode_errors():
    with pytest.raises(ValueError, match="unknown task"):
        schema.encode_example("translation", {"ids": [1]})
    with pytest.raises(ValueError, match="missing"):
        schema.encode_example("tagging", {"ids": [1]})
    with pytest.raises(ValueError, match="unexpected"):
        schema.encode_example("lm", {"ids": [1], "label": 2})
    with pytest.raises(ValueError, match="scalar"):
        schema.encode_example("classification", {"ids": [1], "label": [1, 2]})
    with pytest.raises(ValueError, match="1-D"):
        schema.encode_example("lm", {"ids": [[1, 2]]})


def test_shard_names_sort_in_order():
    names = [schema.shard_name("train", i, 12) for i in range(12)]
    assert names[0] == "train-00000-of-00012.tfrecord.gz"
    assert sorted(names) == names
    assert all(fnmatch.fnmatch(n, "train-?????-of-00012.tfrecord.gz") for n in names)
    with pytest.raises(ValueError):
        schema.shard_name("train", 4, 4)
