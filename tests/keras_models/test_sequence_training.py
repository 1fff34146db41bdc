"""The trainer on taggers, classifiers and encoder-decoders: learning, replicas, kill-and-resume,
higher-is-better early stopping."""

import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_models.models.classifier import RNNClassifier
from keras_models.models.tagger import RNNTagger
from keras_models.models.seq2seq import Seq2SeqModel
from keras_models.training import ClassificationTask, ExampleData, Seq2SeqTask, TaggingTask, Trainer
from pipelines.config import TrainingConfig
from preprocessing.input_fns import Examples

VOCAB, NUM_TAGS, NUM_CLASSES, CHAR_VOCAB, MAX_CHARS = 12, 3, 3, 9, 4


def _tagging_examples(n=32, seed=0, with_chars=False):
    """A learnable task: the tag of a token is its id mod 3; its characters are a function of its id."""
    rng = np.random.default_rng(seed)
    ids = [rng.integers(1, VOCAB, rng.integers(2, 9)).astype(np.int32) for _ in range(n)]
    tags = [(x % NUM_TAGS).astype(np.int32) for x in ids]
    chars = None
    if with_chars:
        chars = [[np.array([1 + t % 8, 1 + (t * 3) % 8][: 1 + t % 2], np.int32) for t in x] for x in ids]
    return Examples(task="tagging", ids=ids, tags=tags, chars=chars)


def _classification_examples(n=32, seed=0):
    """A learnable task: the label is the first token's id mod 3."""
    rng = np.random.default_rng(seed)
    ids = [rng.integers(1, VOCAB, rng.integers(2, 9)).astype(np.int32) for _ in range(n)]
    labels = np.array([x[0] % NUM_CLASSES for x in ids], np.int32)
    return Examples(task="classification", ids=ids, labels=labels)


def _seq2seq_examples(n=32, seed=0):
    """A learnable task: the target is the source reversed."""
    rng = np.random.default_rng(seed)
    ids = [rng.integers(4, VOCAB, rng.integers(2, 7)).astype(np.int32) for _ in range(n)]
    return Examples(task="seq2seq", ids=ids, targets=[x[::-1].copy() for x in ids])


def _settings(**kw):
    base = dict(epochs=1, batch_size=8, checkpoint_every_steps=1000, log_every_steps=1,
                optimizer={"name": "adam", "learning_rate": 0.05}, clip_norm=None, jit_compile=False)
    base.update(kw)
    return TrainingConfig(**base)


def _builder(kind, seed=3):
    def build():
        keras.utils.set_random_seed(seed)
        if kind == "seq2seq":
            m = Seq2SeqModel(VOCAB, VOCAB, cell="gru", encoder_layers=1, embedding_dim=4, hidden_dim=4, seed=seed)
            m.build()
            return m
        if kind == "classifier":
            m = RNNClassifier(VOCAB, NUM_CLASSES, cell="gru", embedding_dim=4, hidden_dim=4, seed=seed)
            m.build((None, None))
            return m
        crf = kind == "tagger_crf_chars"
        m = RNNTagger(VOCAB, NUM_TAGS, cell="gru", embedding_dim=4, hidden_dim=4, use_crf=crf,
                      char_vocab_size=CHAR_VOCAB if crf else 0, char_embedding_dim=3, char_hidden_dim=2, seed=seed)
        m.build({"ids": (None, None), "chars": (None, None, MAX_CHARS)} if crf else (None, None))
        return m

    return build


def _data(kind, max_steps=None, n=32):
    if kind == "classifier":
        return ExampleData(_classification_examples(n), 8, seed=0, max_steps=max_steps)
    if kind == "seq2seq":
        return ExampleData(_seq2seq_examples(n), 8, seed=0, max_steps=max_steps)
    chars = kind == "tagger_crf_chars"
    return ExampleData(_tagging_examples(n, with_chars=chars), 8, seed=0, max_steps=max_steps,
                       max_chars=MAX_CHARS if chars else None)


def _trainer(kind="tagger", strategy=None, settings=None, max_steps=None, **kw):
    return Trainer(
        strategy=strategy or tf.distribute.get_strategy(), build_model=_builder(kind),
        task=TASKS.get(kind, TaggingTask)(), data=_data(kind, max_steps),
        settings=settings or _settings(), verbose=False, **kw,
    )


TASKS = {"classifier": ClassificationTask, "seq2seq": Seq2SeqTask}


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


def _mirrored():
    devices = tf.config.list_logical_devices("CPU")
    assert len(devices) >= 2, "conftest splits the CPU into two logical devices"
    return tf.distribute.MirroredStrategy([d.name for d in devices[:2]],
                                          cross_device_ops=tf.distribute.ReductionToOneDevice())


# ------------------------------------------------------------------------------------ learning
@pytest.mark.parametrize("kind", ["tagger", "tagger_crf_chars", "classifier"])  # seq2seq: test_seq2seq.py
def test_training_lowers_the_loss_and_reports_no_perplexity(kind):
    steps = []
    trainer = _trainer(kind, settings=_settings(epochs=4), on_step=lambda s, m: steps.append(m))
    result = trainer.fit()
    losses = result.history["train_loss"]
    assert len(losses) == result.epochs_completed == 4
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.6 * losses[0], losses
    assert result.global_step == 4 * 4 == len(steps)  # 32 examples, batch 8: 4 steps per epoch
    assert "train_perplexity" not in result.history and "train_perplexity" not in result.steps
    assert all("train_perplexity" not in m for m in steps)
    assert all(math.isfinite(m["grad_norm"]) and m["grad_norm"] > 0 for m in steps)


def test_task_losses_count_real_tokens_and_examples():
    tagger = _builder("tagger")()
    batch = {"ids": np.array([[3, 4, 5, 0], [6, 0, 0, 0]], np.int32),
             "tags": np.array([[0, 1, 2, 2], [0, 2, 2, 2]], np.int32)}  # tags at padding are ignored
    loss_sum, count, state = TaggingTask().loss_and_state(tagger, batch, (), training=False)
    assert float(count) == 4 and state == ()
    logits = np.asarray(tagger(batch["ids"]))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = -sum(logp[b, t, batch["tags"][b, t]] for b, t in [(0, 0), (0, 1), (0, 2), (1, 0)])
    assert float(loss_sum) == pytest.approx(want, rel=1e-5)
    assert TaggingTask().initial_state(tagger, 8) == ()

    classifier = _builder("classifier")()
    batch = {"ids": batch["ids"], "label": np.array([2, 0], np.int32)}
    loss_sum, count, state = ClassificationTask().loss_and_state(classifier, batch, (), training=False)
    assert float(count) == 2 and state == ()
    logits = np.asarray(classifier(batch["ids"]))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    assert float(loss_sum) == pytest.approx(-(logp[0, 2] + logp[1, 0]), rel=1e-5)


def test_example_data_steps_and_epoch_orders():
    data = _data("tagger", n=35)
    assert data.steps_per_epoch == 4 and data.global_batch_size == 8  # the partial batch is dropped
    assert ExampleData(data.examples, 8, max_steps=2).steps_per_epoch == 2
    with pytest.raises(ValueError, match="no batch"):
        _ = ExampleData(data.examples, 64).steps_per_epoch

    def first_ids(epoch, skip=0):
        return [b["ids"].numpy()[:, 0].tolist() for b in data.dataset_fn(epoch, skip)()]

    assert first_ids(0) != first_ids(1)  # a new order every epoch
    assert first_ids(1) == first_ids(1)
    assert first_ids(1, 2) == first_ids(1)[2:]


# ------------------------------------------------------------------------------------ replicas
@pytest.mark.parametrize("kind", ["tagger", "seq2seq"])  # no dropout
def test_two_replicas_match_one_replica(kind):
    settings = _settings(epochs=2, clip_norm=0.5)
    single = _trainer(kind, settings=settings)
    single_result = single.fit()
    double = _trainer(kind, strategy=_mirrored(), settings=settings)
    double_result = double.fit()
    assert double.num_replicas == 2 and double.per_replica_batch == 4
    assert double_result.global_step == single_result.global_step == 8
    np.testing.assert_allclose(double_result.steps["train_loss"], single_result.steps["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(double_result.steps["grad_norm"], single_result.steps["grad_norm"], rtol=1e-4)
    for a, b in zip(_weights(double.model), _weights(single.model)):
        # the replicas' gradients are summed in another order; Adam (lr 0.05) turns float32 rounding
        # into ~1e-5 weight differences, where another batch order moves them by more than 0.1
        np.testing.assert_allclose(a, b, atol=1e-4)


# ------------------------------------------------------------------------------------ resume
class _Kill(Exception):
    pass


@pytest.mark.parametrize("kind", ["tagger_crf_chars", "seq2seq"])
def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path, kind):
    # 4 steps per epoch; checkpoints at steps 3, 4 (end of epoch 1), 6 and 8 (end of epoch 2)
    settings = _settings(epochs=2, checkpoint_every_steps=3)
    reference = _trainer(kind, settings=settings, checkpoint_dir=str(tmp_path / "a"))
    reference_result = reference.fit()

    def kill(step, metrics):
        if step == 7:  # mid-epoch 2, after the checkpoint at step 6
            raise _Kill()

    first = _trainer(kind, settings=settings, checkpoint_dir=str(tmp_path / "b"), on_step=kill)
    with pytest.raises(_Kill):
        first.fit()
    resumed = _trainer(kind, settings=settings, checkpoint_dir=str(tmp_path / "b"))
    result = resumed.fit()
    assert result.resumed_from_step == 6
    assert result.global_step == reference_result.global_step == 8
    assert result.epochs_completed == 2
    np.testing.assert_allclose(result.history["train_loss"], reference_result.history["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(result.steps["train_loss"], reference_result.steps["train_loss"], rtol=1e-5)
    for a, b in zip(_weights(resumed.model), _weights(reference.model)):
        np.testing.assert_allclose(a, b, atol=1e-5)


# ------------------------------------------------------------------------------------ early stopping
ACCURACIES = [0.5, 0.7, 0.6, 0.65, 0.9]


@pytest.mark.parametrize(
    "greater, min_delta, epochs_run, best_epoch",
    [
        (True, 0.0, 4, 2),  # 0.5 ↑ 0.7 ↑, 0.6 and 0.65 no better: stop after 4, keep epoch 2
        (True, 0.25, 3, 1),  # 0.7 is not 0.25 better than 0.5: stop after 3, keep epoch 1
        (False, 0.0, 3, 1),  # lower is better: 0.7 and 0.6 are worse than 0.5: stop after 3, keep epoch 1
    ],
)
def test_early_stopping_keeps_the_best_weights(tmp_path, greater, min_delta, epochs_run, best_epoch):
    values = iter(ACCURACIES)
    snapshots = {}
    settings = _settings(epochs=5, early_stopping={"patience": 2, "min_delta": min_delta})
    trainer = _trainer(
        "tagger", settings=settings, max_steps=1, checkpoint_dir=str(tmp_path),
        evaluate=lambda m: {"accuracy": next(values), "loss": 1.0}, monitor="accuracy", greater_is_better=greater,
        on_epoch=lambda e, m: snapshots.setdefault(e, _weights(trainer.model)),
    )
    result = trainer.fit()
    assert result.stopped_early
    assert result.epochs_completed == epochs_run == len(snapshots)
    assert result.best_value == ACCURACIES[best_epoch - 1]
    assert result.history["val_accuracy"] == ACCURACIES[:epochs_run]
    assert not np.allclose(snapshots[1][0], snapshots[2][0])  # the weights did move between epochs
    # the trainer's model holds the best epoch's weights, as does best.weights.h5
    for a, b in zip(_weights(trainer.model), snapshots[best_epoch]):
        np.testing.assert_array_equal(a, b)
    best_path = os.path.join(str(tmp_path), "best.weights.h5")
    assert os.path.exists(best_path)
    fresh = _builder("tagger", seed=99)()
    fresh.load_weights(best_path)
    for a, b in zip(_weights(fresh), snapshots[best_epoch]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("restore", [False, True])
def test_without_early_stopping_restore_best_weights_decides(tmp_path, restore):
    values = iter([0.9, 0.1, 0.2])
    trainer = _trainer("tagger", settings=_settings(epochs=3, restore_best_weights=restore), max_steps=1,
                       checkpoint_dir=str(tmp_path), evaluate=lambda m: {"accuracy": next(values)},
                       monitor="accuracy", greater_is_better=True)
    result = trainer.fit()
    assert not result.stopped_early and result.epochs_completed == 3 and result.best_value == 0.9
    best = _builder("tagger", seed=99)()
    best.load_weights(os.path.join(str(tmp_path), "best.weights.h5"))
    same = all(np.array_equal(a, b) for a, b in zip(_weights(best), _weights(trainer.model)))
    assert same == restore  # restored: epoch 1's weights; else the last epoch's
