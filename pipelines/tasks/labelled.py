"""What the tasks that predict labels from a closed set share (tagging: one per token;
classification: one per text): the label set built from the training split, valid/test labels
unseen in training kept with ids the model cannot predict, example batches, evaluators reporting
``accuracy``, confusion matrices and ``evaluation.json``.

A subclass sets :attr:`LabelledTask.field` (the record key and feature of the labels),
:attr:`LabelledTask.per_token`, :attr:`LabelledTask.what` (``tags`` / ``labels``: file names and
messages) and implements the model-specific parts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from pipelines.tasks.base import Encoded, Task, TaskData, load_example_splits, metric_prefix, sample_text

log = logging.getLogger("rnnflow")


@dataclass
class LabelledData(TaskData):
    vocab: Any = None
    labels: Any = None  # the training split's LabelSet
    unseen: list | None = None  # names of valid/test labels unseen in training (ids len(labels) + k)
    char_vocab: Any = None
    examples: dict | None = None
    evaluators: dict | None = None
    reports: dict | None = None
    confusion: Any = None  # (matrix, names) of the test split


def unseen_names(manifest) -> list[str]:
    """The valid/test labels the training split lacks (``vocab/unseen_<what>.txt``), in id order after the label set."""
    from preprocessing.vocab import LabelSet

    if not manifest.has_file("unseen_labels") or not manifest["unseen_labels"]["size"]:
        return []
    return LabelSet.load(manifest.file("unseen_labels")).labels


class LabelledTask(Task):
    field: ClassVar[str]  # record key and feature name of the labels
    per_token: ClassVar[bool]
    what: ClassVar[str]  # "tags" / "labels" (messages)
    labels_file: ClassVar[str]  # the label set's path in the prepared directory (pipelines.beam.names)
    reject_reason: ClassVar[str]  # when the training split is empty
    label_counts = True
    curve_keys = ("val_accuracy", "val_f1", "val_macro_f1")

    # ------------------------------------------------------------------------------ prepare
    def features(self, data):
        from preprocessing.schema import SCALAR, SEQUENCE

        return {"ids": SEQUENCE, self.field: SEQUENCE if self.per_token else SCALAR}

    def extra_encodings(self, data, tokenized, out_dir) -> tuple[Any, dict]:
        """``(chars side input or None, files)`` for features beyond ids and labels (tagging: characters)."""
        return None, {}

    def encode(self, data, tokenized, vocab, out_dir):
        from pipelines.beam.encode import EncodeLabelled, UnseenLabels
        from pipelines.beam.vocabulary import BuildLabelSet, CountLabels, WriteVocabulary

        labels = (tokenized | "CountTrainLabels" >> CountLabels("train")
                  | "BuildLabelSet" >> BuildLabelSet(self.what))
        unseen = (tokenized | "CountAllLabels" >> CountLabels(None)
                  | "UnseenLabels" >> UnseenLabels(labels))
        folder, name = self.labels_file.rsplit("/", 1)
        files = {"labels": labels | "WriteLabels" >> WriteVocabulary(out_dir, self.labels_file),
                 "unseen_labels": unseen | "WriteUnseen" >> WriteVocabulary(out_dir, f"{folder}/unseen_{name}")}
        chars, more = self.extra_encodings(data, tokenized, out_dir)
        files.update(more)
        out = tokenized | "Encode" >> EncodeLabelled(self.field, self.per_token, self.reject_reason, vocab, labels,
                                                     unseen, chars)
        return Encoded(records=out.accepted, rejected=[out.rejected], files=files)

    # --------------------------------------------------------------------------------- run
    def with_chars(self, config, manifest) -> bool:
        return False

    def load(self, config, data_dir, manifest):
        from preprocessing.manifest import check_compatible
        from preprocessing.vocab import LabelSet, Vocabulary

        vocab = Vocabulary.load(manifest.file("vocab"))
        check_compatible(manifest, task=self.name, vocabulary=vocab.tokens)
        labels = LabelSet.load(manifest.file("labels"))
        with_chars = self.with_chars(config, manifest)
        char_vocab = Vocabulary.load(manifest.file("chars")) if with_chars else None
        examples = load_example_splits(data_dir, with_chars, manifest)
        unseen = unseen_names(manifest)
        for split in ("valid", "test"):
            counts = (manifest["splits"][split].get("unseen") or {})
            if counts.get("examples"):
                log.warning("%s: %d %s item(s) hold %s unseen in training (%s); they are kept and scored as wrong",
                            data_dir, counts["examples"], split, self.what, ", ".join(sorted(counts["labels"])[:10]))
        artifacts = [(manifest.file(k), "data/vocab") for k in ("vocab", "labels", "chars") if manifest.has_file(k)]
        if unseen:
            artifacts.append((manifest.file("unseen_labels"), "data/vocab"))
        return LabelledData(
            data_dir=data_dir, manifest=manifest, vocab=vocab, labels=labels, unseen=unseen, char_vocab=char_vocab,
            examples=examples, artifacts=artifacts,
            params={"data.train_examples": len(examples["train"]), "data.vocab_size": len(vocab),
                    "data.num_labels": len(labels)},
        )

    def max_chars(self, config) -> int | None:
        return None

    def make_evaluator(self, config, examples, names: list[str], unseen: list[str] = (), **kwargs):
        raise NotImplementedError

    def train_data(self, config, data):
        from keras_models.training import ExampleData

        t = config.training
        return ExampleData(data.examples["train"], t.batch_size, seed=t.seed, max_steps=t.max_steps_per_epoch,
                           shuffle_buffer=t.shuffle_buffer, max_length=t.max_length, max_chars=self.max_chars(config))

    def validator(self, config, data, tracker, epoch):
        data.evaluators = {split: self.make_evaluator(config, data.examples[split], data.labels.labels, data.unseen)
                           for split in ("valid", "test")}
        return data.evaluators["valid"]

    def evaluate(self, config, data, model):
        metrics: dict[str, float] = {}
        data.reports, items = {}, {}
        tokens = data.vocab.tokens
        for split, ev in data.evaluators.items():
            prefix = metric_prefix(split)
            scores, items[split] = ev.score_items(model, tokens)  # per item, for paired comparisons
            for k, v in scores.items():
                metrics[f"{prefix}_{k}"] = v
            data.reports[split] = ev.last_report
        data.items, data.items_model = items, model
        return metrics

    def text_to_ids(self, data):
        from keras_models.export import TextToIds

        return TextToIds(data.manifest.tokenizer, data.vocab.tokens, append_eos=False)

    def sample_input(self, data) -> str:
        return sample_text(data.vocab, data.examples["test"], data.manifest.tokenizer["level"])

    def confusion(self, data, model):
        """``(matrix, row/column names)`` of the test split: the test evaluator's matrix, summed while
        it scored ``model`` (scored again only if it last scored another model)."""
        ev = data.evaluators["test"]
        if ev.confusion is None or ev.scored_model is not model:
            ev(model)
        return ev.confusion, list(ev.confusion_labels)

    def figures(self, config, data, model):
        from pipelines import plots

        matrix, names = self.confusion(data, model)
        data.confusion = (np.asarray(matrix), names)
        return {"confusion_matrix": plots.confusion_matrix(matrix, names, title=f"{config.name}: test confusion")}

    def log_reports(self, config, data, tracker):
        matrix, names = data.confusion
        tracker.log_dict({"valid": data.reports["valid"], "test": data.reports["test"],
                          "test_confusion": {"labels": names, "matrix": matrix.tolist()}}, "evaluation.json")

    # --------------------------------------------------------------------------------- CLI
    def add_text_verb(self, subparsers, verb: str, what: str):
        """A verb over raw texts (arguments or ``--input``) with a model of this task."""
        from pipelines.cli import add_model_args

        p = subparsers.add_parser(verb, help=what, description=f"{what[0].upper()}{what[1:]}. The model tokenizes "
                                  "the text itself (the tokenizer of its training data is inside it).")
        add_model_args(p)
        return p

    def model_label_names(self, model) -> list[str]:
        raise NotImplementedError

    def evaluate_model(self, config, model, data_dir, split):
        from preprocessing.manifest import DataError, check_compatible, load_manifest
        from preprocessing.streams import ExampleStream
        from preprocessing.vocab import LabelSet

        manifest = load_manifest(data_dir)
        check_compatible(manifest, task=self.name, vocabulary=model.text_to_ids.vocabulary)
        names = self.model_label_names(model)
        if LabelSet.load(manifest.file("labels")).labels != names:
            raise DataError(f"the data's {self.what} differ from the model's; evaluate on data prepared "
                            "with the model's config")
        examples = ExampleStream(data_dir, split, with_chars=self.model_uses_chars(model), manifest=manifest)
        evaluator = self.make_evaluator(config, examples, names, unseen_names(manifest),
                                        **self.model_evaluator_args(model))
        return evaluator(self.wrapped_model(model))

    def model_uses_chars(self, model) -> bool:
        return False

    def model_evaluator_args(self, model) -> dict:
        return {}

    def wrapped_model(self, model):
        raise NotImplementedError


def unseen_kwargs(unseen) -> dict:
    """The evaluators' ``unseen_names`` argument, given only where there are unseen labels."""
    return {"unseen_names": list(unseen)} if unseen else {}
