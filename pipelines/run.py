"""The scheduled run: prepare → train → evaluate → register / promote, safe to re-run.

A run's work directory (``runs/<name>`` unless ``work_dir`` says otherwise) holds one folder per
*training key*; inside it ``checkpoints/``, ``state.json`` and one ``outputs/<output key>/`` folder
per set of evaluation / export settings (``model/*.keras``, ``plots/``).

What is hashed (:func:`training_settings`, :func:`output_settings`):

- training key: the ``model`` and ``training`` sections, ``tracking.metric`` and
  ``tracking.greater_is_better`` (they pick the best epoch and stop early), the prepared data's
  fingerprint (which covers the ``data`` section and the sources), and for seq2seq
  ``decode.max_length`` (validation during training decodes with it);
- output key: ``generate`` and the rest of ``decode`` (beam size, length penalty, attention samples);
- neither: ``name``, ``work_dir``, ``tracking.tracking_uri`` / ``experiment`` / ``registered_model``.

So:

- re-running a finished run with the same settings trains nothing and reports the result; ``run``
  registers (and promotes) it if the registered model has no version from that MLflow run yet
  (after ``rnnflow train``, or with another ``tracking.registered_model``); a second ``run`` adds
  nothing;
- changed output settings (or another tracking store): the trained weights are evaluated, exported
  and sampled again, in a new MLflow run (tagged ``rnnflow.trained_by_run``, with the training's
  history), and registered from it;
- re-running after a kill resumes training from the last checkpoint, in the same MLflow run;
- changed data (a new fingerprint) or a changed training setting gives a new key and a fresh training;
- two runs on the same work directory at once: the second finds the lock taken and exits with
  :data:`EXIT_LOCKED` instead of clobbering the first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.config import RunConfig, dump_config
from pipelines.run_state import RunLock, read_state, write_state

log = logging.getLogger("rnnflow")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED = 0, 1, 2, 3


@dataclass
class RunResult:
    run_key: str
    data_dir: str
    mlflow_run_id: str | None
    metrics: dict[str, float]
    sample: str
    model_path: str
    model_uri: str | None = None
    registered_version: str | None = None
    promotion: dict[str, Any] | None = None
    reused: bool = False
    resumed_from_step: int | None = None
    output_key: str = ""
    registered_before: bool = False  # the version existed already (registered by an earlier run of this config)


@dataclass(frozen=True)
class RunPaths:
    """Where one run writes: ``train`` = ``<work_dir>/<training key>`` (checkpoints, ``state.json``),
    ``out`` = ``<train>/outputs/<output key>`` (exported model, plots). ``replay``: the weights were
    trained by an earlier MLflow run, whose history is logged again to this one."""

    train: Path
    output_key: str
    replay: bool = False

    @property
    def key(self) -> str:
        return self.train.name

    @property
    def out(self) -> Path:
        return self.train / "outputs" / self.output_key


# Settings of other sections that change the trained weights, per task: seq2seq validation during
# training decodes (greedily) up to decode.max_length, and its WER picks the best epoch.
TRAINING_DECODE_FIELDS = {"seq2seq": ("max_length",)}


def _digest(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def training_settings(config: RunConfig, data_fingerprint: str) -> dict[str, Any]:
    """Everything that changes the trained weights: the model, training and the data's fingerprint,
    the metric that picks the best epoch and stops early (``tracking.metric`` and its direction),
    and per task the decode settings used by validation during training."""
    decode = config.decode.model_dump(mode="json")
    return {
        "model": config.model.model_dump(mode="json"),
        "training": config.training.model_dump(mode="json"),
        "monitor": {"metric": config.tracking.metric, "greater_is_better": config.tracking.greater_is_better},
        "decode": {k: decode[k] for k in TRAINING_DECODE_FIELDS.get(config.data.task, ())},
        "data": data_fingerprint,
    }


def output_settings(config: RunConfig) -> dict[str, Any]:
    """What changes only the evaluation, export and sample of trained weights: ``generate`` and the
    rest of ``decode`` (beam size, length penalty, attention samples)."""
    decode = config.decode.model_dump(mode="json")
    return {
        "generate": config.generate.model_dump(mode="json"),
        "decode": {k: v for k, v in decode.items() if k not in TRAINING_DECODE_FIELDS.get(config.data.task, ())},
    }


def run_key(config: RunConfig, data_fingerprint: str) -> str:
    """The training key: names ``<work_dir>/<key>/``, which holds the checkpoints."""
    return _digest(training_settings(config, data_fingerprint))


def output_key(config: RunConfig) -> str:
    """The output key: names ``<work_dir>/<training key>/outputs/<key>/`` (model, plots)."""
    return _digest(output_settings(config))


def build_language_model(config: RunConfig, vocab_size: int):
    from keras_models.models.language_model import RNNLanguageModel

    m = config.model
    model = RNNLanguageModel(
        vocab_size=vocab_size, cell=m.cell, num_layers=m.num_layers, embedding_dim=m.embedding_dim,
        hidden_dim=m.hidden_dim, tie_weights=m.tie_weights, dropout=m.dropout,
        recurrent_dropout=m.recurrent_dropout, activation=m.activation, seed=config.training.seed,
    )
    model.build((None, None))
    return model


def _detokenize(tokens: list[str], level: str) -> str:
    """Generated tokens as text; at character level ``<eos>`` (the end of a line) becomes a newline."""
    from preprocessing.tokenizers import detokenize

    return detokenize(["\n" if level == "char" and t == "<eos>" else t for t in tokens], level)


def generate_text(scorer, prompt: str, *, max_tokens: int, temperature: float, top_k: int | None,
                  top_p: float | None, seed: int) -> str:
    """A continuation of ``prompt`` from an exported ``LanguageModelScorer`` (tokenizer and vocab inside)."""
    from keras_models.generation import Generator
    from preprocessing.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Vocabulary

    vocab = Vocabulary(scorer.vocabulary)
    level = scorer.tokenizer.config.level
    tokens = scorer.tokenizer.tokenize_py(prompt) if prompt else []
    prompt_ids = [EOS_ID] + vocab.encode(tokens)  # a sentence starts after <eos>, as in training
    generator = Generator(scorer.language_model, banned_ids=(PAD_ID, UNK_ID, BOS_ID))
    out = generator.generate(prompt_ids, max_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    return _detokenize(tokens + vocab.decode(out), level)


def gradient_flow_curves(config: RunConfig, model, layout, steps: int = 60) -> dict[str, np.ndarray]:
    """``||dL_T/dh_t||`` for the trained model and for fresh RNN / LSTM / GRU models of the same shape."""
    import keras

    from keras_models.diagnostics import gradient_flow

    steps = min(steps, layout.inputs.shape[1])
    ids, targets = layout.inputs[:4, :steps], layout.targets[:4, :steps]
    curves = {f"trained {config.model.cell}": gradient_flow(model, ids, targets)}
    for cell in ("rnn", "lstm", "gru"):
        keras.utils.set_random_seed(config.training.seed)
        fresh = build_language_model(config.model_copy(update={"model": config.model.model_copy(update={"cell": cell})}),
                                     model.vocab_size)
        curves[f"fresh {cell}"] = gradient_flow(fresh, ids, targets)
    return curves


def train_language_model(config: RunConfig, data_dir: Path, *, strategy, tracker, work: "RunPaths",
                         register: bool) -> RunResult:
    """Trains, evaluates, exports and (optionally) registers; everything is logged through ``tracker``."""
    import keras
    import tensorflow as tf

    from keras_models.export import LanguageModelScorer, TextToIds
    from keras_models.evaluation import StreamEvaluator
    from keras_models.training import LanguageModelData, LanguageModelTask
    from pipelines import plots
    from preprocessing.input_fns import bptt_layout, lm_token_stream
    from preprocessing.manifest import check_compatible, load_manifest
    from preprocessing.vocab import Vocabulary

    t = config.training
    manifest = load_manifest(data_dir)
    vocab = Vocabulary.load(manifest.file("vocab"))
    check_compatible(manifest, task="lm", vocabulary=vocab.tokens)
    tracker.log_artifact(data_dir / "manifest.json", "data")
    tracker.log_artifact(manifest.file("vocab"), "data/vocab")

    log.info("reading the token streams from %s", data_dir)
    streams = {split: lm_token_stream(data_dir, split) for split in ("train", "valid", "test")}
    train_layout = bptt_layout(streams["train"], t.batch_size, t.bptt)
    eval_layouts = {s: bptt_layout(streams[s], t.eval_batch_size, t.bptt) for s in ("valid", "test")}
    tracker.log_params({"data.fingerprint": manifest.fingerprint, "data.train_tokens": len(streams["train"]),
                        "data.vocab_size": len(vocab), "run.key": work.key,
                        "run.replicas": strategy.num_replicas_in_sync})

    keras.utils.set_random_seed(t.seed)
    level = manifest.tokenizer["level"]
    val_eval = StreamEvaluator(eval_layouts["valid"], jit_compile=t.jit_compile)
    trainer = _trainer(
        config, strategy, tracker, work,
        build_model=lambda: build_language_model(config, len(vocab)),
        task=LanguageModelTask(carry_state=t.carry_state),
        data=LanguageModelData(train_layout, shuffle_windows=not t.carry_state, seed=t.seed,
                               max_steps=t.max_steps_per_epoch),
        evaluate=val_eval,
        default_monitor="perplexity",
    )
    result = trainer.fit()
    model = trainer.model

    metrics: dict[str, float] = {}
    for split, layout in eval_layouts.items():
        prefix = metric_prefix(split)
        scores = (val_eval if split == "valid" else StreamEvaluator(layout, jit_compile=t.jit_compile))(model)
        metrics[f"{prefix}_loss"] = scores["loss"]
        metrics[f"{prefix}_perplexity"] = scores["perplexity"]
        if level == "char":
            metrics[f"{prefix}_bpc"] = scores["bits_per_token"]
    _log_final_metrics(metrics, result, tracker, work)
    if not tracker.enabled:  # a non-chief worker: the chief exports, plots, logs and registers
        return RunResult(run_key=work.key, output_key=work.output_key, data_dir=str(data_dir), mlflow_run_id=None, metrics=metrics, sample="",
                         model_path="", resumed_from_step=result.resumed_from_step)

    # export: raw strings in, tokenization inside the graph
    scorer = LanguageModelScorer(TextToIds(manifest.tokenizer, vocab.tokens), model)
    model_dir = work.out / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    model_path = model_dir / "scorer.keras"
    scorer(tf.constant(["a b"]))  # build
    scorer.save(model_path)

    g = config.generate
    sample = generate_text(scorer, g.prompt, max_tokens=g.max_tokens, temperature=g.temperature,
                           top_k=g.top_k, top_p=g.top_p, seed=g.seed)
    log.info("sample: %s", sample)
    tracker.log_text(sample, "samples/sample.txt")

    _log_training(config, result, tracker, work, ("train_perplexity", "val_perplexity"),
                  f"{config.model.cell} language model",
                  {"gradient_flow": plots.gradient_flow(gradient_flow_curves(config, model, eval_layouts["valid"]))})

    out = RunResult(run_key=work.key, output_key=work.output_key, data_dir=str(data_dir), mlflow_run_id=tracker.run_id, metrics=metrics,
                    sample=sample, model_path=str(model_path), resumed_from_step=result.resumed_from_step)
    _log_and_register(config, tracker, scorer, ["the cat sat on the mat"], out, register)
    return out


# ------------------------------------------------------------------------ shared by every task
def _trainer(config: RunConfig, strategy, tracker, work: "RunPaths", *, build_model, task, data, evaluate,
             default_monitor: str):
    """The one training entry, wired to the config, the work directory's checkpoints and MLflow."""
    from keras_models.training import Trainer

    def on_step(step, metrics):
        tracker.log_metrics({f"step/{k}": v for k, v in metrics.items()}, step=step)

    def on_epoch(epoch, metrics):
        tracker.log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step=epoch)

    return Trainer(
        strategy=strategy, build_model=build_model, task=task, data=data, settings=config.training,
        evaluate=evaluate, monitor=_monitor(config, default_monitor),
        greater_is_better=bool(config.tracking.greater_is_better), checkpoint_dir=str(work.train / "checkpoints"),
        on_step=on_step, on_epoch=on_epoch,
    )


def metric_prefix(split: str) -> str:
    """The prefix of a split's metrics: ``val_…`` for the validation split, ``train_…`` / ``test_…``."""
    return "val" if split == "valid" else split


def _monitor(config: RunConfig, default: str) -> str:
    """The validation metric early stopping and the best weights watch: ``tracking.metric`` without its split."""
    metric = config.tracking.metric or default
    for prefix in ("val_", "test_"):
        if metric.startswith(prefix):
            return metric[len(prefix):]
    return metric


def _load_splits(data_dir: Path, with_chars: bool = False) -> dict:
    """The train / valid / test examples of a tagging, classification or seq2seq directory; an empty
    split is an error that says where to look."""
    from preprocessing.input_fns import load_examples
    from preprocessing.manifest import DataError

    examples = {split: load_examples(data_dir, split, with_chars) for split in ("train", "valid", "test")}
    for split, ex in examples.items():
        if not len(ex):
            raise DataError(f"{data_dir}: the {split} split is empty; check data.split and rejected/")
    return examples


def _log_final_metrics(metrics: dict, result, tracker, work: "RunPaths") -> None:
    """Adds ``epochs_completed`` and logs the final evaluation after the per-epoch values of the same names.

    A new MLflow run over weights trained by an earlier one (``work.replay``: other evaluation or
    export settings) first gets the training's per-step and per-epoch history, so that its learning
    curves are complete."""
    if work.replay:
        steps = result.steps.get("step", [])
        for i, step in enumerate(steps):
            tracker.log_metrics({f"step/{k}": v[i] for k, v in result.steps.items() if k != "step" and i < len(v)},
                                step=int(step))
        for i, epoch in enumerate(result.history.get("epoch", [])):
            tracker.log_metrics({k: v[i] for k, v in result.history.items() if k != "epoch" and i < len(v)},
                                step=int(epoch))
    metrics["epochs_completed"] = result.epochs_completed
    log.info("evaluation: %s", ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    tracker.log_metrics(metrics, step=result.epochs_completed + 1)


def _log_training(config: RunConfig, result, tracker, work: "RunPaths", curve_keys: tuple, title: str,
                  extra_figures: dict) -> None:
    """Learning curves (train / val loss, ``curve_keys``, learning rate), gradient norms and
    ``extra_figures`` to ``<outputs>/plots`` and MLflow, and the history as ``history.json``."""
    from pipelines import plots

    keys = ("train_loss", "val_loss", "learning_rate", *curve_keys)
    steps = result.steps.get("step", [])
    figures = {
        "learning_curves": plots.learning_curves(
            {k.removeprefix("train_"): v for k, v in result.history.items() if k in keys},
            step_history={"train loss (per step)": (steps, result.steps.get("train_loss", []))},
            title=f"{config.name}: {title}"),
        "gradient_norms": plots.gradient_norms(steps, result.steps.get("grad_norm", []),
                                                clip_norm=config.training.clip_norm),
        **extra_figures,
    }
    plot_dir = work.out / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    for name, fig in figures.items():
        fig.savefig(plot_dir / f"{name}.png", dpi=100)
        tracker.log_figure(fig, f"plots/{name}.png")
    tracker.log_dict({"history": result.history, "steps": result.steps}, "history.json")


def _log_and_register(config: RunConfig, tracker, export_model, input_example, out: "RunResult", register: bool):
    """Logs the exported model; with ``register``, registers it (once per registered model and run)
    and promotes it only if it beats the champion."""
    out.model_uri = tracker.log_model(export_model, "model", input_example=input_example)
    if register and out.model_uri:
        register_result(config, out)


def register_result(config: RunConfig, out: "RunResult") -> None:
    """Registers ``out``'s model as a version of ``tracking.registered_model`` and promotes it, unless
    that registered model already has a version from ``out``'s MLflow run: then that version is
    reported as it is (idempotent; nothing is registered twice). Fills ``out.registered_version``,
    ``out.promotion`` and ``out.registered_before``."""
    from pipelines import tracking

    name = config.tracking.registered_model
    if not name or not out.model_uri or not out.mlflow_run_id:
        return
    value = out.metrics.get(config.tracking.metric)
    if value is None:
        raise KeyError(f"tracking.metric {config.tracking.metric!r} is not one of {sorted(out.metrics)}")
    version, decision, new = tracking.register_once(
        config.resolved_tracking_uri(), out.model_uri, out.mlflow_run_id, name, config.tracking.metric, value,
        bool(config.tracking.greater_is_better))
    out.registered_version, out.promotion, out.registered_before = version, decision, not new
    log.info("%s version %s: %s", name, version, decision.get("reason", ""))


def make_evaluator(config: RunConfig, examples, names: list[str], *, max_chars: int | None = None,
                   target_level: str = "word", beam_size: int | None = None):
    """The evaluator of ``config``'s task (tagging, classification or seq2seq) over ``examples``.

    ``names``: the tags, labels or target tokens in id order; ``max_chars``: the tagger's characters
    per token; ``target_level``, ``beam_size`` (default ``decode.beam_size``): for seq2seq.
    """
    from keras_models.evaluation import ClassificationEvaluator, Seq2SeqEvaluator, TaggingEvaluator

    t, task = config.training, config.data.task
    if task == "tagging":
        return TaggingEvaluator(examples, names, config.data.tag_scheme, t.eval_batch_size, max_chars)
    if task == "classification":
        return ClassificationEvaluator(examples, names, t.eval_batch_size)
    if task == "seq2seq":
        d = config.decode
        return Seq2SeqEvaluator(examples, names, t.eval_batch_size, d.beam_size if beam_size is None else beam_size,
                                d.max_length, d.length_penalty, text_metrics=config.data.dataset != "cmudict",
                                target_level=target_level)
    raise ValueError(f"no example evaluator for task {task!r}")


def build_sequence_model(config: RunConfig, vocab_size: int, num_labels: int, char_vocab_size: int = 0):
    """The tagger or classifier of ``config.model`` (built)."""
    m = config.model
    common = dict(vocab_size=vocab_size, cell=m.cell, num_layers=m.num_layers, embedding_dim=m.embedding_dim,
                  hidden_dim=m.hidden_dim, dropout=m.dropout, recurrent_dropout=m.recurrent_dropout,
                  activation=m.activation, seed=config.training.seed)
    if m.type == "tagger":
        from keras_models.models.tagger import RNNTagger

        model = RNNTagger(num_tags=num_labels, char_vocab_size=char_vocab_size, char_embedding_dim=m.char_embedding_dim,
                          char_hidden_dim=m.char_hidden_dim, use_crf=m.use_crf, **common)
        model.build({"ids": (None, None), "chars": (None, None, None)} if char_vocab_size else (None, None))
    elif m.type == "classifier":
        from keras_models.models.classifier import RNNClassifier

        model = RNNClassifier(num_classes=num_labels, bidirectional=m.bidirectional, pooling=m.pooling,
                              mlp_dims=list(m.mlp_dims), **common)
        model.build((None, None))
    else:
        raise ValueError(f"model.type {m.type!r} is not a sequence model")
    return model


def _sample_text(vocab, examples, level: str) -> str:
    """The first test example without unknown tokens (else the first, unknowns left out), as text."""
    from preprocessing.tokenizers import detokenize
    from preprocessing.vocab import UNK_ID

    ids = next((x for x in examples.ids[:200] if UNK_ID not in x), examples.ids[0])
    tokens = vocab.decode(int(i) for i in ids if i != UNK_ID)
    return detokenize(tokens, level)


def train_sequence_model(config: RunConfig, data_dir: Path, *, strategy, tracker, work: "RunPaths",
                         register: bool) -> RunResult:
    """Tagger or classifier: trains, scores valid and test, exports (raw strings in), plots, registers."""
    import keras
    import tensorflow as tf

    from keras_models.export import SequenceTaggerExport, TextClassifierExport, TextToIds
    from keras_models.training import ClassificationTask, ExampleData, TaggingTask
    from pipelines import plots
    from preprocessing.manifest import check_compatible, load_manifest
    from preprocessing.vocab import LabelSet, Vocabulary

    t, m, task = config.training, config.model, config.data.task
    manifest = load_manifest(data_dir)
    vocab = Vocabulary.load(manifest.file("vocab"))
    check_compatible(manifest, task=task, vocabulary=vocab.tokens)
    labels = LabelSet.load(manifest.file("labels"))
    with_chars = task == "tagging" and manifest.has_file("chars")
    char_vocab = Vocabulary.load(manifest.file("chars")) if with_chars else None
    for key in ("vocab", "labels", "chars"):
        if manifest.has_file(key):
            tracker.log_artifact(manifest.file(key), "data/vocab")
    tracker.log_artifact(data_dir / "manifest.json", "data")

    examples = _load_splits(data_dir, with_chars)
    tracker.log_params({"data.fingerprint": manifest.fingerprint, "data.train_examples": len(examples["train"]),
                        "data.vocab_size": len(vocab), "data.num_labels": len(labels), "run.key": work.key,
                        "run.replicas": strategy.num_replicas_in_sync})

    keras.utils.set_random_seed(t.seed)
    max_chars = m.max_chars_per_token if m.type == "tagger" else None  # the tagger's character encoder
    evaluators = {split: make_evaluator(config, examples[split], labels.labels, max_chars=max_chars)
                  for split in ("valid", "test")}
    trainer = _trainer(
        config, strategy, tracker, work,
        build_model=lambda: build_sequence_model(config, len(vocab), len(labels), len(char_vocab) if char_vocab else 0),
        task=TaggingTask() if task == "tagging" else ClassificationTask(),
        data=ExampleData(examples["train"], t.batch_size, seed=t.seed, max_steps=t.max_steps_per_epoch,
                         max_length=t.max_length, max_chars=max_chars),
        evaluate=evaluators["valid"],
        default_monitor="accuracy",
    )
    result = trainer.fit()
    model = trainer.model

    metrics: dict[str, float] = {}
    reports = {}
    for split, ev in evaluators.items():
        prefix = metric_prefix(split)
        for k, v in ev(model).items():
            metrics[f"{prefix}_{k}"] = v
        reports[split] = ev.last_report
    _log_final_metrics(metrics, result, tracker, work)
    if not tracker.enabled:  # a non-chief worker: the chief exports, plots, logs and registers
        return RunResult(run_key=work.key, output_key=work.output_key, data_dir=str(data_dir), mlflow_run_id=None, metrics=metrics, sample="",
                         model_path="", resumed_from_step=result.resumed_from_step)

    text_to_ids = TextToIds(manifest.tokenizer, vocab.tokens, append_eos=False)
    if task == "tagging":
        export = SequenceTaggerExport(text_to_ids, model, labels.labels, char_vocab.tokens if char_vocab else None,
                                      m.max_chars_per_token)
    else:
        export = TextClassifierExport(text_to_ids, model, labels.labels)
    level = manifest.tokenizer["level"]
    sample_text = _sample_text(vocab, examples["test"], level)
    outputs = export(tf.constant([sample_text]))
    if task == "tagging":
        n = int(outputs["length"][0])
        sample = " ".join(f"{tok.decode()}/{tag.decode()}" for tok, tag in
                          zip(outputs["tokens"][0].numpy()[:n], outputs["tags"][0].numpy()[:n]))
    else:
        sample = f"{outputs['label'][0].numpy().decode()} <- {sample_text[:200]}"
    log.info("sample: %s", sample)
    tracker.log_text(sample, "samples/sample.txt")
    model_dir = work.out / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    model_path = model_dir / ("tagger.keras" if task == "tagging" else "classifier.keras")
    export.save(model_path)

    test_eval = evaluators["test"]
    if task == "classification":
        confusion = test_eval.confusion
    else:
        from sklearn.metrics import confusion_matrix

        gold, pred, _ = test_eval.predict(model)
        flat = [labels.encode(g) for g in gold], [labels.encode(p) for p in pred]
        confusion = confusion_matrix(np.concatenate(flat[0]), np.concatenate(flat[1]), labels=range(len(labels)))
    _log_training(config, result, tracker, work, ("val_accuracy", "val_f1", "val_macro_f1"), f"{m.cell} {m.type}",
                  {"confusion_matrix": plots.confusion_matrix(confusion, labels.labels,
                                                              title=f"{config.name}: test confusion")})
    tracker.log_dict({"valid": reports["valid"], "test": reports["test"],
                      "test_confusion": {"labels": labels.labels, "matrix": np.asarray(confusion).tolist()}},
                     "evaluation.json")

    out = RunResult(run_key=work.key, output_key=work.output_key, data_dir=str(data_dir), mlflow_run_id=tracker.run_id, metrics=metrics,
                    sample=sample, model_path=str(model_path), resumed_from_step=result.resumed_from_step)
    _log_and_register(config, tracker, export, [sample_text], out, register)
    return out


def build_seq2seq_model(config: RunConfig, source_vocab_size: int, target_vocab_size: int):
    from keras_models.models.seq2seq import Seq2SeqModel

    m = config.model
    model = Seq2SeqModel(
        source_vocab_size, target_vocab_size, cell=m.cell, encoder_layers=m.num_layers, decoder_layers=m.decoder_layers,
        embedding_dim=m.embedding_dim, hidden_dim=m.hidden_dim, decoder_dim=m.decoder_dim or 2 * m.hidden_dim, attention=m.attention,
        attention_units=m.attention_units, input_feeding=m.input_feeding, dropout=m.dropout,
        recurrent_dropout=m.recurrent_dropout, activation=m.activation, sampling_probability=m.sampling_probability,
        seed=config.training.seed,
    )
    model.build()
    return model


def _attention_figure(model, evaluator, sources: list[tuple], source_vocab, title: str):
    """Heatmaps of the attention the model paid while producing its own (greedy) output."""
    import tensorflow as tf

    from pipelines import plots
    from preprocessing.vocab import BOS_ID

    outputs = evaluator.decode(model, sources)
    maps = []
    for source, output in zip(sources, outputs):
        ids = [evaluator.target_vocab.index(t) for t in output]
        target_in = tf.constant([[BOS_ID] + ids], tf.int32)
        weights = model.attention_maps(tf.constant([list(source)], tf.int32), target_in).numpy()[0]
        maps.append((weights, source_vocab.decode(source), output + ["<eos>"]))
    return plots.attention_maps(maps, title=title)


def train_seq2seq_model(config: RunConfig, data_dir: Path, *, strategy, tracker, work: "RunPaths",
                        register: bool) -> RunResult:
    """Encoder-decoder: trains (teacher forcing), scores valid / test with greedy and beam search,
    logs attention maps every epoch, exports (raw strings in and out), registers."""
    import keras
    import tensorflow as tf

    from keras_models.export import Seq2SeqExport, TextToIds
    from keras_models.training import ExampleData, Seq2SeqTask
    from preprocessing.manifest import check_compatible, load_manifest
    from preprocessing.tokenizers import detokenize
    from preprocessing.vocab import Vocabulary

    t, d = config.training, config.decode
    manifest = load_manifest(data_dir)
    source_vocab = Vocabulary.load(manifest.file("vocab"))
    target_vocab = Vocabulary.load(manifest.file("target_vocab"))
    check_compatible(manifest, task="seq2seq", vocabulary=source_vocab.tokens)
    for key in ("vocab", "target_vocab"):
        tracker.log_artifact(manifest.file(key), "data/vocab")
    tracker.log_artifact(data_dir / "manifest.json", "data")
    examples = _load_splits(data_dir)
    tracker.log_params({"data.fingerprint": manifest.fingerprint, "data.train_examples": len(examples["train"]),
                        "data.source_vocab_size": len(source_vocab), "data.target_vocab_size": len(target_vocab),
                        "run.key": work.key, "run.replicas": strategy.num_replicas_in_sync})
    keras.utils.set_random_seed(t.seed)
    target_level = manifest.target_tokenizer["level"]

    def evaluator(split, beam_size):
        return make_evaluator(config, examples[split], target_vocab.tokens, target_level=target_level,
                              beam_size=beam_size)

    val_greedy = evaluator("valid", 1)
    samples = val_greedy.sources[: d.attention_samples]

    def validate(model):
        scores = val_greedy(model)
        if samples and tracker.enabled:
            epoch = int(trainer.counters.epoch.numpy()) + 1  # the epoch being validated
            fig = _attention_figure(model, val_greedy, samples, source_vocab, f"{config.name}: epoch {epoch}")
            tracker.log_figure(fig, f"plots/attention/epoch_{epoch:03d}.png")
        return scores

    trainer = _trainer(
        config, strategy, tracker, work,
        build_model=lambda: build_seq2seq_model(config, len(source_vocab), len(target_vocab)),
        task=Seq2SeqTask(),
        data=ExampleData(examples["train"], t.batch_size, seed=t.seed, max_steps=t.max_steps_per_epoch,
                         max_length=t.max_length),
        evaluate=validate,
        default_monitor="wer",
    )
    result = trainer.fit()
    model = trainer.model

    metrics: dict[str, float] = {}
    for split in ("valid", "test"):
        prefix = metric_prefix(split)
        searches = {"greedy": val_greedy if split == "valid" else evaluator(split, 1)}
        if d.beam_size > 1:
            searches[f"beam{d.beam_size}"] = evaluator(split, d.beam_size)
        for name, ev in searches.items():
            for k, v in ev(model).items():
                if name == "greedy":
                    metrics[f"{prefix}_{k}"] = v
                elif k not in ("loss", "perplexity", "sources"):
                    metrics[f"{prefix}_{name}_{k}"] = v
    _log_final_metrics(metrics, result, tracker, work)
    if not tracker.enabled:  # a non-chief worker: the chief exports, plots, logs and registers
        return RunResult(run_key=work.key, output_key=work.output_key, data_dir=str(data_dir), mlflow_run_id=None, metrics=metrics, sample="",
                         model_path="", resumed_from_step=result.resumed_from_step)

    export = Seq2SeqExport(TextToIds(manifest.tokenizer, source_vocab.tokens, append_eos=False), model,
                           target_vocab.tokens, d.beam_size, d.max_length, d.length_penalty, target_level)
    sample_text = detokenize(source_vocab.decode(val_greedy.sources[0]), manifest.tokenizer["level"])
    sample = f"{sample_text} -> {export(tf.constant([sample_text]))['output'][0].numpy().decode()}"
    log.info("sample: %s", sample)
    tracker.log_text(sample, "samples/sample.txt")
    model_dir = work.out / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    model_path = model_dir / "seq2seq.keras"
    export.save(model_path)

    extra = {}
    if samples:
        extra["attention_final"] = _attention_figure(model, val_greedy, samples, source_vocab,
                                                     f"{config.name}: final model")
    _log_training(config, result, tracker, work, ("val_wer", "val_per"),
                  f"{config.model.cell} encoder-decoder, {config.model.attention} attention", extra)

    out = RunResult(run_key=work.key, output_key=work.output_key, data_dir=str(data_dir), mlflow_run_id=tracker.run_id, metrics=metrics,
                    sample=sample, model_path=str(model_path), resumed_from_step=result.resumed_from_step)
    _log_and_register(config, tracker, export, [sample_text], out, register)
    return out


def _run_exists(tracking_uri: str, run_id: str | None) -> bool:
    """Whether ``run_id`` is a run of the store (a finished output is reused only where it was recorded)."""
    if not run_id:
        return False
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from pipelines import tracking

    tracking.configure(tracking_uri)
    try:
        MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri).get_run(run_id)
    except MlflowException:
        return False
    return True


def execute(config: RunConfig, *, beam_args: list[str] | None = None, register: bool = True,
            force: bool = False) -> RunResult:
    """``rnnflow run`` (``register=True``) and ``rnnflow train`` (``register=False``).

    Reuse (see the module docstring): a finished training (same training key) is never trained
    again; its outputs (evaluation, export, sample) are reused when the output key and the store
    are the same, else made again from the trained weights in a new MLflow run. ``run`` then
    registers the model unless the registered model already has a version from that MLflow run.
    """
    from keras_models.strategies import is_chief, make_strategy, task_info
    from pipelines.prepare import prepare
    from pipelines.tracking import Tracker
    from preprocessing.manifest import load_manifest

    strategy = make_strategy(config.training.strategy, config.training.devices)  # first: multi-worker needs it
    chief = is_chief(strategy)
    task_type, task_id = task_info(strategy)
    work_dir = config.resolved_work_dir
    lock_name = ".lock" if chief else f".lock.{task_type}-{task_id}"
    with RunLock(work_dir, lock_name):
        data_dir = prepare(config.data, beam_args=beam_args)
        manifest = load_manifest(data_dir)
        train_dir = work_dir / run_key(config, manifest.fingerprint)
        okey = output_key(config)
        train_dir.mkdir(parents=True, exist_ok=True)
        state_path = train_dir / "state.json"
        state = read_state(state_path)
        if force and state:
            import shutil

            shutil.rmtree(train_dir / "checkpoints", ignore_errors=True)
            shutil.rmtree(train_dir / "outputs", ignore_errors=True)
            state = {}
        tracking_uri = config.resolved_tracking_uri()
        trained = state.get("status") == "done"
        outputs = state.setdefault("outputs", {})
        done = outputs.get(okey, {})
        if (trained and done.get("status") == "done" and done.get("tracking_uri") == tracking_uri
                and _run_exists(tracking_uri, done.get("mlflow_run_id"))):
            log.info("run %s/%s already finished (MLflow run %s); reusing it. Use --force to train again.",
                     train_dir.name, okey, done["mlflow_run_id"])
            result = RunResult(**{**done["result"], "reused": True, "registered_version": None, "promotion": None})
            if register and chief:
                register_result(config, result)
            return result

        # Resume the MLflow run this output was being made in (killed), else the training's run if the
        # training is not finished, else start a new run over the trained weights.
        resume = done.get("mlflow_run_id") if done.get("tracking_uri") == tracking_uri else None
        if resume is None and not trained and state.get("tracking_uri", tracking_uri) == tracking_uri:
            resume = state.get("mlflow_run_id")
        if resume is not None and not _run_exists(tracking_uri, resume):
            resume = None
        tags = {"rnnflow.config": config.name, "rnnflow.run_key": train_dir.name, "rnnflow.output_key": okey}
        if trained and resume != state.get("mlflow_run_id"):
            tags["rnnflow.trained_by_run"] = state.get("mlflow_run_id") or "unknown"
        replay = trained and resume is None  # a new run over trained weights gets the training history
        tracker = Tracker(tracking_uri, config.tracking.experiment, run_name=config.name, tags=tags, enabled=chief,
                          run_id=resume)
        work = RunPaths(train_dir, okey, replay=replay and chief)
        with tracker:
            if chief:
                outputs[okey] = {"status": "running", "mlflow_run_id": tracker.run_id, "tracking_uri": tracking_uri}
                if not trained:
                    state.update(status="training", mlflow_run_id=tracker.run_id, tracking_uri=tracking_uri)
                write_state(state_path, state)
                tracker.log_config(config.model_dump(mode="json"))
                tracker.log_text(dump_config(config), "config.resolved.yaml")
            train = {"lm": train_language_model, "seq2seq": train_seq2seq_model}.get(config.data.task,
                                                                                     train_sequence_model)
            result = train(config, Path(data_dir), strategy=strategy, tracker=tracker, work=work,
                           register=register and chief)
        if chief:
            state["status"] = "done"
            stored = asdict(result)  # the registration in it is re-checked on reuse (register_result)
            for other in [k for k, v in outputs.items() if v.get("status") != "done"
                          and v.get("mlflow_run_id") == tracker.run_id]:
                del outputs[other]  # outputs begun in this run by a killed attempt with other settings
            outputs[okey] = {"status": "done", "mlflow_run_id": tracker.run_id, "tracking_uri": tracking_uri,
                             "result": stored}
            write_state(state_path, state)
        return result


def summary(result: RunResult) -> str:
    lines = [f"run {result.run_key}/{result.output_key}" + (" (already finished; reused)" if result.reused else "")]
    for k, v in result.metrics.items():
        lines.append(f"  {k}: {v:.4f}" if isinstance(v, float) and not math.isnan(v) else f"  {k}: {v}")
    lines.append(f"  model: {result.model_path}")
    if result.mlflow_run_id:
        lines.append(f"  MLflow run: {result.mlflow_run_id}")
    if result.registered_version:
        promo = result.promotion or {}
        name = promo.get("model_name", "")
        what = "registered earlier from this run:" if result.registered_before else "registered"
        lines.append(f"  {what} version {result.registered_version} of {name}: {promo.get('reason', '')}")
    lines.append(f"  sample: {result.sample}")
    return "\n".join(lines)
