"""Quality and wall-time benchmark of a tagger or classifier config, next to a baseline's result.

Runs ``rnnflow train CONFIG`` (prepare → train → evaluate on valid and test, logged to MLflow, no
registry) in a fresh work directory and prints the wall time, the validation / test scores and, when
``--baseline`` names a JSON result of ``bench/baselines.py``, the baseline's test accuracy and
whether the model beats it. Example::

    .venv/bin/python bench/sequence_models.py configs/twt_pos_crf.yaml \\
        --baseline bench/results/twt_perceptron.json --output bench/results/twt_pos_crf.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from common import machine, train_timed, training_parser, write_report


def main(argv=None) -> int:
    parser = training_parser(__doc__, "a tagging or classification run config")
    parser.add_argument("--baseline", help="a bench/baselines.py result to compare with")
    args = parser.parse_args(argv)

    config, result, timings = train_timed(args.config, args.overrides, keep=args.keep)
    m = config.model
    report = {
        "config": args.config,
        "overrides": args.overrides,
        "model": f"{m.type}: {m.num_layers}x{m.hidden_dim} {m.cell}"
                 + (", char features" if config.data.char_features else "") + (", CRF" if m.use_crf else "")
                 + (f", {m.pooling} pooling" if m.type == "classifier" else ""),
        **timings,
        "epochs_completed": result.metrics.get("epochs_completed"),
        **{k: round(v, 4) for k, v in result.metrics.items() if k.startswith(("val_", "test_")) and isinstance(v, float)},
        "sample": result.sample,
        "machine": machine(),
    }
    if args.baseline:
        baseline = json.loads(Path(args.baseline).read_text())
        report["baseline"] = f"{baseline['baseline']}: test accuracy {baseline['test_accuracy']}"
        report["beats_baseline"] = result.metrics["test_accuracy"] > baseline["test_accuracy"]
    write_report(report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
