"""Times shard verification (sha256 of every shard against the manifest) against reading the training stream.

Prepares the corpus (default: full Penn Treebank, ``configs/ptb_small.yaml``'s data section) into a
temporary directory, then times, best of ``--repeat`` (files in the page cache after the first):

* ``verify_shards`` over all splits (+ ``verify_files``: the vocabulary), what a reusing ``prepare`` adds;
* ``lm_token_stream(train, verify=False)``: reading and parsing the training shards, counts checked;
* ``lm_token_stream(train)``: the same with its split's shards verified first (what training does);
* ``prepare`` reusing the directory (source hashing + manifest + verification).

    .venv/bin/python bench/verify_speed.py
    .venv/bin/python bench/verify_speed.py --dataset shakespeare --level char
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ptb", choices=["ptb", "shakespeare"])
    parser.add_argument("--level", default="word", choices=["word", "char"])
    parser.add_argument("--repeat", type=int, default=5, help="timings are the best of this many runs")
    parser.add_argument("--output_dir", default=None, help="default: a fresh temporary directory (deleted after)")
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    from pipelines.config import DataConfig
    from pipelines.prepare import prepare
    from preprocessing.input_fns import lm_token_stream
    from preprocessing.manifest import load_manifest, verify_files, verify_shards

    with tempfile.TemporaryDirectory(prefix="verify_speed-") as tmp:
        config = DataConfig(dataset=args.dataset, level=args.level, output_dir=args.output_dir or tmp)
        data_dir = prepare(config)
        manifest = load_manifest(data_dir)
        shard_bytes = sum(i["bytes"] for s in manifest["splits"].values() for i in s["shard_info"].values())
        num_shards = sum(len(s["shards"]) for s in manifest["splits"].values())
        train_tokens = manifest["splits"]["train"]["tokens"]

        def verify_all():
            verify_files(data_dir, manifest)
            verify_shards(data_dir, manifest)

        verify_s = _best(verify_all, args.repeat)
        read_s = _best(lambda: lm_token_stream(data_dir, "train", verify=False), args.repeat)
        read_verified_s = _best(lambda: lm_token_stream(data_dir, "train"), args.repeat)
        reuse_s = _best(lambda: prepare(config), args.repeat)

    print(f"verify vs read, {args.dataset} ({args.level} level): {num_shards} shards, "
          f"{shard_bytes / 1e6:.1f} MB gzipped, {train_tokens:,} train tokens")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"best of {args.repeat}, files in the page cache")
    print(f"  verify_shards, all splits (+ vocab): {verify_s:7.3f} s  ({shard_bytes / 1e6 / verify_s:,.0f} MB/s)")
    print(f"  read train stream, verify=False:     {read_s:7.3f} s  ({train_tokens / read_s:,.0f} tokens/s)")
    print(f"  read train stream, verified:         {read_verified_s:7.3f} s")
    print(f"  prepare reusing the directory:       {reuse_s:7.3f} s  (source sha256 + manifest + verification)")
    print(f"  verification / train read: {100 * verify_s / read_s:.2f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
