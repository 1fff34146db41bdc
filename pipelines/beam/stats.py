"""Per-split statistics (examples, tokens, OOV rate, length histogram, label counts) and the shard
count and contiguous shard boundaries of each split."""

from __future__ import annotations

import math

import apache_beam as beam

from preprocessing import schema

TOKENS_PER_SHARD = 1_000_000


def length_bucket(length: int) -> int:
    """Lower bound of the power-of-two histogram bucket of ``length`` (>= 1)."""
    return 1 << (max(int(length), 1).bit_length() - 1)


def num_shards_for(tokens: int, examples: int, requested: int, tokens_per_shard: int = TOKENS_PER_SHARD) -> int:
    """Shards for a split: ``requested`` (0: one per ~``tokens_per_shard`` tokens), at most one per example."""
    if examples <= 0:
        return 0
    wanted = requested if requested > 0 else max(1, math.ceil(tokens / tokens_per_shard))
    return min(wanted, examples)


class SplitSummaryFn(beam.CombineFn):
    """Per-split stats and contiguous shard boundaries, from ``(index, length, unk, labels[, unseen])`` values.

    Output: ``{"examples", "tokens", "unk_tokens", "oov_rate", "length_histogram", "label_counts",
    "unseen", "num_shards", "boundaries"}`` where ``label_counts`` counts tags / labels (empty for LM),
    ``unseen`` is ``{"examples": records holding a label unseen in training, "labels": {name: count}}``,
    ``tokens`` counts every id written (``<eos>`` included), ``oov_rate`` is
    ``unk_tokens / tokens``, and ``boundaries[k]`` is the ``index`` of shard ``k``'s first record
    (shards hold equal numbers of consecutive records, up to one).
    """

    def __init__(self, num_shards: int = 0, tokens_per_shard: int = TOKENS_PER_SHARD):
        self.num_shards = num_shards
        self.tokens_per_shard = tokens_per_shard

    def create_accumulator(self):
        return [0, 0, {}, [], {}, 0, {}]  # tokens, unk, histogram {bucket: n}, indices, label counts, unseen

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
        acc[3].append(index)
        for label in labels:
            acc[4][label] = acc[4].get(label, 0) + 1
        return acc

    def merge_accumulators(self, accumulators):
        out = self.create_accumulator()
        for acc in accumulators:
            out[0] += acc[0]
            out[1] += acc[1]
            for b, n in acc[2].items():
                out[2][b] = out[2].get(b, 0) + n
            out[3].extend(acc[3])
            for label, n in acc[4].items():
                out[4][label] = out[4].get(label, 0) + n
            out[5] += acc[5]
            for label, n in acc[6].items():
                out[6][label] = out[6].get(label, 0) + n
        return out

    def extract_output(self, acc):
        tokens, unk, hist, indices, label_counts, unseen_examples, unseen = acc
        indices = sorted(indices)
        examples = len(indices)
        k = num_shards_for(tokens, examples, self.num_shards, self.tokens_per_shard)
        return {
            "examples": examples,
            "tokens": tokens,
            "unk_tokens": unk,
            "oov_rate": (unk / tokens) if tokens else 0.0,
            "length_histogram": {f"{b}-{2 * b - 1}": hist[b] for b in sorted(hist)},
            "label_counts": dict(sorted(label_counts.items())),
            "unseen": {"examples": unseen_examples, "labels": dict(sorted(unseen.items()))},
            "num_shards": k,
            "boundaries": [indices[(s * examples) // k] for s in range(k)],
        }


def _length(features: dict) -> int:
    """An example's length in ids: its tokens, or its source tokens for seq2seq."""
    return schema.example_length(features)


class SummarizeSplits(beam.PTransform):
    """Encoded records → ``(split, summary)`` (see :class:`SplitSummaryFn`) for every non-empty split."""

    def __init__(self, num_shards: int = 0, tokens_per_shard: int = TOKENS_PER_SHARD):
        super().__init__()
        self.num_shards = num_shards
        self.tokens_per_shard = tokens_per_shard

    def expand(self, encoded):
        return (
            encoded
            | "KeyBySplit"
            >> beam.Map(lambda r: (r["split"], (r["index"], _length(r["features"]), r["unk"], r["labels"],
                                                r.get("unseen", []))))
            | "Summarize" >> beam.CombinePerKey(SplitSummaryFn(self.num_shards, self.tokens_per_shard))
        )
