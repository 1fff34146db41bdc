"""The trainer on input streamed from prepared shards (``preprocessing.streams``).

Every corpus here is prepared by the real Beam job into three shards, so the rows of a
:class:`~preprocessing.streams.TokenStream` start inside shards and cross their boundaries, and an
:class:`~preprocessing.streams.ExampleStream` interleaves several files. The references are numbers:
the in-memory BPTT layout, a one-replica run, an uninterrupted run, a hand-written training loop.
"""

import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_models.models.classifier import RNNClassifier
from keras_models.models.language_model import RNNLanguageModel
from keras_models.models.tagger import RNNTagger
from keras_models.training import (ClassificationTask, ExampleData, LanguageModelData, LanguageModelTask, TaggingTask,
                                   Trainer)
from pipelines.config import DataConfig, TrainingConfig
from pipelines.prepare import prepare
from preprocessing.input_fns import bptt_layout, lm_token_stream
from preprocessing.manifest import load_manifest
from preprocessing.streams import ExampleStream, TokenStream
from preprocessing.vocab import LabelSet, Vocabulary

WORDS = "the cat sat on a mat dog and end big small red".split()
ROWS, BPTT = 4, 5  # the LM's global batch and window
SHARDS = 3


# --------------------------------------------------------------------------------------- corpora
@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    """~390 training tokens in 3 shards: 4 rows of ~97 ids (~19 windows of 5), rows crossing shards."""
    rng = random.Random(3)
    root = tmp_path_factory.mktemp("stream_lm")
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))) for _ in range(60)]
    (root / "c.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = DataConfig(dataset="text", files=[str(root / "c.txt")], output_dir=str(root / "out"),
                        num_shards=SHARDS, split={"method": "interleave", "valid": 0.1, "test": 0.1})
    return Path(prepare(config))


@pytest.fixture(scope="module")
def tagged_dir(tmp_path_factory):
    """Tagged sentences of 1..8 words (a word's tag follows from the word), in 3 shards; one padded
    width (8), so that each trainer traces its step once."""
    rng = random.Random(5)
    root = tmp_path_factory.mktemp("stream_tagged")
    tag = {w: "ABC"[i % 3] for i, w in enumerate(WORDS)}
    lines = [" ".join(f"{w}/{tag[w]}" for w in (rng.choice(WORDS) for _ in range(rng.randint(1, 8))))
             for _ in range(90)]
    (root / "t.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = DataConfig(dataset="slash_tagged", files=[str(root / "t.txt")], output_dir=str(root / "out"),
                        num_shards=SHARDS, split={"method": "interleave", "valid": 0.1, "test": 0.1})
    return Path(prepare(config))


@pytest.fixture(scope="module")
def labelled_dir(tmp_path_factory):
    """Labelled texts of 3..8 words (the label is the first word's class), in 3 shards (one padded width)."""
    rng = random.Random(7)
    root = tmp_path_factory.mktemp("stream_labelled")
    docs = []
    for i in range(90):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 6))]
        label = ["pos", "neg", "neu"][WORDS.index(words[0]) % 3]
        docs.append({"text": " ".join(words + [f"n{i % 5}", f"d{i}"]), "label": label})
    path = root / "docs.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    config = DataConfig(dataset="jsonl", files=[str(path)], output_dir=str(root / "out"), num_shards=SHARDS,
                        split={"method": "interleave", "valid": 0.1, "test": 0.1})
    return Path(prepare(config))


def _vocab_size(data_dir):
    return len(Vocabulary.load(load_manifest(data_dir).file("vocab")))


def _num_labels(data_dir):
    return len(LabelSet.load(load_manifest(data_dir).file("labels")))


def test_the_corpora_have_several_shards_and_rows_cross_them(lm_dir, tagged_dir, labelled_dir):
    stream = TokenStream(lm_dir, "train", ROWS, BPTT)
    assert len(stream.paths) == SHARDS and stream.num_windows >= 15
    starts = [stream._shards_for(b * stream.row_length, (b + 1) * stream.row_length) for b in range(ROWS)]
    assert any(last - first > 1 for first, last, _ in starts)  # a row reads two shards
    assert any(skip > 0 for _, _, skip in starts)  # a row starts inside a shard
    for d in (tagged_dir, labelled_dir):
        assert len(ExampleStream(d, "train").paths) == SHARDS


# --------------------------------------------------------------------------------------- helpers
def _mirrored():
    devices = tf.config.list_logical_devices("CPU")
    assert len(devices) >= 2, "conftest splits the CPU into two logical devices"
    return tf.distribute.MirroredStrategy([d.name for d in devices[:2]],
                                          cross_device_ops=tf.distribute.ReductionToOneDevice())


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


@dataclass(frozen=True)
class _Run:
    """What a finished training run is compared on."""

    losses: list  # per step
    grad_norms: list  # per step
    epoch_losses: list
    weights: list  # at the end
    epoch_weights: list  # at the end of each epoch
    steps_per_epoch: int


def _reference_run(make_trainer) -> _Run:
    """Runs ``make_trainer(on_epoch=...)`` to the end, keeping the weights of every epoch."""
    snapshots = []
    trainer = make_trainer(on_epoch=lambda epoch, metrics: snapshots.append(_weights(trainer.model)))
    result = trainer.fit()
    return _Run(result.steps["train_loss"], result.steps["grad_norm"], result.history["train_loss"],
                _weights(trainer.model), snapshots, trainer.data.steps_per_epoch)


def _assert_same_weights(a, b, atol):
    a = a if isinstance(a, list) else _weights(a)
    b = b if isinstance(b, list) else _weights(b)
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=0, atol=atol)


class _Kill(Exception):
    pass


def _kill_at(step):
    def on_step(s, metrics):
        if s == step:
            raise _Kill()

    return on_step


def _last_checkpoint(kill, every, steps_per_epoch):
    """``(global step, (epoch, step in epoch))`` of the newest checkpoint before a kill at step ``kill``:
    the trainer saves every ``every`` steps and at the end of every epoch."""
    step = max(s for s in range(1, kill) if s % every == 0 or s % steps_per_epoch == 0)
    epoch, skip = divmod(step, steps_per_epoch)
    return step, (epoch, skip)


class _Recording:
    """Training data that records which ``(epoch, skip_steps)`` the trainer asks it for."""

    def __init__(self, data):
        self.data, self.calls = data, []

    @property
    def steps_per_epoch(self):
        return self.data.steps_per_epoch

    @property
    def global_batch_size(self):
        return self.data.global_batch_size

    def dataset_fn(self, epoch, skip_steps):
        self.calls.append((epoch, skip_steps))
        return self.data.dataset_fn(epoch, skip_steps)


# ------------------------------------------------------------------------------- language model
def _lm_settings(**kw):
    base = dict(epochs=2, batch_size=ROWS, bptt=BPTT, checkpoint_every_steps=1000, log_every_steps=1,
                optimizer={"name": "sgd", "learning_rate": 0.5}, clip_norm=0.5, jit_compile=False)
    base.update(kw)
    return TrainingConfig(**base)


def _lm_builder(vocab_size, dropout=0.0, seed=3):
    def build():
        keras.utils.set_random_seed(seed)
        m = RNNLanguageModel(vocab_size, cell="lstm", num_layers=1, embedding_dim=4, hidden_dim=4, dropout=dropout,
                             seed=seed)
        m.build((None, None))
        return m

    return build


def _lm_trainer(lm_dir, layout=None, *, strategy=None, settings=None, carry=True, dropout=0.0, checkpoint_dir=None,
                on_step=None, on_epoch=None, record=False):
    settings = settings or _lm_settings()
    layout = layout or TokenStream(lm_dir, "train", ROWS, BPTT)
    data = LanguageModelData(layout, shuffle_windows=not carry, seed=11, shuffle_buffer=5)
    if record:
        data = _Recording(data)
    return Trainer(strategy=strategy or tf.distribute.get_strategy(),
                   build_model=_lm_builder(_vocab_size(lm_dir), dropout), task=LanguageModelTask(carry_state=carry),
                   data=data, settings=settings, checkpoint_dir=checkpoint_dir, on_step=on_step, on_epoch=on_epoch,
                   verbose=False)


LM_SETTINGS = dict(checkpoint_every_steps=5)  # checkpoints every 5 steps (and at the end of each epoch)


@pytest.fixture(scope="module")
def lm_reference(lm_dir) -> _Run:
    """One replica, the pipeline's TokenStream, two uninterrupted epochs (SGD, clipping)."""
    return _reference_run(lambda **kw: _lm_trainer(lm_dir, settings=_lm_settings(**LM_SETTINGS), **kw))


def test_a_token_stream_trains_exactly_as_the_in_memory_layout(lm_dir, lm_reference):
    in_memory = bptt_layout(lm_token_stream(lm_dir, "train"), ROWS, BPTT)
    trainer = _lm_trainer(lm_dir, in_memory, settings=_lm_settings(**LM_SETTINGS))
    result = trainer.fit()
    assert trainer.data.steps_per_epoch == lm_reference.steps_per_epoch
    assert result.global_step == 2 * lm_reference.steps_per_epoch == len(lm_reference.losses)
    # the same windows in the same order, hence the same carried state and updates
    np.testing.assert_allclose(lm_reference.losses, result.steps["train_loss"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(lm_reference.grad_norms, result.steps["grad_norm"], rtol=0, atol=1e-6)
    _assert_same_weights(lm_reference.weights, trainer.model, atol=1e-6)


def test_two_replicas_on_a_token_stream_match_one_replica(lm_dir, lm_reference):
    # small blocks and reads here: a row's ids arrive in several reads and are cut into several blocks
    stream = TokenStream(lm_dir, "train", ROWS, BPTT, block_windows=4, records_per_read=5)
    # one epoch (the reference's first): a new epoch's input under MirroredStrategy costs seconds
    double = _lm_trainer(lm_dir, stream, strategy=_mirrored(), settings=_lm_settings(**LM_SETTINGS, epochs=1))
    result = double.fit()
    n = lm_reference.steps_per_epoch
    assert double.num_replicas == 2 and double.per_replica_batch == ROWS // 2
    assert result.global_step == n
    np.testing.assert_allclose(result.steps["train_loss"], lm_reference.losses[:n], rtol=1e-5)
    np.testing.assert_allclose(result.steps["grad_norm"], lm_reference.grad_norms[:n], rtol=1e-4)
    _assert_same_weights(double.model, lm_reference.epoch_weights[0], atol=1e-5)


def test_a_two_replica_token_stream_run_killed_and_resumed_matches_one_uninterrupted_replica(lm_dir, lm_reference,
                                                                                             tmp_path):
    """The carried state is gathered from both replicas into the checkpoint and split again on resume."""
    settings = _lm_settings(**LM_SETTINGS, epochs=1)  # the reference's first epoch
    steps = lm_reference.steps_per_epoch
    kill = 13
    checkpoint, position = _last_checkpoint(kill, 5, steps)
    assert (checkpoint, position) == (10, (0, 10))
    first = _lm_trainer(lm_dir, strategy=_mirrored(), settings=settings, checkpoint_dir=str(tmp_path),
                        on_step=_kill_at(kill))
    with pytest.raises(_Kill):
        first.fit()
    resumed = _lm_trainer(lm_dir, strategy=_mirrored(), settings=settings, checkpoint_dir=str(tmp_path), record=True)
    result = resumed.fit()
    assert result.resumed_from_step == checkpoint and resumed.data.calls == [position]
    assert result.global_step == steps
    np.testing.assert_allclose(result.steps["train_loss"], lm_reference.losses[:steps], rtol=1e-5)
    _assert_same_weights(resumed.model, lm_reference.epoch_weights[0], atol=1e-5)


@pytest.mark.parametrize("carry,kill_epoch,kill_step", [
    (True, 0, 7),  # mid-epoch 1: the rows resume 25 ids into their segments, the state from the checkpoint
    (False, 1, 4),  # mid-epoch 2, windowed mode: the stream's seeded shuffle (epoch 2's seed), windows skipped
])
def test_a_killed_token_stream_run_resumes_as_if_uninterrupted(lm_dir, tmp_path, carry, kill_epoch, kill_step):
    # Adam (slots in the checkpoint) and dropout (its RNG state in the checkpoint)
    settings = _lm_settings(**LM_SETTINGS, optimizer={"name": "adam", "learning_rate": 0.01})
    reference = _lm_trainer(lm_dir, settings=settings, carry=carry, dropout=0.2)
    reference_result = reference.fit()
    steps = reference.data.steps_per_epoch
    kill = kill_epoch * steps + kill_step
    checkpoint, position = _last_checkpoint(kill, 5, steps)
    assert position[1] > 0  # mid-epoch
    first = _lm_trainer(lm_dir, settings=settings, carry=carry, dropout=0.2, checkpoint_dir=str(tmp_path),
                        on_step=_kill_at(kill))
    with pytest.raises(_Kill):
        first.fit()
    resumed = _lm_trainer(lm_dir, settings=settings, carry=carry, dropout=0.2, checkpoint_dir=str(tmp_path),
                          record=True)
    result = resumed.fit()
    assert result.resumed_from_step == checkpoint
    assert resumed.data.calls[0] == position  # the input position is the checkpoint's
    assert resumed.data.calls[1:] == [(e, 0) for e in range(position[0] + 1, 2)]
    assert result.global_step == reference_result.global_step == 2 * steps
    np.testing.assert_allclose(result.steps["train_loss"], reference_result.steps["train_loss"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(result.history["train_loss"], reference_result.history["train_loss"], rtol=0, atol=1e-6)
    _assert_same_weights(resumed.model, reference.model, atol=1e-6)


# ------------------------------------------------------------------------------- example tasks
BATCH = 8
SHUFFLE = 16  # a bounded shuffle: several buffers per epoch
EXAMPLE_CELL = "gru"
EXAMPLE_TASKS = {"tagging": TaggingTask, "classification": ClassificationTask}


def _example_settings(**kw):
    base = dict(epochs=2, batch_size=BATCH, checkpoint_every_steps=1000, log_every_steps=1,
                optimizer={"name": "adam", "learning_rate": 0.05}, clip_norm=0.5, jit_compile=False)
    base.update(kw)
    return TrainingConfig(**base)


def _example_builder(kind, data_dir, seed=3):
    vocab, labels = _vocab_size(data_dir), _num_labels(data_dir)

    def build():
        keras.utils.set_random_seed(seed)
        cls = RNNTagger if kind == "tagging" else RNNClassifier
        m = cls(vocab, labels, cell=EXAMPLE_CELL, embedding_dim=4, hidden_dim=4, seed=seed)
        m.build((None, None))
        return m

    return build


@pytest.fixture
def example_dir(request, tagged_dir, labelled_dir):
    return {"tagging": tagged_dir, "classification": labelled_dir}[request.param]


def _example_trainer(kind, data_dir, *, strategy=None, settings=None, checkpoint_dir=None, on_step=None,
                     on_epoch=None, record=False):
    data = ExampleData(ExampleStream(data_dir, "train"), BATCH, seed=4, shuffle_buffer=SHUFFLE)
    if record:
        data = _Recording(data)
    return Trainer(strategy=strategy or tf.distribute.get_strategy(), build_model=_example_builder(kind, data_dir),
                   task=EXAMPLE_TASKS[kind](), data=data, settings=settings or _example_settings(),
                   checkpoint_dir=checkpoint_dir, on_step=on_step, on_epoch=on_epoch, verbose=False)


EXAMPLE_SETTINGS = dict(checkpoint_every_steps=3)  # checkpoints every 3 steps (and at the end of each epoch)


@pytest.fixture(scope="module")
def example_references(tagged_dir, labelled_dir) -> dict:
    """Per task and epoch count, lazily: one replica, uninterrupted (Adam, clipping) on the ExampleStream."""
    dirs, runs = {"tagging": tagged_dir, "classification": labelled_dir}, {}

    def get(kind, epochs=2) -> _Run:
        if (kind, epochs) not in runs:
            runs[kind, epochs] = _reference_run(lambda **kw: _example_trainer(
                kind, dirs[kind], settings=_example_settings(**EXAMPLE_SETTINGS, epochs=epochs), **kw))
        return runs[kind, epochs]

    return get


def test_the_trainer_takes_the_stream_batches_in_order_every_epoch(tagged_dir, example_references):
    """A hand-written loop over ``ExampleStream.batches`` (seed + epoch) is the reference."""
    reference = example_references("tagging")
    stream = ExampleStream(tagged_dir, "train")
    steps = len(stream) // BATCH
    assert reference.steps_per_epoch == steps >= 6

    model = _example_builder("tagging", tagged_dir)()
    optimizer = keras.optimizers.Adam(learning_rate=0.05)
    optimizer.build(model.trainable_variables)

    @tf.function
    def train_step(batch):
        with tf.GradientTape() as tape:
            loss_sum, count = model.loss_sum(batch["ids"], batch["tags"], training=True)
        grads = tape.gradient(loss_sum, model.trainable_variables)
        grads, _ = tf.clip_by_global_norm([g / count for g in grads], 0.5)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss_sum / count

    losses = []
    for epoch in range(2):
        for batch in stream.batches(BATCH, seed=4 + epoch, shuffle_buffer=SHUFFLE).take(steps):
            losses.append(float(train_step(batch)))
    assert len(losses) == len(reference.losses) == 2 * steps
    np.testing.assert_allclose(reference.losses, losses, rtol=1e-5)
    _assert_same_weights(reference.weights, model, atol=1e-5)
    assert losses[steps:] != losses[:steps]  # epoch 2 is another order


@pytest.mark.parametrize("example_dir,kind", [("tagging", "tagging"), ("classification", "classification")],
                         indirect=["example_dir"])
def test_two_replicas_on_an_example_stream_match_one_replica(example_dir, kind, example_references):
    reference = example_references(kind, epochs=2 if kind == "tagging" else 1)  # tagging's is shared
    # one epoch (the reference's first): a new epoch's input under MirroredStrategy costs seconds
    double = _example_trainer(kind, example_dir, strategy=_mirrored(),
                              settings=_example_settings(**EXAMPLE_SETTINGS, epochs=1))
    result = double.fit()
    n = reference.steps_per_epoch
    assert double.num_replicas == 2 and double.per_replica_batch == BATCH // 2
    assert result.global_step == n
    np.testing.assert_allclose(result.steps["train_loss"], reference.losses[:n], rtol=1e-5)
    np.testing.assert_allclose(result.steps["grad_norm"], reference.grad_norms[:n], rtol=1e-4)
    # Adam (lr 0.05) turns the replicas' float32 summation order into ~1e-5 weight differences
    _assert_same_weights(double.model, reference.epoch_weights[0], atol=1e-4)


@pytest.mark.parametrize("example_dir,kind", [("tagging", "tagging")], indirect=["example_dir"])
def test_a_killed_example_stream_run_resumes_as_if_uninterrupted(example_dir, kind, example_references, tmp_path):
    reference = example_references(kind)
    settings = _example_settings(**EXAMPLE_SETTINGS)
    steps = reference.steps_per_epoch
    assert steps >= 7
    kill = steps + 5  # mid-epoch 2
    checkpoint, position = _last_checkpoint(kill, 3, steps)
    assert position[0] == 1 and position[1] > 0
    first = _example_trainer(kind, example_dir, settings=settings, checkpoint_dir=str(tmp_path),
                             on_step=_kill_at(kill))
    with pytest.raises(_Kill):
        first.fit()
    resumed = _example_trainer(kind, example_dir, settings=settings, checkpoint_dir=str(tmp_path), record=True)
    result = resumed.fit()
    assert result.resumed_from_step == checkpoint
    assert resumed.data.calls == [position]  # epoch 2, from the checkpoint's batch
    assert result.global_step == 2 * steps
    np.testing.assert_allclose(result.steps["train_loss"], reference.losses, rtol=0, atol=1e-6)
    np.testing.assert_allclose(result.history["train_loss"], reference.epoch_losses, rtol=0, atol=1e-6)
    _assert_same_weights(resumed.model, reference.weights, atol=1e-6)


# ------------------------------------------------------------------------------- two workers
WORKER = Path(__file__).with_name("stream_multiworker_worker.py")
REPO = Path(__file__).resolve().parents[2]

from test_multiworker import _free_ports  # noqa: E402 - the same loopback ports as the in-memory test


def _start(data_dir, out, checkpoint_dir, tf_config=None):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env["PYTHONPATH"] = str(REPO)
    if tf_config:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen([sys.executable, str(WORKER), str(data_dir), str(out), str(checkpoint_dir)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc, timeout=300):
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        pytest.fail(f"worker {proc.pid} ran past {timeout}s:\n{output[-3000:]}")
    assert proc.returncode == 0, output[-3000:]


@pytest.mark.slow
def test_two_workers_reading_one_token_stream_match_one_worker(lm_dir, tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = [_start(lm_dir, tmp_path / f"worker{i}.json", tmp_path / "ckpt",
                    {"cluster": cluster, "task": {"type": "worker", "index": i}}) for i in range(2)]
    try:
        for proc in procs:
            _finish(proc)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    reference_proc = _start(lm_dir, tmp_path / "reference.json", tmp_path / "ref_ckpt")
    _finish(reference_proc)
    workers = [json.loads((tmp_path / f"worker{i}.json").read_text()) for i in range(2)]
    reference = json.loads((tmp_path / "reference.json").read_text())

    assert [w["replicas"] for w in workers] == [2, 2] and reference["replicas"] == 1
    assert [w["rows"] for w in workers] == [[[0, 2]], [[2, 2]]]  # each worker read only its own rows, once
    assert len(reference["losses"]) == reference["steps"] == TokenStream(lm_dir, "train", ROWS, BPTT).num_windows
    for w in workers:
        np.testing.assert_allclose(w["losses"], reference["losses"], rtol=1e-5)
        assert len(w["weights"]) == len(reference["weights"]) > 0
        for a, b in zip(w["weights"], reference["weights"]):
            np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-5)
    assert any(p.name.startswith("ckpt-") for p in (tmp_path / "ckpt").iterdir())  # the chief's checkpoints
