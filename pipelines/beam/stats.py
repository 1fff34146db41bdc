"""Per-split statistics (examples, tokens, OOV rate, length histogram, label counts) and the shard
count and contiguous shard boundaries of each split.

Memory does not grow with the corpus: the per-split combiner keeps counts per *block* of
:data:`BLOCK_LINES` consecutive lines of a source, not every record's index; the exact first record of
each shard is then found among the records of the (at most ``num_shards``) blocks a shard starts in.
"""

from __future__ import annotations

import math

import apache_beam as beam

from preprocessing import schema

TOKENS_PER_SHARD = 1_000_000
MIN_SHARDS = 8  # data.min_shards: one per reader thread of a training stream (ExampleStream interleaves 8)
MIN_SHARD_TOKENS = 100_000  # min_shards never cuts a split into shards of fewer tokens
BLOCK_LINES = 4096  # lines of a source counted together by SplitSummaryFn


def length_bucket(length: int) -> int:
    """Lower bound of the power-of-two histogram bucket of ``length`` (>= 1)."""
    return 1 << (max(int(length), 1).bit_length() - 1)


def num_shards_for(tokens: int, examples: int, requested: int, tokens_per_shard: int = TOKENS_PER_SHARD,
                   min_shards: int = MIN_SHARDS) -> int:
    """Shards for a split: ``requested``, or (``requested=0``) one per ~``tokens_per_shard`` tokens but
    at least ``min_shards`` where each would still hold :data:`MIN_SHARD_TOKENS` tokens; never more
    than one per example."""
    if examples <= 0:
        return 0
    if requested > 0:
        wanted = requested
    else:
        wanted = max(1, math.ceil(tokens / tokens_per_shard), min(min_shards, tokens // MIN_SHARD_TOKENS))
    return min(wanted, examples)


def block_of(index) -> tuple:
    """The block of a record's ``index`` ``(source position, line)``: its source and line // :data:`BLOCK_LINES`
    (blocks sort as the indices they hold)."""
    return (*index[:-1], index[-1] // BLOCK_LINES)


class SplitSummaryFn(beam.CombineFn):
    """Per-split stats and where each shard starts, from ``(index, length, unk, labels[, unseen])`` values.

    Output: ``{"examples", "tokens", "unk_tokens", "oov_rate", "length_histogram", "label_counts",
    "unseen", "num_shards", "cuts", "cut_blocks"}`` where ``label_counts`` counts tags / labels (empty for LM),
    ``unseen`` is ``{"examples": records holding a label unseen in training, "labels": {name: count}}``,
    ``tokens`` counts every id written (``<eos>`` included), ``oov_rate`` is ``unk_tokens / tokens``.
    Shards hold equal numbers of consecutive records (up to one): shard ``k`` starts at the record of
    rank ``k * examples // num_shards``, which is ``cuts[k] = (block, rank within the block)``
    (:func:`block_of`; ``cut_blocks`` is the set of those blocks; :class:`SummarizeSplits` turns the
    cuts into record indices). The accumulator
    holds counts per block, not the records' indices.
    """

    def __init__(self, num_shards: int = 0, tokens_per_shard: int = TOKENS_PER_SHARD, min_shards: int = MIN_SHARDS):
        self.num_shards = num_shards
        self.tokens_per_shard = tokens_per_shard
        self.min_shards = min_shards

    def create_accumulator(self):
        return [0, 0, {}, {}, {}, 0, {}]  # tokens, unk, histogram {bucket: n}, {block: n}, label counts, unseen

    def add_input(self, acc, value):
        index, length, unk, labels = value[:4]
        unseen = value[4] if len(value) > 4 else ()
        if unseen:
            acc[5] += 1
            for label in unseen:
                acc[6][label] = acc[6].get(label, 0) + 1
        acc[0] += length
        acc[1] += unk
        bucket = length_bucket(length)
        acc[2][bucket] = acc[2].get(bucket, 0) + 1
        block = block_of(index)
        acc[3][block] = acc[3].get(block, 0) + 1
        for label in labels:
            acc[4][label] = acc[4].get(label, 0) + 1
        return acc

    def merge_accumulators(self, accumulators):
        out = self.create_accumulator()
        for acc in accumulators:
            out[0] += acc[0]
            out[1] += acc[1]
            out[5] += acc[5]
            for i in (2, 3, 4, 6):
                for key, n in acc[i].items():
                    out[i][key] = out[i].get(key, 0) + n
        return out

    def extract_output(self, acc):
        tokens, unk, hist, blocks, label_counts, unseen_examples, unseen = acc
        examples = sum(blocks.values())
        k = num_shards_for(tokens, examples, self.num_shards, self.tokens_per_shard, self.min_shards)
        cuts, seen, ordered = [], 0, iter(sorted(blocks.items()))
        block, n = None, 0
        for s in range(k):
            rank = (s * examples) // k
            while block is None or rank >= seen + n:
                seen += n
                block, n = next(ordered)
            cuts.append((block, rank - seen))
        return {
            "examples": examples,
            "tokens": tokens,
            "unk_tokens": unk,
            "oov_rate": (unk / tokens) if tokens else 0.0,
            "length_histogram": {f"{b}-{2 * b - 1}": hist[b] for b in sorted(hist)},
            "label_counts": dict(sorted(label_counts.items())),
            "unseen": {"examples": unseen_examples, "labels": dict(sorted(unseen.items()))},
            "num_shards": k,
            "cuts": cuts,
            "cut_blocks": frozenset(block for block, _ in cuts),
        }


def _in_cut_block(split_and_index, summaries):
    """``(split, index)`` → ``((split, block), index)`` if a shard starts in the index's block."""
    split, index = split_and_index
    block = block_of(index)
    if block in summaries[split]["cut_blocks"]:
        yield (split, block), index


def _shard_starts(group, summaries):
    """``((split, block), indices)`` → ``(split, (shard, index of its first record))`` for the shards
    that start in the block (at most :data:`BLOCK_LINES` indices in memory)."""
    (split, block), indices = group
    indices = sorted(indices)
    for shard, (cut_block, rank) in enumerate(summaries[split]["cuts"]):
        if cut_block == block:
            yield split, (shard, indices[rank])


def _with_boundaries(split_and_starts, summaries):
    """``(split, [(shard, index)])`` → ``(split, summary)`` with ``boundaries[k]`` = the index of shard
    ``k``'s first record (``cuts`` dropped)."""
    split, starts = split_and_starts
    summary = {key: value for key, value in summaries[split].items() if key not in ("cuts", "cut_blocks")}
    summary["boundaries"] = [index for _, index in sorted(starts)]
    if len(summary["boundaries"]) != summary["num_shards"]:  # an invariant: one start per shard
        raise RuntimeError(f"{split}: found {len(summary['boundaries'])} shard starts for {summary['num_shards']} shards")
    return split, summary


def _length(features: dict) -> int:
    """An example's length in ids: its tokens, or its source tokens for seq2seq."""
    return schema.example_length(features)


class SummarizeSplits(beam.PTransform):
    """Encoded records → ``(split, summary)`` for every non-empty split: :class:`SplitSummaryFn`'s
    stats plus ``boundaries``, the ``index`` of each shard's first record (what
    :class:`~pipelines.beam.shards.WriteShards` cuts at).

    Args:
        num_shards: shards per split (0: :func:`num_shards_for` picks them).
        tokens_per_shard, min_shards: :func:`num_shards_for`'s rule for ``num_shards=0``.
    """

    def __init__(self, num_shards: int = 0, tokens_per_shard: int = TOKENS_PER_SHARD, min_shards: int = MIN_SHARDS):
        super().__init__()
        self.num_shards = num_shards
        self.tokens_per_shard = tokens_per_shard
        self.min_shards = min_shards

    def expand(self, encoded):
        stats = (
            encoded
            | "KeyBySplit"
            >> beam.Map(lambda r: (r["split"], (r["index"], _length(r["features"]), r["unk"], r["labels"],
                                                r.get("unseen", []))))
            | "Summarize" >> beam.CombinePerKey(SplitSummaryFn(self.num_shards, self.tokens_per_shard, self.min_shards))
        )
        return (
            encoded
            | "SplitAndIndex" >> beam.Map(lambda r: (r["split"], r["index"]))
            | "InCutBlocks" >> beam.FlatMap(_in_cut_block, beam.pvalue.AsDict(stats))
            | "GroupCutBlocks" >> beam.GroupByKey()
            | "ShardStarts" >> beam.FlatMap(_shard_starts, beam.pvalue.AsDict(stats))
            | "GroupBySplit" >> beam.GroupByKey()
            | "WithBoundaries" >> beam.Map(_with_boundaries, beam.pvalue.AsDict(stats))
        )
