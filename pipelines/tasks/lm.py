"""Language modelling: one id stream per split, truncated BPTT with carried state, perplexity.

Records: every text becomes its token ids followed by ``<eos>`` (Mikolov's PTB setup); a split is
their concatenation in corpus order. Training lays the stream out as ``batch_size`` parallel rows,
read from the shards as it goes (:class:`preprocessing.streams.TokenStream`: each row reads its own
contiguous segment; nothing holds a split in memory); the export (:class:`~keras_models.export.LanguageModelScorer`)
scores raw sentences; the CLI verb is ``rnnflow generate``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.tasks.base import TEXT, Encoded, Task, TaskData, common_model_args, metric_prefix

log = logging.getLogger("rnnflow")


@dataclass
class LanguageModelData(TaskData):
    vocab: Any = None
    level: str = "word"
    layouts: dict | None = None  # split -> TokenStream (train: batch_size rows; valid/test: eval_batch_size)
    val_eval: Any = None


def build_language_model(config, vocab_size: int):
    from keras_models.models.language_model import RNNLanguageModel

    model = RNNLanguageModel(vocab_size=vocab_size, tie_weights=config.model.tie_weights, **common_model_args(config))
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


def gradient_flow_curves(config, model, layout, steps: int = 60) -> dict[str, np.ndarray]:
    """``||dL_T/dh_t||`` for the trained model and for fresh RNN / LSTM / GRU models of the same shape."""
    import keras

    from keras_models.diagnostics import gradient_flow

    ids, targets = layout.head(4, steps)
    curves = {f"trained {config.model.cell}": gradient_flow(model, ids, targets)}
    for cell in ("rnn", "lstm", "gru"):
        keras.utils.set_random_seed(config.training.seed)
        fresh = build_language_model(config.model_copy(update={"model": config.model.model_copy(update={"cell": cell})}),
                                     model.vocab_size)
        curves[f"fresh {cell}"] = gradient_flow(fresh, ids, targets)
    return curves


class LanguageModelTask(Task):
    name = "lm"
    model_type = "lm"
    metric, greater_is_better = "val_perplexity", False
    reads = frozenset({TEXT})
    model_file = "scorer.keras"
    curve_keys = ("train_perplexity", "val_perplexity")

    # ------------------------------------------------------------------------------ prepare
    def features(self, data):
        from preprocessing.schema import SEQUENCE

        return {"ids": SEQUENCE}

    def encode(self, data, tokenized, vocab, out_dir):
        from pipelines.beam.encode import EncodeForLM

        return Encoded(records=tokenized | "EncodeForLM" >> EncodeForLM(vocab))

    # --------------------------------------------------------------------------------- run
    def load(self, config, data_dir, manifest):
        from preprocessing.manifest import check_compatible
        from preprocessing.streams import TokenStream
        from preprocessing.vocab import Vocabulary

        t = config.training
        vocab = Vocabulary.load(manifest.file("vocab"))
        check_compatible(manifest, task=self.name, vocabulary=vocab.tokens)
        log.info("checking the shards of %s (the token streams are read as training goes)", data_dir)
        layouts = {split: TokenStream(data_dir, split, t.batch_size if split == "train" else t.eval_batch_size,
                                      t.bptt, manifest=manifest) for split in ("train", "valid", "test")}
        return LanguageModelData(
            data_dir=data_dir, manifest=manifest, vocab=vocab, level=manifest.tokenizer["level"], layouts=layouts,
            artifacts=[(manifest.file("vocab"), "data/vocab")],
            params={"data.train_tokens": layouts["train"].tokens, "data.vocab_size": len(vocab)},
        )

    def build_model(self, config, data):
        return build_language_model(config, len(data.vocab))

    def training_task(self, config):
        from keras_models.training import LanguageModelTask as TrainingTask

        return TrainingTask(carry_state=config.training.carry_state)

    def train_data(self, config, data):
        from keras_models.training import LanguageModelData as TrainData

        t = config.training
        return TrainData(data.layouts["train"], shuffle_windows=not t.carry_state, seed=t.seed,
                         max_steps=t.max_steps_per_epoch, shuffle_buffer=t.shuffle_buffer)

    def validator(self, config, data, tracker, epoch):
        from keras_models.evaluation import StreamEvaluator

        data.val_eval = StreamEvaluator(data.layouts["valid"], jit_compile=config.training.jit_compile)
        return data.val_eval

    def evaluate(self, config, data, model):
        from keras_models.evaluation import StreamEvaluator

        metrics: dict[str, float] = {}
        items = {}
        tokens = data.vocab.tokens
        for split in ("valid", "test"):
            prefix = metric_prefix(split)
            ev = data.val_eval if split == "valid" else StreamEvaluator(data.layouts[split],
                                                                        jit_compile=config.training.jit_compile)
            if ev is None:  # evaluated without a validator (item_stats of a loaded model)
                ev = StreamEvaluator(data.layouts[split], jit_compile=config.training.jit_compile)
            scores, items[split] = ev.score_items(model, tokens)  # per sentence, for paired comparisons
            metrics[f"{prefix}_loss"] = scores["loss"]
            metrics[f"{prefix}_perplexity"] = scores["perplexity"]
            if data.level == "char":
                metrics[f"{prefix}_bpc"] = scores["bits_per_token"]
        data.items, data.items_model = items, model
        return metrics

    def export(self, config, data, model):
        import tensorflow as tf

        from keras_models.export import LanguageModelScorer, TextToIds

        scorer = LanguageModelScorer(TextToIds(data.manifest.tokenizer, data.vocab.tokens), model)
        scorer(tf.constant(["a b"]))  # build
        return scorer

    def sample(self, config, data, export):
        g = config.generate
        text = generate_text(export, g.prompt, max_tokens=g.max_tokens, temperature=g.temperature,
                             top_k=g.top_k, top_p=g.top_p, seed=g.seed)
        return "the cat sat on the mat", text

    def title(self, config):
        return f"{config.model.cell} language model"

    def figures(self, config, data, model):
        from pipelines import plots

        return {"gradient_flow": plots.gradient_flow(gradient_flow_curves(config, model, data.layouts["valid"]))}

    # --------------------------------------------------------------------------------- CLI
    def owns(self, model):
        from keras_models.export import LanguageModelScorer

        return isinstance(model, LanguageModelScorer)

    def evaluate_model(self, config, model, data_dir, split):
        from keras_models.evaluation import StreamEvaluator
        from preprocessing.manifest import check_compatible, load_manifest
        from preprocessing.streams import TokenStream

        t = config.training
        manifest = load_manifest(data_dir)
        check_compatible(manifest, task=self.name, vocabulary=model.vocabulary)
        layout = TokenStream(data_dir, split, t.eval_batch_size, t.bptt, manifest=manifest)
        return StreamEvaluator(layout, jit_compile=t.jit_compile)(model.language_model)

    def add_commands(self, subparsers):
        from pipelines.cli import add_model_args

        p = subparsers.add_parser("generate", help="sample text from a trained language model",
                                  description="Feeds one token at a time, keeping only the last recurrent state.")
        add_model_args(p, texts=False)
        p.add_argument("--prompt", default="", help="text to continue (tokenized like the training data)")
        p.add_argument("--max-tokens", type=int, default=30)
        p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy; higher = more random")
        p.add_argument("--top-k", type=int, default=None, help="sample only among the k most likely tokens")
        p.add_argument("--top-p", type=float, default=None,
                       help="nucleus sampling: smallest set with this probability")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--num-samples", type=int, default=1)
        p.set_defaults(handler=self.generate_command)

    def generate_command(self, args) -> int:
        from pipelines.cli import load_task_model

        scorer = load_task_model(args, self)
        for i in range(args.num_samples):
            print(generate_text(scorer, args.prompt, max_tokens=args.max_tokens, temperature=args.temperature,
                                top_k=args.top_k, top_p=args.top_p, seed=args.seed + i))
        return 0


from pipelines.tasks import register  # noqa: E402

register(LanguageModelTask())
