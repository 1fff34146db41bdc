"""Deterministic splits (hash, interleave, stratified) for records without one, and the first N records
of a split (``max_lines``)."""

from __future__ import annotations

import hashlib
import operator

import apache_beam as beam

SPLIT_METHODS = ("hash", "interleave", "stratified")  # data.split.method


def hash_split(source: str, line, valid: float, test: float, seed: int = 0) -> str:
    """Deterministic split of one line: sha256 of ``seed, source, line`` (stable across runs and machines).
    ``line`` may also be a group key (a string)."""
    digest = hashlib.sha256(f"{seed}\x00{source}\x00{line}".encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    if u < valid:
        return "valid"
    if u < valid + test:
        return "test"
    return "train"


def interleave_split(item: int, valid: float, test: float, period: int) -> str:
    """Split of the ``item``-th record (0-based) of a source: of every ``period`` records the last
    ``round(test * period)`` are test and the ``round(valid * period)`` before them valid.

    ``interleave_split(i, 0.1, 0.1, 10)`` is the Turkish Web Treebank package's rule (``i % 10 == 8``
    dev, ``== 9`` test).
    """
    n_test, n_valid = round(test * period), round(valid * period)
    slot = item % period
    if slot >= period - n_test:
        return "test"
    if slot >= period - n_test - n_valid:
        return "valid"
    return "train"


def stratified_assignment(keys: list, valid: float, test: float) -> list[str]:
    """Splits for ``keys`` (already in their random order): rank ``r`` of ``n`` goes to valid if
    ``(r + 0.5) / n < valid``, else test if below ``valid + test``, else train."""
    n = len(keys)
    out = []
    for r in range(n):
        u = (r + 0.5) / n
        out.append("valid" if u < valid else "test" if u < valid + test else "train")
    return out


def _split_sort_key(record, seed):
    return hashlib.sha256(f"{seed}\x00{record['source']}\x00{record['line']}".encode("utf-8")).hexdigest()


def _assign_split(record, method, valid, test, seed, period):
    if record["split"] is not None:
        return record
    out = dict(record)
    if method == "interleave":
        out["split"] = interleave_split(record["item"], valid, test, period)
    elif "group" in record:  # e.g. all pronunciations of one word: one split
        out["split"] = hash_split("group", record["group"], valid, test, seed)
    else:
        out["split"] = hash_split(record["source"], record["line"], valid, test, seed)
    return out


def _stratify(label_and_keys, valid, test):
    _, keys = label_and_keys
    keys = sorted(keys)  # (hash, index): a deterministic random order
    for (_, index), split in zip(keys, stratified_assignment(keys, valid, test)):
        yield index, split


def _join_split(index_and_groups):
    _, groups = index_and_groups
    (record,), (split,) = groups["record"], groups["split"]
    out = dict(record)
    out["split"] = split
    return out


class AssignSplit(beam.PTransform):
    """Gives records without a split (``split`` is ``None``) one; others pass unchanged.

    Methods: ``hash`` (:func:`hash_split` of source and line), ``interleave`` (:func:`interleave_split`
    of the record's position in its source) and ``stratified`` (per ``label``, records ordered by a
    hash of source and line and cut at the fractions: :func:`stratified_assignment`). The
    stratified split groups only ``(hash, index)`` keys per label, then joins the splits back.
    """

    def __init__(self, valid: float, test: float, seed: int = 0, method: str = "hash", period: int = 10):
        super().__init__()
        if valid < 0 or test < 0 or valid + test >= 1:
            raise ValueError(f"split fractions valid={valid}, test={test} must be >= 0 and sum below 1")
        if method not in SPLIT_METHODS:
            raise ValueError(f"unknown split method {method!r}; use {', '.join(SPLIT_METHODS)}")
        self.valid, self.test, self.seed, self.method, self.period = valid, test, seed, method, period

    def expand(self, records):
        if self.method != "stratified":
            return records | "Split" >> beam.Map(
                _assign_split, self.method, self.valid, self.test, self.seed, self.period
            )
        given = records | "HasSplit" >> beam.Filter(lambda r: r["split"] is not None)
        todo = records | "NeedsSplit" >> beam.Filter(lambda r: r["split"] is None)
        splits = (
            todo
            | "KeyByLabel" >> beam.Map(lambda r, seed: (r["label"], (_split_sort_key(r, seed), r["index"])), self.seed)
            | "GroupByLabel" >> beam.GroupByKey()
            | "Stratify" >> beam.FlatMap(_stratify, self.valid, self.test)
        )
        assigned = (
            {"record": todo | "KeyByIndex" >> beam.Map(lambda r: (r["index"], r)), "split": splits}
            | "JoinSplit" >> beam.CoGroupByKey()
            | "SetSplit" >> beam.Map(_join_split)
        )
        return (given, assigned) | "Merge" >> beam.Flatten()


def _hash_order(record):
    return _split_sort_key(record, "max_lines"), record["index"]


class TakeFirstPerSplit(beam.PTransform):
    """Keeps the first ``max_lines[split]`` records of each listed split.

    ``order="corpus"``: by ``index`` (corpus order: what a language model's stream needs).
    ``order="hash"``: by a hash of source and line, a fixed pseudo-random order, so that a corpus
    stored class by class (``bbc``, ``folder``) keeps every class. Splits not listed in
    ``max_lines`` pass through whole. Deterministic on every runner.

    The first records are a ``CombineGlobally`` of :class:`~apache_beam.transforms.combiners.TopCombineFn`,
    not ``beam.combiners.Top.Smallest``: that one keeps each bundle's best records in a DoFn that emits
    them from ``finish_bundle``, which Beam 2.77's DaskRunner drops (the split would come out empty).
    """

    def __init__(self, max_lines: dict[str, int] | None, order: str = "corpus"):
        super().__init__()
        if order not in ("corpus", "hash"):
            raise ValueError(f"order must be 'corpus' or 'hash', got {order!r}")
        self.order = order
        self.max_lines = dict(max_lines or {})
        for split, n in self.max_lines.items():
            if n < 0:
                raise ValueError(f"max_lines[{split!r}] must be >= 0, got {n}")

    def expand(self, records):
        if not self.max_lines:
            return records
        limited = sorted(self.max_lines)
        parts = [records | "Unlimited" >> beam.Filter(lambda r, s: r["split"] not in s, frozenset(limited))]
        for split in limited:
            parts.append(
                records
                | f"Only[{split}]" >> beam.Filter(lambda r, s: r["split"] == s, split)
                | f"First[{split}]" >> beam.CombineGlobally(beam.combiners.TopCombineFn(
                    self.max_lines[split], key=operator.itemgetter("index") if self.order == "corpus" else _hash_order,
                    reverse=True))  # the smallest keys
                | f"Unpack[{split}]" >> beam.FlatMap(lambda rs: rs)
            )
        return tuple(parts) | "Merge" >> beam.Flatten()
