"""Times the Beam prepare job on a full corpus (default: Penn Treebank), rebuilding into a temp dir.

Prints the wall time, examples and tokens per split, rejected lines and the vocabulary size.

    .venv/bin/python bench/prepare_speed.py
    .venv/bin/python bench/prepare_speed.py --direct_num_workers 2 --direct_running_mode multi_processing
    .venv/bin/python bench/prepare_speed.py --dataset shakespeare --level char
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ptb", choices=["ptb", "shakespeare"])
    parser.add_argument("--level", default="word", choices=["word", "char"])
    parser.add_argument("--direct_num_workers", type=int, default=1, help="DirectRunner workers (0: one per CPU)")
    parser.add_argument(
        "--direct_running_mode",
        default=None,
        choices=["in_memory", "multi_threading", "multi_processing"],
        help="default: in_memory for one worker, multi_processing for more",
    )
    parser.add_argument("--output_dir", default=None, help="default: a fresh temporary directory (deleted after)")
    parser.add_argument("--verbose", action="store_true", help="show the job's progress log")
    args, extra_beam_args = parser.parse_known_args(argv)

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    if args.verbose:
        logging.getLogger("pipelines").setLevel(logging.INFO)
    from pipelines.config import DataConfig
    from pipelines.prepare import load_manifest, prepare

    mode = args.direct_running_mode or ("in_memory" if args.direct_num_workers == 1 else "multi_processing")
    beam_args = [f"--direct_num_workers={args.direct_num_workers}", f"--direct_running_mode={mode}"] + extra_beam_args

    with tempfile.TemporaryDirectory(prefix="prepare_speed-") as tmp:
        config = DataConfig(dataset=args.dataset, level=args.level, output_dir=args.output_dir or tmp)
        start = time.perf_counter()
        data_dir = prepare(config, beam_args=beam_args, force=True)
        wall = time.perf_counter() - start
        manifest = load_manifest(data_dir)

    print(f"prepare {args.dataset} ({args.level} level), beam args: {' '.join(beam_args)}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"wall time: {wall:.1f} s (force rebuild, includes pipeline start-up)")
    total_tokens = 0
    for split, s in manifest["splits"].items():
        total_tokens += s["tokens"]
        print(
            f"  {split:5s}: {s['examples']:8d} examples {s['tokens']:9d} tokens "
            f"OOV {100 * s['oov_rate']:.2f}%  shards {len(s['shards'])}"
        )
    print(f"  tokens/s: {total_tokens / wall:,.0f}")
    print(f"vocab size: {manifest['vocab']['size']} (reserved <pad> <unk> <bos> <eos> included)")
    print(f"rejected: {manifest['rejected']['count']} {manifest['rejected']['by_reason']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
