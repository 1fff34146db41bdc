"""Sequence tagging: one tag per token (POS, or BIO / BIOES spans scored by span F1).

Records: tokens with tags (``conllu``, ``columns``, ``slash`` readers); the tag set is the training
split's, and valid/test tags unseen in training are kept (scored as wrong, see
:mod:`pipelines.beam.encode`). With ``data.char_features`` every token's character ids are written
too. Model: :class:`~keras_models.models.tagger.RNNTagger` (bidirectional layers, optional character
encoder and CRF); export: :class:`~keras_models.export.SequenceTaggerExport`; CLI verb: ``rnnflow tag``.
"""

from __future__ import annotations

import json

from pipelines.beam.names import TAGS_FILE, UNKNOWN_TAG
from pipelines.tasks.base import TAGS, TEXT, common_model_args
from pipelines.tasks.labelled import LabelledTask, unseen_kwargs


class TaggingTask(LabelledTask):
    name = "tagging"
    model_type = "tagger"
    metric, greater_is_better = "val_accuracy", True
    reads = frozenset({TEXT, TAGS})
    model_file = "tagger.keras"
    field, per_token, what, labels_file, reject_reason = "tags", True, "tags", TAGS_FILE, UNKNOWN_TAG
    data_options = frozenset({"char_features", "tag_scheme"})

    # ------------------------------------------------------------------------------ prepare
    def features(self, data):
        from preprocessing.schema import SEQUENCE

        spec = super().features(data)
        if data.char_features:
            spec.update(chars=SEQUENCE, char_lengths=SEQUENCE)
        return spec

    def extra_encodings(self, data, tokenized, out_dir):
        if not data.char_features:
            return None, {}
        from pipelines.beam.names import CHARS_FILE
        from pipelines.beam.vocabulary import BuildVocabulary, CountCharacters, WriteVocabulary

        chars = (tokenized | "CountTrainCharacters" >> CountCharacters("train")
                 | "BuildCharVocabulary" >> BuildVocabulary(None, 1))
        return chars, {"chars": chars | "WriteChars" >> WriteVocabulary(out_dir, CHARS_FILE)}

    # --------------------------------------------------------------------------------- run
    def with_chars(self, config, manifest):
        return manifest.has_file("chars")

    def max_chars(self, config):
        return config.model.max_chars_per_token  # the character encoder's characters per token

    def make_evaluator(self, config, examples, names, unseen=(), max_chars=None):
        from keras_models.evaluation import TaggingEvaluator

        max_chars = self.max_chars(config) if max_chars is None else max_chars
        return TaggingEvaluator(examples, names, config.data.tag_scheme, config.training.eval_batch_size, max_chars,
                                **unseen_kwargs(unseen))

    def build_model(self, config, data):
        from keras_models.models.tagger import RNNTagger

        m = config.model
        chars = len(data.char_vocab) if data.char_vocab else 0
        model = RNNTagger(vocab_size=len(data.vocab), num_tags=len(data.labels), char_vocab_size=chars,
                          char_embedding_dim=m.char_embedding_dim, char_hidden_dim=m.char_hidden_dim, use_crf=m.use_crf,
                          **common_model_args(config))
        model.build({"ids": (None, None), "chars": (None, None, None)} if chars else (None, None))
        return model

    def training_task(self, config):
        from keras_models.training import TaggingTask as TrainingTask

        return TrainingTask()

    def export(self, config, data, model):
        from keras_models.export import SequenceTaggerExport

        return SequenceTaggerExport(self.text_to_ids(data), model, data.labels.labels,
                                    data.char_vocab.tokens if data.char_vocab else None,
                                    config.model.max_chars_per_token)

    def sample(self, config, data, export):
        import tensorflow as tf

        text = self.sample_input(data)
        outputs = export(tf.constant([text]))
        n = int(outputs["length"][0])
        return text, " ".join(f"{tok.decode()}/{tag.decode()}" for tok, tag in
                              zip(outputs["tokens"][0].numpy()[:n], outputs["tags"][0].numpy()[:n]))

    # --------------------------------------------------------------------------------- CLI
    def owns(self, model):
        from keras_models.export import SequenceTaggerExport

        return isinstance(model, SequenceTaggerExport)

    def model_label_names(self, model):
        return model.tag_names

    def model_uses_chars(self, model):
        return bool(model.char_vocabulary)

    def model_evaluator_args(self, model):
        return {"max_chars": model.max_chars}

    def wrapped_model(self, model):
        return model.tagger

    def add_commands(self, subparsers):
        p = self.add_text_verb(subparsers, "tag", "tag the tokens of raw sentences with a trained tagger")
        p.add_argument("--format", choices=["text", "conll", "json"], default="text",
                       help="text: token/TAG pairs per line; conll: token<TAB>tag lines, blank line between "
                       "sentences; json: one object per line")
        p.set_defaults(handler=self.tag_command)

    def tag_command(self, args) -> int:
        import tensorflow as tf

        from pipelines.cli import batches, load_task_model, read_texts

        model = load_task_model(args, self)
        for batch in batches(read_texts(args), args.batch_size):
            out = model(tf.constant(batch))
            for row in range(len(batch)):
                n = int(out["length"][row])
                tokens = [t.decode("utf-8") for t in out["tokens"][row].numpy()[:n]]
                tags = [t.decode("utf-8") for t in out["tags"][row].numpy()[:n]]
                if args.format == "json":
                    print(json.dumps({"tokens": tokens, "tags": tags}, ensure_ascii=False))
                elif args.format == "conll":
                    print("\n".join(f"{a}\t{b}" for a, b in zip(tokens, tags)) + "\n")
                else:
                    print(" ".join(f"{a}/{b}" for a, b in zip(tokens, tags)))
        return 0


from pipelines.tasks import register  # noqa: E402

register(TaggingTask())
