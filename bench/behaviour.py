"""Records what a tiny ``rnnflow run`` of every shipped config gives — metrics, sample, prepared-data
fingerprint — so that a refactor can show its runs are unchanged (the runs are deterministic).

Each config runs with its own settings cut down to a few steps (``TINY`` below: a slice of each
split, one short epoch) in a throw-away directory with its own MLflow store; the quickstart runs as
shipped. Record before a change, then compare after it::

    .venv/bin/python bench/behaviour.py --output bench/results/behaviour_before.json
    .venv/bin/python bench/behaviour.py --compare bench/results/behaviour_before.json

``--compare`` prints every difference and exits 1 if there is one.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["data.max_lines={train: 1500, valid: 150, test: 150}", "training.epochs=1",
        "training.max_steps_per_epoch=15", "training.checkpoint_every_steps=10"]
SHIPPED_AS_IS = ("quickstart.yaml",)


def run_one(config_path: str, root: str) -> dict:
    from pipelines.config import load_config
    from pipelines.run import execute

    name = os.path.basename(config_path)
    overrides = [] if name in SHIPPED_AS_IS else list(TINY)
    overrides += [f"work_dir={root}/runs/{name}", f"data.output_dir={root}/data",
                  f"tracking.tracking_uri=sqlite:///{root}/mlflow.db"]
    config = load_config(config_path, overrides)
    start = time.monotonic()
    result = execute(config)
    from preprocessing.manifest import load_manifest

    manifest = load_manifest(result.data_dir)
    return {
        "overrides": overrides[:-3],
        "metrics": {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in result.metrics.items()},
        "sample": result.sample,
        "data_fingerprint": manifest["fingerprint"],
        "registered_version": result.registered_version,
        "seconds": round(time.monotonic() - start, 1),
    }


def compare(before: dict, after: dict) -> list[str]:
    diffs = []
    for name in sorted(set(before) | set(after)):
        b, a = before.get(name), after.get(name)
        if b is None or a is None:
            diffs.append(f"{name}: only {'after' if b is None else 'before'}")
            continue
        for key in ("data_fingerprint", "sample", "registered_version"):
            if b[key] != a[key]:
                diffs.append(f"{name}: {key} {b[key]!r} -> {a[key]!r}")
        for metric in sorted(set(b["metrics"]) | set(a["metrics"])):
            if b["metrics"].get(metric) != a["metrics"].get(metric):
                diffs.append(f"{name}: {metric} {b['metrics'].get(metric)!r} -> {a['metrics'].get(metric)!r}")
    return diffs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", help="default: every configs/*.yaml")
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument("--compare", help="a JSON written earlier by --output: print differences, exit 1 on any")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import logging

    logging.basicConfig(level=logging.WARNING)
    configs = args.configs or sorted(glob.glob(os.path.join(REPO, "configs", "*.yaml")))
    results = {}
    with tempfile.TemporaryDirectory(prefix="behaviour-") as root:
        for path in configs:
            name = os.path.basename(path)
            results[name] = run_one(path, root)
            print(f"{name}: {json.dumps(results[name]['metrics'], sort_keys=True)} ({results[name]['seconds']} s)",
                  flush=True)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2, sort_keys=True)
            f.write("\n")
    if args.compare:
        with open(args.compare) as f:
            before = json.load(f)
        diffs = compare({k: v for k, v in before.items() if k in results}, results)
        print("\n".join(diffs) if diffs else f"identical: {len(results)} configs")
        return 1 if diffs else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
