"""Quality and wall-time benchmark: train a PTB language model config end to end and report test perplexity.

Runs ``rnnflow train CONFIG`` (prepare → train → evaluate, logged to MLflow, no registry) in a fresh
work directory and prints the wall time of each phase, the validation / test perplexity and the
published anchor for the config. Example:

    .venv/bin/python bench/ptb_lm.py configs/ptb_small.yaml --output bench/results/ptb_small.json
"""

from __future__ import annotations

import sys

from common import machine, train_timed, training_parser, write_report

ANCHORS = {
    "lstm": ("Zaremba et al. 2014, small (2x200 LSTM)", 114.5),
    "gru": ("Zaremba et al. 2014, small LSTM (no published GRU anchor)", 114.5),
    "rnn": ("Mikolov 2012, RNN LM", 124.7),
}


def main(argv=None) -> int:
    args = training_parser(__doc__, "a PTB run config, e.g. configs/ptb_small.yaml").parse_args(argv)

    config, result, timings = train_timed(args.config, args.overrides, keep=args.keep)
    anchor_name, anchor = ANCHORS[config.model.cell]
    report = {
        "config": args.config,
        "overrides": args.overrides,
        "cell": config.model.cell,
        **timings,
        "epochs_completed": result.metrics.get("epochs_completed"),
        "val_perplexity": round(result.metrics["val_perplexity"], 2),
        "test_perplexity": round(result.metrics["test_perplexity"], 2),
        "anchor": f"{anchor_name}: {anchor}",
        "meets_anchor": result.metrics["test_perplexity"] <= anchor,
        "sample": result.sample,
        "machine": machine(),
    }
    write_report(report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
