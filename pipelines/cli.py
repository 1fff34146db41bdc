"""The ``rnnflow`` command line: prepare, train, run, evaluate, predict, generate, tag, classify, translate.

Exit codes: 0 success, 1 failure, 2 bad usage, config or --model (a model that is missing or refused),
3 another run holds the work directory's lock.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import textwrap
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
  rnnflow predict --model models:/bbc-topics@champion --input 'news/*.txt' --output scored/news

Options a subcommand does not know (e.g. --runner, --direct_num_workers) are passed to Apache Beam
(see `rnnflow prepare --help` for the runners).
MLflow: runs and the registry live in sqlite:///mlflow_runs/mlflow.db unless the config's
tracking.tracking_uri or MLFLOW_TRACKING_URI says otherwise; browse them with
  mlflow ui --backend-store-uri sqlite:///mlflow_runs/mlflow.db
"""


PREPARE_EPILOG = """\
runners (Beam options, given after CONFIG; the output is the same on every runner):
  --runner NAME             one of (any case; or a PipelineRunner's fully qualified class name):
{runners}
  in-process (default):     --direct_running_mode in_memory|multi_threading|multi_processing
                            --direct_num_workers N
  Dask:                     --runner DaskRunner --dask_client_address tcp://HOST:8786
                            (pip install 'rnnflow[dask]' here and on every worker)
  portable (Flink, Spark):  --runner PortableRunner --job_endpoint HOST:8099 (or embed)
                            --environment_type EXTERNAL|DOCKER|PROCESS|LOOPBACK --environment_config ...
  Dataflow:                 --runner DataflowRunner --project P --region R --temp_location gs://B/tmp
                            --setup_file ./setup.py (or --sdk_container_image IMAGE)
  On a cluster, data.output_dir (and data.files) must be on storage every worker can reach;
  see README.md, "Running the prepare job on a cluster".

examples:
  rnnflow prepare configs/ptb_small.yaml --direct_num_workers 2 --direct_running_mode multi_processing
  rnnflow prepare configs/ptb_small.yaml --runner DaskRunner --dask_client_address tcp://127.0.0.1:8786
  rnnflow prepare configs/ptb_small.yaml --runner PortableRunner --job_endpoint embed \\
      --environment_type EXTERNAL --environment_config 127.0.0.1:50000
"""


PREDICT_EPILOG = """\
output (DIR appears only when complete; an existing DIR is refused unless --force):
  DIR/predictions-NNNNN-of-NNNNN.jsonl   one line per input line, in input order:
      {{"input": TEXT, "source": FILE, "line": N, "prediction": {{...}},
       "model": {{"name": NAME, "version": V, "uri": "models:/NAME/V"}}}}
      prediction: language model log_prob, num_tokens, perplexity; tagger tokens, tags, length;
      classifier label, probabilities (in the model's label order); encoder-decoder output,
      hypotheses, scores
  DIR/rejected/rejected-00000-of-00001.jsonl   invalid UTF-8 and empty / whitespace-only lines
      (source, line, reason, detail, text)
  DIR/manifest.json   model, inputs (sha256, lines), counts (read = predicted + rejected), shards,
      batching, runner, started / finished

The model: models:/NAME@ALIAS is resolved to its version before the job starts, and every worker
loads that version (a moved alias changes nothing mid-job); models:/NAME/VERSION, runs:/ID/model,
a .keras file or a run's model directory work too. It is loaded by rnnflow's safe loader (no code
from the artifact), once per worker process.

runners (Beam options, as for `rnnflow prepare`; the predictions are the same on every runner):
  --runner NAME             one of (any case; or a PipelineRunner's fully qualified class name):
{runners}
  in-process (default):     --direct_running_mode in_memory|multi_threading|multi_processing
                            --direct_num_workers N
  Dask:                     --runner DaskRunner --dask_client_address tcp://HOST:8786
  On a cluster, DIR's parent, the inputs and the MLflow store (an `mlflow server`) must be reachable
  from every worker; see README.md, "Batch scoring".

examples:
  rnnflow predict --model models:/bbc-topics@champion --input 'news/*.txt' --output scored/news
  rnnflow predict --model models:/cmudict-g2p@champion --input words.txt --output scored/g2p \\
      --batch-size 256 --runner DaskRunner --dask_client_address tcp://127.0.0.1:8786
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

    from pipelines.beam.runners import runners_help

    p = sub.add_parser("prepare", help="tokenize and shard a corpus into TFRecords (Apache Beam)",
                       description="Run the Beam prepare job for the config's data section. The output "
                       "directory is keyed by a fingerprint of the data config and sources; an existing "
                       "complete one is reused. Unknown options go to Beam (--runner, --direct_num_workers, ...).",
                       epilog=PREPARE_EPILOG.format(runners=textwrap.indent(runners_help(70), " " * 28)),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
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

    p = sub.add_parser("predict", help="score text files with a model as a Beam job (RunInference)",
                       description=textwrap.fill(
                           "Batch scoring: every line of the input files through the model, as an Apache Beam job "
                           "(RunInference, batched), into sharded JSONL predictions, rejected/ and manifest.json. "
                           "Unknown options go to Beam (--runner, --direct_num_workers, ...).", 100),
                       epilog=PREDICT_EPILOG.format(runners=textwrap.indent(runners_help(70), " " * 28)),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="MLflow URI (models:/NAME@champion, models:/NAME/VERSION, "
                   "runs:/ID/model) or a model path")
    p.add_argument("--input", required=True, action="append", metavar="GLOB",
                   help="file or glob of files, one text per line (repeatable; gs:// etc. work)")
    p.add_argument("--output", required=True, metavar="DIR", help="the directory to create")
    p.add_argument("--batch-size", type=int, default=64, help="most lines per model call (default 64)")
    p.add_argument("--min-batch-size", type=int, default=None,
                   help="fewest lines per model call (default: --batch-size, i.e. fixed batches; smaller lets "
                   "Beam adapt the batch size to the measured speed)")
    p.add_argument("--num-shards", type=int, default=None, help="output files (default: one per 100,000 lines)")
    p.add_argument("--force", action="store_true", help="replace DIR if it exists (only once the new output is "
                   "complete; a failed job keeps the old one)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI for models:/ and runs:/ URIs "
                   "(default: MLFLOW_TRACKING_URI, else sqlite:///mlflow_runs/mlflow.db)")

    from pipelines import tasks

    added = set()
    for task in tasks.all_tasks():  # each task's verbs (generate, tag, classify, translate, ...)
        method = type(task).add_commands
        if method not in added:  # a task that inherits its parent's verbs shares them (the model types match)
            added.add(method)
            task.add_commands(sub)
    return parser


def add_model_args(p: argparse.ArgumentParser, texts: bool = True) -> None:
    """``--model`` and ``--tracking-uri`` (and, with ``texts``, the texts to process) of a task verb."""
    p.add_argument("--model", required=True, help="model path (.keras or a run's model/ directory) or MLflow URI, "
                   "e.g. models:/NAME@champion")
    if texts:
        p.add_argument("text", nargs="*", help="texts to process (or use --input)")
        p.add_argument("--input", default=None, metavar="FILE",
                       help="one text per line ('-' for standard input); blank lines are skipped")
        p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI for models:/ and runs:/ URIs")


def model_files() -> tuple[str, ...]:
    """The exported model file names a run's model directory may hold (one per task)."""
    from pipelines import tasks

    return tuple(dict.fromkeys(t.model_file for t in tasks.all_tasks()))


def load_task_model(args, task):
    """``args.model`` loaded; a ValueError if it is not ``task``'s export."""
    model = _load_scorer(args.model, args.tracking_uri)
    if not task.owns(model):
        raise ValueError(f"{args.model} is not a {task.model_type} model (it is a {type(model).__name__})")
    return model


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
        found = [os.path.join(path, f) for f in model_files() if os.path.isfile(os.path.join(path, f))]
        if found:
            return saving.load_model(found[0])
        raise saving.ModelNotFoundError(f"{uri}: neither an MLmodel nor {' / '.join(model_files())} in this directory")
    raise saving.ModelNotFoundError(
        f"{uri}: no such file or directory; give a .keras file, a run's model directory or an MLflow URI "
        "(models:/NAME@champion, models:/NAME/VERSION, runs:/RUN_ID/model)"
    )


def _evaluate(args) -> int:
    from pipelines import tasks
    from pipelines.config import load_config
    from pipelines.prepare import prepare

    config = load_config(args.config, args.overrides)
    model = _load_scorer(args.model, config.resolved_tracking_uri())
    task = tasks.get(config.data.task)  # the config's task, if the model is its kind; else the model's
    if not task.owns(model):
        task = tasks.for_model(model)
    data_dir = prepare(config.data)
    scores = task.evaluate_model(config, model, data_dir, args.split)
    print(json.dumps({"split": args.split, **scores}, indent=2))
    return EXIT_OK


def _predict(args, beam_args: list[str]) -> int:
    from pipelines.config import DEFAULT_TRACKING_URI
    from pipelines.predict import OutputExistsError, predict

    tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    try:
        out = predict(args.model, args.input, args.output, beam_args, tracking_uri=tracking_uri,
                      batch_size=args.batch_size, min_batch_size=args.min_batch_size, num_shards=args.num_shards,
                      force=args.force)
    except OutputExistsError as err:
        print(f"rnnflow: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(out)
    return EXIT_OK


def read_texts(args) -> list[str]:
    """The texts of a task verb: its arguments, then the lines of ``--input`` (blank lines skipped)."""
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


def batches(texts: list[str], size: int):
    """``texts`` in batches of ``size``, with a progress bar on standard error for many batches."""
    from tqdm import tqdm

    starts = range(0, len(texts), max(size, 1))
    for start in tqdm(starts, unit="batch", disable=len(starts) < 5, file=sys.stderr):
        yield texts[start : start + size]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    if beam_args and args.command not in ("prepare", "train", "run", "predict"):
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
        elif args.command == "predict":
            return _predict(args, beam_args)
        else:  # a task's verb
            return args.handler(args)
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
