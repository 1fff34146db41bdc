"""Sequence-to-sequence: an attentional encoder-decoder (G2P, transliteration, short translation).

Records: source/target pairs (``pairs``, ``cmudict``, ``csv`` with ``reader.source_field`` /
``reader.target_field``); the target side has its own tokenizer and vocabulary (``data.target``).
Training is teacher-forced; validation decodes greedily up to ``decode.max_length`` (so that setting
is part of the training key) and logs attention maps; the final scores add beam search. Export:
:class:`~keras_models.export.Seq2SeqExport` (raw strings in and out); CLI verb: ``rnnflow translate``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pipelines.tasks.base import TARGET, TEXT, Encoded, Task, TaskData, load_example_splits, metric_prefix


@dataclass
class Seq2SeqData(TaskData):
    source_vocab: Any = None
    target_vocab: Any = None
    target_level: str = "word"
    examples: dict | None = None
    val_greedy: Any = None
    samples: list | None = None


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


class Seq2SeqTask(Task):
    name = "seq2seq"
    model_type = "seq2seq"
    metric, greater_is_better = "val_wer", False
    reads = frozenset({TEXT, TARGET})
    model_file = "seq2seq.keras"
    curve_keys = ("val_wer", "val_per")
    training_decode_fields = ("max_length",)

    # ------------------------------------------------------------------------------ prepare
    def features(self, data):
        from preprocessing.schema import SEQUENCE

        return {"source_ids": SEQUENCE, "target_ids": SEQUENCE}

    def target_tokenizer(self, data):
        from pipelines.prepare import tokenizer_config

        return tokenizer_config(data.target)  # the target side's own settings, read like the source's

    def encode(self, data, tokenized, vocab, out_dir):
        from pipelines.beam.encode import EncodePairs
        from pipelines.beam.names import TARGET_VOCAB_FILE
        from pipelines.beam.vocabulary import BuildVocabulary, CountTokens, WriteVocabulary

        target_vocab = (
            tokenized
            | "CountTrainTargetTokens" >> CountTokens("train", field="target_tokens")
            | "BuildTargetVocabulary" >> BuildVocabulary(data.target.max_vocab_size, data.target.min_count)
        )
        files = {"target_vocab": target_vocab | "WriteTargetVocabulary" >> WriteVocabulary(out_dir, TARGET_VOCAB_FILE)}
        return Encoded(records=tokenized | "Encode" >> EncodePairs(vocab, target_vocab), files=files)

    # --------------------------------------------------------------------------------- run
    def load(self, config, data_dir, manifest):
        from preprocessing.manifest import check_compatible
        from preprocessing.vocab import Vocabulary

        source_vocab = Vocabulary.load(manifest.file("vocab"))
        target_vocab = Vocabulary.load(manifest.file("target_vocab"))
        check_compatible(manifest, task=self.name, vocabulary=source_vocab.tokens)
        examples = load_example_splits(data_dir, manifest=manifest)
        return Seq2SeqData(
            data_dir=data_dir, manifest=manifest, source_vocab=source_vocab, target_vocab=target_vocab,
            target_level=manifest.target_tokenizer["level"], examples=examples,
            artifacts=[(manifest.file(k), "data/vocab") for k in ("vocab", "target_vocab")],
            params={"data.train_examples": len(examples["train"]), "data.source_vocab_size": len(source_vocab),
                    "data.target_vocab_size": len(target_vocab)},
        )

    def make_evaluator(self, config, examples, target_vocab, *, target_level: str, beam_size: int | None = None):
        from keras_models.evaluation import Seq2SeqEvaluator

        d = config.decode
        return Seq2SeqEvaluator(examples, target_vocab, config.training.eval_batch_size,
                                d.beam_size if beam_size is None else beam_size, d.max_length, d.length_penalty,
                                text_metrics=config.data.dataset != "cmudict", target_level=target_level)

    def _evaluator(self, config, data, split, beam_size):
        return self.make_evaluator(config, data.examples[split], data.target_vocab.tokens,
                                   target_level=data.target_level, beam_size=beam_size)

    def build_model(self, config, data):
        from keras_models.models.seq2seq import Seq2SeqModel

        m = config.model
        model = Seq2SeqModel(
            len(data.source_vocab), len(data.target_vocab), cell=m.cell, encoder_layers=m.num_layers,
            decoder_layers=m.decoder_layers, embedding_dim=m.embedding_dim, hidden_dim=m.hidden_dim,
            decoder_dim=m.decoder_dim or 2 * m.hidden_dim, attention=m.attention, attention_units=m.attention_units,
            input_feeding=m.input_feeding, dropout=m.dropout, recurrent_dropout=m.recurrent_dropout,
            activation=m.activation, sampling_probability=m.sampling_probability, seed=config.training.seed,
        )
        model.build()
        return model

    def training_task(self, config):
        from keras_models.training import Seq2SeqTask as TrainingTask

        return TrainingTask()

    def train_data(self, config, data):
        from keras_models.training import ExampleData

        t = config.training
        return ExampleData(data.examples["train"], t.batch_size, seed=t.seed, max_steps=t.max_steps_per_epoch,
                           shuffle_buffer=t.shuffle_buffer, max_length=t.max_length)

    def validator(self, config, data, tracker, epoch):
        data.val_greedy = self._evaluator(config, data, "valid", 1)
        data.samples = data.val_greedy.sample_sources(config.decode.attention_samples)  # the first ones

        def validate(model):
            scores = data.val_greedy(model)
            if data.samples and tracker.enabled:
                e = epoch()
                fig = _attention_figure(model, data.val_greedy, data.samples, data.source_vocab,
                                        f"{config.name}: epoch {e}")
                tracker.log_figure(fig, f"plots/attention/epoch_{e:03d}.png")
            return scores

        return validate

    def evaluate(self, config, data, model):
        d = config.decode
        metrics: dict[str, float] = {}
        items = {}
        tokens = data.source_vocab.tokens
        for split in ("valid", "test"):
            prefix = metric_prefix(split)
            greedy = data.val_greedy if split == "valid" and data.val_greedy is not None else None
            searches = {"greedy": greedy or self._evaluator(config, data, split, 1)}
            if d.beam_size > 1:
                searches[f"beam{d.beam_size}"] = self._evaluator(config, data, split, d.beam_size)
            for name, ev in searches.items():
                scores, found = ev.score_items(model, tokens)  # per source, for paired comparisons
                # one ItemStats per split: the greedy search's statistics as wer, per, ...; a beam's as beamN_wer, ...
                found = found if name == "greedy" else found.with_prefix(name)
                items[split] = found if split not in items else items[split].merged(found)
                for k, v in scores.items():
                    if name == "greedy":
                        metrics[f"{prefix}_{k}"] = v
                    elif k not in ("loss", "perplexity", "sources"):
                        metrics[f"{prefix}_{name}_{k}"] = v
        data.items, data.items_model = items, model
        return metrics

    def export(self, config, data, model):
        from keras_models.export import Seq2SeqExport, TextToIds

        d = config.decode
        return Seq2SeqExport(TextToIds(data.manifest.tokenizer, data.source_vocab.tokens, append_eos=False), model,
                             data.target_vocab.tokens, d.beam_size, d.max_length, d.length_penalty, data.target_level)

    def sample(self, config, data, export):
        import tensorflow as tf

        from preprocessing.tokenizers import detokenize

        text = detokenize(data.source_vocab.decode(data.val_greedy.sample_sources(1)[0]),
                          data.manifest.tokenizer["level"])
        return text, f"{text} -> {export(tf.constant([text]))['output'][0].numpy().decode()}"

    def title(self, config):
        return f"{config.model.cell} encoder-decoder, {config.model.attention} attention"

    def figures(self, config, data, model):
        if not data.samples:
            return {}
        return {"attention_final": _attention_figure(model, data.val_greedy, data.samples, data.source_vocab,
                                                     f"{config.name}: final model")}

    # --------------------------------------------------------------------------------- CLI
    def owns(self, model):
        from keras_models.export import Seq2SeqExport

        return isinstance(model, Seq2SeqExport)

    def evaluate_model(self, config, model, data_dir, split):
        from preprocessing.manifest import DataError, check_compatible, load_manifest
        from preprocessing.streams import ExampleStream
        from preprocessing.vocab import Vocabulary

        manifest = load_manifest(data_dir)
        check_compatible(manifest, task=self.name, vocabulary=model.text_to_ids.vocabulary)
        if Vocabulary.load(manifest.file("target_vocab")).tokens != model.target_vocab:
            raise DataError("the data's target vocabulary differs from the model's; evaluate on data prepared "
                            "with the model's config")
        evaluator = self.make_evaluator(config, ExampleStream(data_dir, split, manifest=manifest), model.target_vocab,
                                        target_level=model.target_level)
        return evaluator(model.seq2seq)

    def add_commands(self, subparsers):
        from pipelines.cli import add_model_args

        p = subparsers.add_parser(
            "translate", help="transduce raw texts with a trained encoder-decoder (e.g. word → phonemes)",
            description="Encodes each text once and searches the output one token at a time with the "
            "decoder's state (greedy, or beam search with --beam-size > 1).")
        add_model_args(p)
        p.add_argument("--beam-size", type=int, default=None, help="default: the model's (decode.beam_size)")
        p.add_argument("--nbest", type=int, default=1, help="print the N best hypotheses with their scores")
        p.add_argument("--format", choices=["text", "json"], default="text",
                       help="text: the output (n-best: output<TAB>score lines, blank line between inputs); json")
        p.set_defaults(handler=self.translate_command)

    def translate_command(self, args) -> int:
        import tensorflow as tf

        from pipelines.cli import batches, load_task_model, read_texts
        from preprocessing.tokenizers import detokenize
        from preprocessing.vocab import EOS_ID, PAD_ID

        model = load_task_model(args, self)
        beam = args.beam_size or model.beam_size
        if args.nbest > beam:
            raise ValueError(f"--nbest {args.nbest} needs --beam-size of at least {args.nbest}")
        names = model.target_vocab
        for batch in batches(read_texts(args), args.batch_size):
            tokens, scores = model.search(tf.constant(batch), beam_size=beam)
            tokens, scores = tokens.numpy(), scores.numpy()
            for row, text in enumerate(batch):
                hyps = []
                for k in range(args.nbest):
                    out = []
                    for i in tokens[row, k]:
                        if int(i) in (PAD_ID, EOS_ID):
                            break
                        out.append(names[int(i)])
                    hyps.append((detokenize(out, model.target_level), float(scores[row, k])))
                if args.format == "json":
                    print(json.dumps({"text": text, "outputs": [{"output": o, "score": round(sc, 6)} for o, sc in hyps]},
                                     ensure_ascii=False))
                elif args.nbest == 1:
                    print(hyps[0][0])
                else:
                    print("\n".join(f"{o}\t{sc:.4f}" for o, sc in hyps) + "\n")
        return 0


from pipelines.tasks import register  # noqa: E402

register(Seq2SeqTask())
