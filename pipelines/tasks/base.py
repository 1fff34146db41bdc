"""The task contract: everything one kind of model needs, from prepared records to a registered model.

A task is a subclass of :class:`Task` registered with :func:`pipelines.tasks.register`. The parts of
rnnflow that are the same for every task call it and hold no task names:

- the config (``pipelines.config``): ``data.task`` must name a registered task whose :attr:`Task.reads`
  the dataset's format provides; ``model.type`` defaults to :attr:`Task.model_type`; the promotion
  metric to :attr:`Task.metric`;
- the prepare job (``pipelines.prepare``): reads, splits and tokenizes records, builds the token
  vocabulary, then calls :meth:`Task.encode` (the task's Beam step: its label sets, its features) and
  writes shards with :meth:`Task.features`;
- the run (``pipelines.run``): one training skeleton calls :meth:`Task.load`, :meth:`Task.build_model`,
  :meth:`Task.training_task`, :meth:`Task.train_data`, :meth:`Task.validator`, :meth:`Task.evaluate`,
  :meth:`Task.export`, :meth:`Task.sample`, :meth:`Task.figures` and :meth:`Task.log_reports`;
- the CLI (``pipelines.cli``): :meth:`Task.add_commands` adds the task's verbs (``tag``, ``classify``,
  ...), and ``rnnflow evaluate`` finds the task of a loaded model with :meth:`Task.owns` and calls
  :meth:`Task.evaluate_model`.

Task modules import TensorFlow, Keras and Beam inside their methods, so that importing the registry
(which config validation does) stays cheap.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

if TYPE_CHECKING:  # pragma: no cover
    from pipelines.config import DataConfig, RunConfig
    from preprocessing.manifest import Manifest
    from preprocessing.tokenizers import TokenizerConfig

log = logging.getLogger("rnnflow")

# What a reader's items can provide (``pipelines.readers.Format.provides``) and a task reads:
TEXT, TAGS, LABEL, TARGET = "text", "tags", "label", "target"
ROLES = (TEXT, TAGS, LABEL, TARGET)


@dataclass
class Encoded:
    """What :meth:`Task.encode` adds to the prepare pipeline.

    ``records``: a PCollection of ``{"index", "split", "features", "unk", "labels"}`` (``features``
    follow :meth:`Task.features`; ``labels``: the names counted into the manifest's
    ``label_counts``); ``rejected``: PCollections of rejected records
    (:func:`pipelines.beam.rejects.reject`); ``files``: manifest key → the one-element PCollection
    :class:`~pipelines.beam.vocabulary.WriteVocabulary` returns (recorded, with sha256, in the manifest).
    """

    records: Any
    rejected: list = field(default_factory=list)
    files: dict = field(default_factory=dict)


@dataclass
class TaskData:
    """What :meth:`Task.load` read from a prepared directory for one run: files to log with the run
    (``(path, artifact folder)``), params to log, and whatever the task's other methods need
    (subclasses add fields)."""

    data_dir: Path
    manifest: "Manifest"
    artifacts: list[tuple[str, str]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    # what the last :meth:`Task.evaluate` scored item by item: split -> ItemStats, and the model scored
    items: dict | None = None
    items_model: Any = None


class Task:
    """One task. Class attributes describe it; methods do its part of each stage (see the module doc)."""

    name: ClassVar[str]
    model_type: ClassVar[str]  # the ``model.type`` (a key of ``pipelines.config.MODEL_CONFIGS``) it trains
    metric: ClassVar[str]  # default ``tracking.metric`` (promotion, early stopping, best epoch)
    greater_is_better: ClassVar[bool]
    reads: ClassVar[frozenset[str]]  # roles of :data:`ROLES` its records need from a reader
    model_file: ClassVar[str]  # the exported model's file name under ``outputs/<key>/model/``
    curve_keys: ClassVar[tuple[str, ...]] = ()  # validation metrics on the learning-curve plot
    dedupe_by_default: ClassVar[bool] = False  # ``data.dedupe`` when unset
    max_lines_order: ClassVar[str] = "corpus"  # ``data.max_lines`` keeps the first N in "corpus" or "hash" order
    label_counts: ClassVar[bool] = False  # the manifest counts labels per split
    training_decode_fields: ClassVar[tuple[str, ...]] = ()  # ``decode`` keys that change the trained weights
    # ``data`` settings only some tasks use, with their off values: a task not listing one in
    # :attr:`data_options` refuses it when it is set (``char_features: true`` for a language model)
    TASK_DATA_OPTIONS: ClassVar[dict[str, Any]] = {"char_features": False, "tag_scheme": "plain"}
    data_options: ClassVar[frozenset[str]] = frozenset()

    # ------------------------------------------------------------------------------ prepare
    def features(self, data: "DataConfig") -> dict[str, str]:
        """The feature spec of the records this task writes (``preprocessing.schema``)."""
        raise NotImplementedError

    def target_tokenizer(self, data: "DataConfig") -> "TokenizerConfig | None":
        """The tokenizer of a second text side (``target``), or None."""
        return None

    def check_data(self, data: "DataConfig") -> None:
        """Raises ValueError (naming the key) for data settings this task cannot use."""
        for key, off in self.TASK_DATA_OPTIONS.items():
            if key not in self.data_options and getattr(data, key) != off:
                users = [t.name for t in _registered() if key in t.data_options]
                raise ValueError(f"data.{key} does not apply to task {self.name!r} (it is for {', '.join(users)})")

    def encode(self, data: "DataConfig", tokenized, vocab, out_dir: str) -> Encoded:
        """The Beam step from tokenized records (and the token ``vocab`` side input) to features."""
        raise NotImplementedError

    # --------------------------------------------------------------------------------- run
    def load(self, config: "RunConfig", data_dir: Path, manifest: "Manifest") -> TaskData:
        raise NotImplementedError

    def build_model(self, config: "RunConfig", data: TaskData):
        raise NotImplementedError

    def training_task(self, config: "RunConfig"):
        """The ``keras_models.training.Task`` (loss, counts, carried state)."""
        raise NotImplementedError

    def train_data(self, config: "RunConfig", data: TaskData):
        """The ``keras_models.training.TrainData`` of the training split."""
        raise NotImplementedError

    def validator(self, config: "RunConfig", data: TaskData, tracker, epoch: Callable[[], int]) -> Callable:
        """``model -> {metric: value}`` on the validation split, called after every epoch;
        ``epoch()`` is the epoch being validated (1-based)."""
        raise NotImplementedError

    def evaluate(self, config: "RunConfig", data: TaskData, model) -> dict[str, float]:
        """The final metrics, prefixed by split (``val_…``, ``test_…``).

        A task that supports paired comparisons scores the items in the same pass (its evaluators'
        ``score_items``) and keeps them in ``data.items`` / ``data.items_model`` for :meth:`item_stats`.
        """
        raise NotImplementedError

    def item_stats(self, config: "RunConfig", data: TaskData, model) -> dict[str, Any]:
        """``{split: keras_models.item_stats.ItemStats}`` of ``valid`` and ``test``: per-item
        statistics whose sums give exactly :meth:`evaluate`'s figures, one statistic per metric
        (``val_wer`` is statistic ``wer`` of split ``valid``: :func:`metric_split`).

        What the last :meth:`evaluate` of this model recorded; if it scored another model (or none),
        this evaluates ``model`` again.
        """
        if data.items is None or data.items_model is not model:
            self.evaluate(config, data, model)
        if data.items is None:
            raise NotImplementedError(f"task {self.name!r} does not record per-item statistics")
        return data.items

    def export(self, config: "RunConfig", data: TaskData, model):
        """The exported model: raw strings in (tokenization inside)."""
        raise NotImplementedError

    def sample(self, config: "RunConfig", data: TaskData, export) -> tuple[str, str]:
        """``(input text, printable sample)``; the input is also the model's logged input example."""
        raise NotImplementedError

    def title(self, config: "RunConfig") -> str:
        return f"{config.model.cell} {config.model.type}"

    def figures(self, config: "RunConfig", data: TaskData, model) -> dict[str, Any]:
        """Task plots besides the learning curves and gradient norms, ``{name: figure}``."""
        return {}

    def log_reports(self, config: "RunConfig", data: TaskData, tracker) -> None:
        """Logs task reports (e.g. ``evaluation.json``) after :meth:`evaluate`."""

    # --------------------------------------------------------------------------------- CLI
    def owns(self, model) -> bool:
        """Whether ``model`` (a loaded export) is this task's."""
        return False

    def evaluate_model(self, config: "RunConfig", model, data_dir: Path, split: str) -> dict[str, Any]:
        """``rnnflow evaluate``: scores of an exported model on a prepared split."""
        raise NotImplementedError

    def add_commands(self, subparsers) -> None:
        """Adds the task's CLI verbs; each sets ``handler`` (``args -> exit code``) with ``set_defaults``."""

    def __repr__(self) -> str:
        return f"<task {self.name}: model {self.model_type}, reads {sorted(self.reads)}>"


def _registered():
    from pipelines import tasks

    return tasks.all_tasks()


def metric_prefix(split: str) -> str:
    """The prefix of a split's metrics: ``val_…`` for the validation split, ``train_…`` / ``test_…``."""
    return "val" if split == "valid" else split


def metric_split(metric: str) -> tuple[str, str]:
    """``(split, statistic name)`` of a metric name, :func:`metric_prefix`'s inverse: ``val_wer`` →
    ``("valid", "wer")``, ``test_beam5_bleu`` → ``("test", "beam5_bleu")``: where
    :meth:`Task.item_stats` keeps the metric's per-item statistics."""
    for split in ("valid", "test", "train"):
        prefix = metric_prefix(split) + "_"
        if metric.startswith(prefix) and len(metric) > len(prefix):
            return split, metric[len(prefix):]
    raise ValueError(f"metric {metric!r} names no split (val_…, test_…, train_…)")


def load_example_splits(data_dir, with_chars: bool = False, manifest=None) -> dict:
    """The train / valid / test splits of an example-record directory, each a
    :class:`~preprocessing.streams.ExampleStream` read from its shards and never held: training
    batches for the training split, evaluation batches (every example once, in bounded
    length-sorted windows) for the evaluators of valid and test. An empty split is an error that
    says where to look."""
    from preprocessing.manifest import DataError
    from preprocessing.streams import ExampleStream

    examples = {split: ExampleStream(data_dir, split, with_chars, manifest=manifest)
                for split in ("train", "valid", "test")}
    for split, ex in examples.items():
        if not len(ex):
            raise DataError(f"{data_dir}: the {split} split is empty; check data.split and rejected/")
    return examples


def common_model_args(config: "RunConfig") -> dict[str, Any]:
    """The recurrent-encoder arguments every model takes from its config section."""
    m = config.model
    return dict(cell=m.cell, num_layers=m.num_layers, embedding_dim=m.embedding_dim, hidden_dim=m.hidden_dim,
                dropout=m.dropout, recurrent_dropout=m.recurrent_dropout, activation=m.activation,
                seed=config.training.seed)


def sample_text(vocab, examples, level: str) -> str:
    """The first example of ``examples`` (in memory, or a stream's head) without unknown tokens (else
    the first, unknowns left out), as text."""
    from preprocessing.tokenizers import detokenize
    from preprocessing.vocab import UNK_ID

    if hasattr(examples, "head"):  # a stream: only its first examples are read
        examples = examples.head(200)
    ids = next((x for x in examples.ids[:200] if UNK_ID not in x), examples.ids[0])
    tokens = vocab.decode(int(i) for i in ids if i != UNK_ID)
    return detokenize(tokens, level)
