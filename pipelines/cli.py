"""The ``rnnflow`` command line: prepare, train, evaluate, generate, run.

Exit codes: 0 success, 1 failure, 2 bad usage or config, 3 another run holds the work directory's lock.
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

    p = sub.add_parser("evaluate", help="perplexity of a trained model on a prepared split",
                       description="Scores a split of the config's prepared data with a model: a .keras file, "
                       "a runs:/ or models:/ URI (e.g. models:/NAME@champion).")
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
    return parser


def _load_scorer(uri: str, tracking_uri: str | None):
    import keras

    import keras_models.export  # noqa: F401  (registers the serializable classes)

    if os.path.exists(uri):
        path = os.path.join(uri, "scorer.keras") if os.path.isdir(uri) else uri
        return keras.saving.load_model(path)
    from pipelines.config import DEFAULT_TRACKING_URI
    from pipelines.tracking import load_model

    return load_model(uri, tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI)


def _evaluate(args) -> int:
    from keras_models.training import StreamEvaluator
    from pipelines.config import load_config
    from pipelines.prepare import prepare
    from preprocessing.input_fns import bptt_layout, lm_token_stream
    from preprocessing.manifest import check_compatible, load_manifest

    config = load_config(args.config, args.overrides)
    scorer = _load_scorer(args.model, config.resolved_tracking_uri())
    data_dir = prepare(config.data)
    check_compatible(load_manifest(data_dir), task="lm", vocabulary=scorer.vocabulary)
    layout = bptt_layout(lm_token_stream(data_dir, args.split), config.training.eval_batch_size, config.training.bptt)
    scores = StreamEvaluator(layout, jit_compile=config.training.jit_compile)(scorer.language_model)
    print(json.dumps({"split": args.split, **scores}, indent=2))
    return EXIT_OK


def _generate(args) -> int:
    from pipelines.run import generate_text

    scorer = _load_scorer(args.model, args.tracking_uri)
    for i in range(args.num_samples):
        print(generate_text(scorer, args.prompt, max_tokens=args.max_tokens, temperature=args.temperature,
                            top_k=args.top_k, top_p=args.top_p, seed=args.seed + i))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    if beam_args and args.command not in ("prepare", "train", "run"):
        parser.error(f"unrecognized arguments: {' '.join(beam_args)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from pipelines.config import ConfigError, load_config
    from pipelines.run import RunLockedError, execute, summary
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
        return EXIT_OK
    except ConfigError as err:
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
