"""Text classification: one label per text (document, sentence, JSON line, CSV row).

Records: texts with labels (``document`` class folders, ``jsonl``, ``tsv``, ``csv``); duplicates are
removed by default and ``data.max_lines`` keeps a fixed hash order (corpora stored class by class keep
every class). Valid/test labels unseen in training are kept and scored as wrong. Model:
:class:`~keras_models.models.classifier.RNNClassifier` (pooled recurrent encoder + MLP); export:
:class:`~keras_models.export.TextClassifierExport`; CLI verb: ``rnnflow classify``.
"""

from __future__ import annotations

import json

from pipelines.beam.names import LABELS_FILE, UNKNOWN_LABEL
from pipelines.tasks.base import LABEL, TEXT, common_model_args
from pipelines.tasks.labelled import LabelledTask, unseen_kwargs


class ClassificationTask(LabelledTask):
    name = "classification"
    model_type = "classifier"
    metric, greater_is_better = "val_accuracy", True
    reads = frozenset({TEXT, LABEL})
    model_file = "classifier.keras"
    dedupe_by_default = True
    max_lines_order = "hash"
    field, per_token, what, labels_file, reject_reason = "label", False, "labels", LABELS_FILE, UNKNOWN_LABEL

    def make_evaluator(self, config, examples, names, unseen=()):
        from keras_models.evaluation import ClassificationEvaluator

        return ClassificationEvaluator(examples, names, config.training.eval_batch_size, **unseen_kwargs(unseen))

    def build_model(self, config, data):
        from keras_models.models.classifier import RNNClassifier

        m = config.model
        model = RNNClassifier(vocab_size=len(data.vocab), num_classes=len(data.labels), bidirectional=m.bidirectional,
                              pooling=m.pooling, mlp_dims=list(m.mlp_dims), **common_model_args(config))
        model.build((None, None))
        return model

    def training_task(self, config):
        from keras_models.training import ClassificationTask as TrainingTask

        return TrainingTask()

    def export(self, config, data, model):
        from keras_models.export import TextClassifierExport

        return TextClassifierExport(self.text_to_ids(data), model, data.labels.labels)

    def sample(self, config, data, export):
        import tensorflow as tf

        text = self.sample_input(data)
        return text, f"{export(tf.constant([text]))['label'][0].numpy().decode()} <- {text[:200]}"

    # --------------------------------------------------------------------------------- CLI
    def owns(self, model):
        from keras_models.export import TextClassifierExport

        return isinstance(model, TextClassifierExport)

    def model_label_names(self, model):
        return model.label_names

    def wrapped_model(self, model):
        return model.classifier

    def add_commands(self, subparsers):
        p = self.add_text_verb(subparsers, "classify", "classify raw texts with a trained classifier")
        p.add_argument("--top-k", type=int, default=1, help="show the k most probable labels")
        p.add_argument("--format", choices=["text", "json"], default="text",
                       help="text: label<TAB>probability per line; json: one object per line")
        p.set_defaults(handler=self.classify_command)

    def classify_command(self, args) -> int:
        import numpy as np
        import tensorflow as tf

        from pipelines.cli import batches, load_task_model, read_texts

        model = load_task_model(args, self)
        k = max(1, min(args.top_k, len(model.label_names)))
        for batch in batches(read_texts(args), args.batch_size):
            probs = model(tf.constant(batch))["probabilities"].numpy()
            for row, text in enumerate(batch):
                best = np.argsort(-probs[row], kind="stable")[:k]
                ranked = [(model.label_names[i], float(probs[row, i])) for i in best]
                if args.format == "json":
                    print(json.dumps({"text": text, "labels": [{"label": a, "probability": round(b, 6)}
                                                               for a, b in ranked]}, ensure_ascii=False))
                else:
                    print("\t".join(f"{a}\t{b:.4f}" for a, b in ranked))
        return 0


from pipelines.tasks import register  # noqa: E402

register(ClassificationTask())
