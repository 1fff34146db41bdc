"""Beam DoFns and PTransforms of the prepare job, one idea per module; each one is usable (and tested) on its own.

Modules: :mod:`~pipelines.beam.names` (metrics namespace, file names),
:mod:`~pipelines.beam.runners` (the runner adapter: names, options, ``make_runner``, ``local_runner``),
:mod:`~pipelines.beam.files` (atomic writes), :mod:`~pipelines.beam.corpus` (``ReadCorpus``),
:mod:`~pipelines.beam.rejects` (reasons, ``reject``, ``SplitRejected``, ``WriteRejected``),
:mod:`~pipelines.beam.dedupe` (``DropDuplicates``),
:mod:`~pipelines.beam.splits` (``AssignSplit``, ``TakeFirstPerSplit``),
:mod:`~pipelines.beam.tokenization` (``BatchRecords``, ``TokenizeLines``), :mod:`~pipelines.beam.vocabulary`
(``CountTokens``, ``BuildVocabulary``, ``CountLabels``, ``BuildLabelSet``, ``CountCharacters``,
``WriteVocabulary``), :mod:`~pipelines.beam.encode` (``EncodeForLM``, ``EncodeLabelled``, ``EncodePairs``, ``UnseenLabels``),
:mod:`~pipelines.beam.stats` (``SummarizeSplits``), :mod:`~pipelines.beam.shards` (``WriteShards``),
:mod:`~pipelines.beam.summary` (``WriteSummary``).

Element shapes (plain dicts, so that any runner can encode them with its default coder):

* corpus record (``ReadCorpus``): ``{"index": (source_position, line_number), "split": str |
  None, "source": str, "line": int, "item": int}`` plus the format's fields: ``"raw": bytes`` (text
  to tokenize), ``"label": str`` (classification), ``"tokens", "tags": list[str]`` (tagging,
  pre-tokenized). ``index`` orders records in corpus order; ``item`` is the ordinal in its source.
* tokenized record (``TokenizeLines``, its ``accepted`` output): the same without ``raw``, plus
  ``"tokens": list[str]`` (pre-tokenized records: their tokens normalized).
* rejected record: ``{"index", "split", "source", "line", "reason", "detail", "text"}``; reasons:
  ``REJECT_REASONS`` in :mod:`~pipelines.beam.rejects`, the readers' (``pipelines/readers.py``) for
  unreadable input. A step emits them beside the records it accepts (only they have ``reason``);
  ``SplitRejected`` sets them apart and the steps that reject return its ``Split(accepted, rejected)``.
* encoded record (``EncodeForLM``, ``EncodeLabelled``, ``EncodePairs``, ``UnseenLabels``): ``{"index", "split", "features":
  {schema key: ids}, "unk": int, "labels": list[str]}`` (``labels``: the tags or the label, for the
  per-split label counts).

Every transform runs on every runner the prepare job supports (see :mod:`~pipelines.beam.runners`),
Beam 2.77's DaskRunner included, which rules out a multi-output ``ParDo`` and a DoFn that emits
from ``finish_bundle`` (:mod:`~pipelines.beam.rejects`, :mod:`~pipelines.beam.tokenization`).

Heavy objects (the tensorflow-text tokenizer) are made in ``DoFn.setup()``. Files are written with
``tf.io.gfile`` (local paths, ``gs://``, ``hdfs://``, ...), each to a temporary name first and
renamed, so a retried bundle never leaves a partial file behind.
"""
