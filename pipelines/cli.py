"""The ``rnnflow`` command line: prepare, train, run, evaluate, generate, tag, classify.

Exit codes: 0 success, 1 failure, 2 bad usage, config or --model (a model that is missing or refused),
3 another run holds the work directory's lock.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback

from pipelines.run import EXIT_FAILED, EXIT_LOCKED, EXIT_OK, EXIT_USAGE

EPILOG = """\
examples:
  rnnflow run configs/quickstart.yaml
  rnnflow prepare configs/ptb_small.yaml --direct_num_workers 2 --direct_running_mode multi_processing
  rnnflow train configs/ptb_small.yaml --set training.epochs=2 --set model.cell=gru
  rnnflow evaluate configs/ptb_small.yaml --model models:/ptb-small-lstm@champion --split test
  rnnflow generate --model models:/ptb-small-lstm@champion --prompt "the market" --max-tokens 20 --top-p 0.9
  rnnflow tag --model models:/twt-pos@champion "Bu kitap çok güzel ."
  rnnflow tag --model runs/twt_pos/<key>/model --input sentences.txt --format conll
  rnnflow classify --model models:/bbc-topics@champion --top-k 3 "Shares fell sharply after the results"
  rnnflow translate --model models:/cmudict-g2p@champion --beam-size 5 --nbest 3 "rnnflow"

Options a subcommand does not know (e.g. --runner, --direct_num_workers) are passed to Apache Beam.
MLflow: runs and the registry live in sqlite:///mlflow_runs/mlflow.db unless the config's
tracking.tracking_uri or MLFLOW_TRACKING_URI says otherwise; browse them with
  mlflow ui --backend-store-uri sqlite:///mlflow_runs/mlflow.db
"""


def _add_config(p: argparse.ArgumentParser, force_help: str | None = None) -> None:
    p.add_argument("config", help="YAML run config (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set training.epochs=3 (repeatable)")
    if force_help:
        p.add_argument("--force", action="store_true", help=force_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnflow", description="Raw text corpora to trained, tracked, registered recurrent models.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", help="tokenize and shard a corpus into TFRecords (Apache Beam)",
                       description="Run the Beam prepare job for the config's data section. The output "
                       "directory is keyed by a fingerprint of the data config and sources; an existing "
                       "complete one is reused. Unknown options go to Beam (--runner, --direct_num_workers, ...).")
    _add_config(p, "rebuild even if a prepared directory with the same fingerprint exists")

    p = sub.add_parser("train", help="prepare (or reuse) the data, train, evaluate and log to MLflow (no registry)",
                       description="Like `run` but does not register or promote the model.")
    _add_config(p, "train again even if this config already finished")

    p = sub.add_parser("run", help="prepare → train → evaluate on test → register and promote",
                       description="The scheduled entry: safe to re-run from cron. A finished run with the same "
                       "config and data is not repeated; a killed one resumes from its last checkpoint; a second "
                       "run on the same work directory exits with code 3 instead of clobbering the first.")
    _add_config(p, "train again even if this config already finished")

    p = sub.add_parser("evaluate", help="score a trained model on a prepared split",
                       description="Scores a split of the config's prepared data with a model: a .keras file, "
                       "a run's model directory, or a runs:/ or models:/ URI (e.g. models:/NAME@champion). "
                       "Language models: perplexity; taggers: accuracy (and span F1); classifiers: accuracy "
                       "and macro-F1.")
    _add_config(p)
    p.add_argument("--model", required=True, help="model path or MLflow URI")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])

    p = sub.add_parser("generate", help="sample text from a trained language model",
                       description="Feeds one token at a time, keeping only the last recurrent state.")
    p.add_argument("--model", required=True, help="model path (.keras) or MLflow URI, e.g. models:/NAME@champion")
    p.add_argument("--prompt", default="", help="text to continue (tokenized like the training data)")
    p.add_argument("--max-tokens", type=int, default=30)
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy; higher = more random")
    p.add_argument("--top-k", type=int, default=None, help="sample only among the k most likely tokens")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling: smallest set with this probability")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI for models:/ and runs:/ URIs")

    for name, what in (("tag", "tag the tokens of raw sentences with a trained tagger"),
                       ("classify", "classify raw texts with a trained classifier")):
        p = sub.add_parser(name, help=what, description=f"{what[0].upper()}{what[1:]}. The model tokenizes the "
                           "text itself (the tokenizer of its training data is inside it).")
        p.add_argument("--model", required=True, help="model path (.keras or a run's model/ directory) or MLflow URI")
        p.add_argument("text", nargs="*", help="texts to process (or use --input)")
        p.add_argument("--input", default=None, metavar="FILE",
                       help="one text per line ('-' for standard input); blank lines are skipped")
        p.add_argument("--batch-size", type=int, default=64)
        p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI for models:/ and runs:/ URIs")
        if name == "tag":
            p.add_argument("--format", choices=["text", "conll", "json"], default="text",
                           help="text: token/TAG pairs per line; conll: token<TAB>tag lines, blank line between "
                           "sentences; json: one object per line")
        else:
            p.add_argument("--top-k", type=int, default=1, help="show the k most probable labels")
            p.add_argument("--format", choices=["text", "json"], default="text",
                           help="text: label<TAB>probability per line; json: one object per line")
    p = sub.add_parser("translate", help="transduce raw texts with a trained encoder-decoder (e.g. word → phonemes)",
                       description="Encodes each text once and searches the output one token at a time with the "
                       "decoder's state (greedy, or beam search with --beam-size > 1).")
    p.add_argument("--model", required=True, help="model path (.keras or a run's model/ directory) or MLflow URI")
    p.add_argument("text", nargs="*", help="texts to process (or use --input)")
    p.add_argument("--input", default=None, metavar="FILE",
                   help="one text per line ('-' for standard input); blank lines are skipped")
    p.add_argument("--beam-size", type=int, default=None, help="default: the model's (decode.beam_size)")
    p.add_argument("--nbest", type=int, default=1, help="print the N best hypotheses with their scores")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--format", choices=["text", "json"], default="text",
                   help="text: the output (n-best: output<TAB>score lines, blank line between inputs); json")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI for models:/ and runs:/ URIs")
    return parser


MODEL_FILES = ("scorer.keras", "tagger.keras", "classifier.keras", "seq2seq.keras")


def _load_scorer(uri: str, tracking_uri: str | None):
    """An exported model (scorer, tagger, classifier, encoder-decoder) from a ``.keras`` file, a run's
    model directory, an MLflow model directory, a ``file://`` URI, or a ``models:/`` / ``runs:/`` URI.

    Loads rnnflow's own classes only and never runs code from the model (``keras_models.saving``);
    reads the MLflow store without creating anything in it.
    """
    from keras_models import saving
    from pipelines import tracking
    from pipelines.config import DEFAULT_TRACKING_URI

    path = tracking.local_path(uri)
    if path is None:
        return tracking.load_model(uri, tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI)
    if os.path.isfile(path):
        return saving.load_model(path)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "MLmodel")):
            return tracking.load_logged_model(path)
        found = [os.path.join(path, f) for f in MODEL_FILES if os.path.isfile(os.path.join(path, f))]
        if found:
            return saving.load_model(found[0])
        raise saving.ModelNotFoundError(f"{uri}: neither an MLmodel nor {' / '.join(MODEL_FILES)} in this directory")
    raise saving.ModelNotFoundError(
        f"{uri}: no such file or directory; give a .keras file, a run's model directory or an MLflow URI "
        "(models:/NAME@champion, models:/NAME/VERSION, runs:/RUN_ID/model)"
    )


def _evaluate(args) -> int:
    from keras_models.export import Seq2SeqExport, SequenceTaggerExport, TextClassifierExport
    from pipelines.config import load_config
    from pipelines.prepare import prepare
    from pipelines.run import make_evaluator
    from preprocessing.manifest import DataError, check_compatible, load_manifest

    config = load_config(args.config, args.overrides)
    model = _load_scorer(args.model, config.resolved_tracking_uri())
    data_dir = prepare(config.data)
    manifest = load_manifest(data_dir)
    t = config.training
    if isinstance(model, Seq2SeqExport):
        from preprocessing.input_fns import load_examples
        from preprocessing.vocab import Vocabulary

        check_compatible(manifest, task="seq2seq", vocabulary=model.text_to_ids.vocabulary)
        if Vocabulary.load(manifest.file("target_vocab")).tokens != model.target_vocab:
            raise DataError("the data's target vocabulary differs from the model's; evaluate on data prepared "
                            "with the model's config")
        evaluator = make_evaluator(config, load_examples(data_dir, args.split), model.target_vocab,
                                   target_level=model.target_level)
        scores = evaluator(model.seq2seq)
    elif isinstance(model, (SequenceTaggerExport, TextClassifierExport)):
        from preprocessing.input_fns import load_examples
        from preprocessing.vocab import LabelSet

        tagger = isinstance(model, SequenceTaggerExport)
        check_compatible(manifest, task="tagging" if tagger else "classification",
                         vocabulary=model.text_to_ids.vocabulary)
        names = model.tag_names if tagger else model.label_names
        if LabelSet.load(manifest.file("labels")).labels != names:
            raise DataError("the data's tag/label set differs from the model's; evaluate on data prepared "
                            "with the model's config")
        examples = load_examples(data_dir, args.split, with_chars=tagger and bool(model.char_vocabulary))
        evaluator = make_evaluator(config, examples, names, max_chars=model.max_chars if tagger else None)
        scores = evaluator(model.tagger if tagger else model.classifier)
    else:
        from keras_models.evaluation import StreamEvaluator
        from preprocessing.input_fns import bptt_layout, lm_token_stream

        check_compatible(manifest, task="lm", vocabulary=model.vocabulary)
        layout = bptt_layout(lm_token_stream(data_dir, args.split), t.eval_batch_size, t.bptt)
        scores = StreamEvaluator(layout, jit_compile=t.jit_compile)(model.language_model)
    print(json.dumps({"split": args.split, **scores}, indent=2))
    return EXIT_OK


def _read_texts(args) -> list[str]:
    texts = list(args.text)
    if args.input:
        if args.input == "-":
            lines = sys.stdin.read().splitlines()
        else:
            with open(args.input, encoding="utf-8") as f:
                lines = f.read().splitlines()
        texts += [line for line in lines if line.strip()]
    if not texts:
        raise ValueError("nothing to process: give texts as arguments or --input FILE")
    return texts


def _batches(texts: list[str], size: int):
    from tqdm import tqdm

    starts = range(0, len(texts), max(size, 1))
    for start in tqdm(starts, unit="batch", disable=len(starts) < 5, file=sys.stderr):
        yield texts[start : start + size]


def _tag(args) -> int:
    import tensorflow as tf

    from keras_models.export import SequenceTaggerExport

    model = _load_scorer(args.model, args.tracking_uri)
    if not isinstance(model, SequenceTaggerExport):
        raise ValueError(f"{args.model} is not a tagger (it is a {type(model).__name__})")
    for batch in _batches(_read_texts(args), args.batch_size):
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
    return EXIT_OK


def _classify(args) -> int:
    import numpy as np
    import tensorflow as tf

    from keras_models.export import TextClassifierExport

    model = _load_scorer(args.model, args.tracking_uri)
    if not isinstance(model, TextClassifierExport):
        raise ValueError(f"{args.model} is not a classifier (it is a {type(model).__name__})")
    k = max(1, min(args.top_k, len(model.label_names)))
    for batch in _batches(_read_texts(args), args.batch_size):
        probs = model(tf.constant(batch))["probabilities"].numpy()
        for row, text in enumerate(batch):
            best = np.argsort(-probs[row], kind="stable")[:k]
            ranked = [(model.label_names[i], float(probs[row, i])) for i in best]
            if args.format == "json":
                print(json.dumps({"text": text, "labels": [{"label": a, "probability": round(b, 6)} for a, b in ranked]},
                                 ensure_ascii=False))
            else:
                print("\t".join(f"{a}\t{b:.4f}" for a, b in ranked))
    return EXIT_OK


def _generate(args) -> int:
    from pipelines.run import generate_text

    scorer = _load_scorer(args.model, args.tracking_uri)
    for i in range(args.num_samples):
        print(generate_text(scorer, args.prompt, max_tokens=args.max_tokens, temperature=args.temperature,
                            top_k=args.top_k, top_p=args.top_p, seed=args.seed + i))
    return EXIT_OK


def _translate(args) -> int:
    import tensorflow as tf

    from keras_models.export import Seq2SeqExport
    from preprocessing.tokenizers import detokenize

    model = _load_scorer(args.model, args.tracking_uri)
    if not isinstance(model, Seq2SeqExport):
        raise ValueError(f"{args.model} is not an encoder-decoder (it is a {type(model).__name__})")
    beam = args.beam_size or model.beam_size
    if args.nbest > beam:
        raise ValueError(f"--nbest {args.nbest} needs --beam-size of at least {args.nbest}")
    names = model.target_vocab
    for batch in _batches(_read_texts(args), args.batch_size):
        tokens, scores = model.search(tf.constant(batch), beam_size=beam)
        tokens, scores = tokens.numpy(), scores.numpy()
        for row, text in enumerate(batch):
            hyps = []
            for k in range(args.nbest):
                out = []
                for i in tokens[row, k]:
                    if int(i) in (0, 3):  # <pad>, <eos>
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
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    if beam_args and args.command not in ("prepare", "train", "run"):
        parser.error(f"unrecognized arguments: {' '.join(beam_args)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from keras_models.saving import ModelLoadError
    from pipelines.config import ConfigError, load_config
    from pipelines.run import execute, summary
    from pipelines.run_state import RunLockedError
    from preprocessing.manifest import DataError

    try:
        if args.command == "prepare":
            from pipelines.prepare import prepare

            config = load_config(args.config, args.overrides)
            print(prepare(config.data, beam_args=beam_args, force=args.force))
        elif args.command in ("train", "run"):
            config = load_config(args.config, args.overrides)
            result = execute(config, beam_args=beam_args, register=args.command == "run", force=args.force)
            print(summary(result))
        elif args.command == "evaluate":
            return _evaluate(args)
        elif args.command == "generate":
            return _generate(args)
        elif args.command == "tag":
            return _tag(args)
        elif args.command == "classify":
            return _classify(args)
        elif args.command == "translate":
            return _translate(args)
        return EXIT_OK
    except (ConfigError, ModelLoadError) as err:
        if args.verbose:
            traceback.print_exc()
        print(f"rnnflow: {err}", file=sys.stderr)
        return EXIT_USAGE
    except RunLockedError as err:
        print(f"rnnflow: {err}", file=sys.stderr)
        return EXIT_LOCKED
    except (DataError, FileNotFoundError, LookupError, ValueError) as err:
        if args.verbose:
            traceback.print_exc()
        print(f"rnnflow: {err} (run with -v for the traceback)", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("rnnflow: interrupted; a re-run resumes from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
