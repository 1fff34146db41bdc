"""Run configuration: YAML validated into typed pydantic objects.

Every section forbids unknown keys, so a typo in a config is an error that names the key
(``training.lerning_rate: Extra inputs are not permitted``) instead of a silently ignored setting.
Every section is *strict* (pydantic strict mode): a YAML scalar must already have the field's type,
so ``training.epochs: true``, ``lowercase: "yes"`` or ``max_vocab_size: "50"`` are errors naming
the key instead of 1 epoch, ``True`` or 50. The only widening kept is the lossless one: a float
field takes a YAML integer (``learning_rate: 1``). ``--set`` overrides are parsed as YAML first, so
they follow the same rules (``training.epochs=3``, not ``training.epochs='3'``).
The resolved config (defaults filled in) is what gets logged with every run.
"""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from pipelines.readers import ReaderConfig

DEFAULT_TRACKING_URI = "sqlite:///mlflow_runs/mlflow.db"


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the offending keys."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), strict=True)


class SplitConfig(_Section):
    """Deterministic split for corpora that have no splits of their own.

    ``hash``: each record by a hash of (seed, source, line). ``interleave``: by position in its
    source file: of every ``period`` consecutive records the last ``round(test * period)`` go to
    test and the ``round(valid * period)`` before them to valid (``period: 10``, valid/test 0.1 is
    the Turkish Web Treebank package's rule: the 9th of every 10 sentences is dev, the 10th test).
    ``stratified``: per label, records ordered by a hash of (seed, source, line) and cut at the
    fractions, so every class has the same proportions in each split (classification).
    """

    method: SplitMethod = "hash"
    valid: float = Field(0.05, ge=0.0, lt=1.0)
    test: float = Field(0.05, ge=0.0, lt=1.0)
    seed: int = 0
    period: int = Field(10, ge=2, description="interleave: records per cycle")

    @model_validator(mode="after")
    def _fractions(self) -> "SplitConfig":
        if self.valid + self.test >= 1.0:
            raise ValueError("split.valid + split.test must be below 1 so that something is left to train on")
        if self.method == "interleave":
            slots = round(self.valid * self.period) + round(self.test * self.period)
            if slots >= self.period:
                raise ValueError(f"split.period {self.period} leaves no training slot for valid/test {self.valid}/{self.test}")
        return self


# Datasets: the packaged corpora (their recipes are in ``pipelines/datasets.py``) with the format of
# their files, ``text`` / ``folder`` (plain text / class folders read from ``data.files``), and
# every file format of ``pipelines.readers.FORMATS`` by its own name (reading ``data.files``).
# Which task the records feed is ``data.task``: any task whose roles the format provides.
CORPORA: dict[str, str] = {"ptb": "lines", "shakespeare": "lines", "twt": "conllu", "bbc": "document",
                           "cmudict": "cmudict"}
FILE_ALIASES: dict[str, str] = {"text": "lines", "folder": "document"}


def dataset_formats() -> dict[str, str]:
    """``data.dataset`` → the format (reader) of its files."""
    from pipelines.readers import FORMATS

    return {**CORPORA, **FILE_ALIASES, **{name: name for name, f in FORMATS.items() if f.files}}


def file_datasets() -> tuple[str, ...]:
    """The datasets that read ``data.files``."""
    return tuple(name for name in dataset_formats() if name not in CORPORA)


def _tasks():
    from pipelines import tasks

    return tasks


# Choice lists come from where the choices are defined (read when a config is validated, so that
# importing this module stays cheap): a new cell, attention score or dataset needs no edit here.
def _one_of(names: Callable[[], Iterable[str]], what: str) -> AfterValidator:
    def check(value: str) -> str:
        choices = tuple(names())
        if value not in choices:
            raise ValueError(f"{what} must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value

    return AfterValidator(check)


def _cells() -> tuple[str, ...]:
    from keras_models.layers.cells import CELL_NAMES

    return CELL_NAMES


def _attention_scores() -> tuple[str, ...]:
    from keras_models.layers.attention import SCORES

    return SCORES


def _pooling_modes() -> tuple[str, ...]:
    from keras_models.layers.pooling import POOLING_MODES

    return POOLING_MODES


def _tokenizer_choices(kind: str) -> Callable[[], tuple[str, ...]]:
    def names() -> tuple[str, ...]:
        from preprocessing import tokenizers

        return getattr(tokenizers, kind)

    return names


def _optimizers() -> Iterable[str]:
    from keras_models.training import OPTIMIZERS

    return OPTIMIZERS


def _decays() -> Iterable[str]:
    from keras_models.training import SCHEDULE_DECAYS

    return SCHEDULE_DECAYS


def _strategies() -> Iterable[str]:
    from keras_models.strategies import STRATEGIES

    return STRATEGIES


def _tag_schemes() -> Iterable[str]:
    from keras_models.evaluation import TAG_SCHEMES

    return TAG_SCHEMES


def _split_methods() -> Iterable[str]:
    from pipelines.beam.splits import SPLIT_METHODS

    return SPLIT_METHODS


CellName = Annotated[str, _one_of(_cells, "the cell")]
OptimizerName = Annotated[str, _one_of(_optimizers, "training.optimizer.name")]
ScheduleDecay = Annotated[str, _one_of(_decays, "the decay")]
StrategyName = Annotated[str, _one_of(_strategies, "training.strategy")]
TagScheme = Annotated[str, _one_of(_tag_schemes, "data.tag_scheme")]
SplitMethod = Annotated[str, _one_of(_split_methods, "the split method")]
AttentionScore = Annotated[str, _one_of(_attention_scores, "the attention score")]
PoolingMode = Annotated[str, _one_of(_pooling_modes, "the pooling")]
TokenLevel = Annotated[str, _one_of(_tokenizer_choices("LEVELS"), "the level")]
TokenSplit = Annotated[str, _one_of(_tokenizer_choices("SPLITS"), "the tokenizer")]
Normalization = Annotated[str, _one_of(_tokenizer_choices("NORMALIZATIONS"), "the normalization")]
DatasetName = Annotated[str, _one_of(dataset_formats, "data.dataset")]
TaskName = Annotated[str, _one_of(lambda: _tasks().names(), "data.task")]


class TokenizerSettings(_Section):
    """How texts become tokens and which tokens make the vocabulary."""

    level: TokenLevel = "word"
    tokenizer: TokenSplit = "whitespace"
    normalization: Normalization = "NFKC"
    lowercase: bool = False
    max_vocab_size: int | None = Field(None, ge=5)
    min_count: int = Field(1, ge=1)


class TargetTokenizerConfig(TokenizerSettings):
    """seq2seq: how target texts are tokenized (the source uses the data section's own settings)."""


class DataConfig(TokenizerSettings):
    """What the Beam prepare job reads and how it turns it into TFRecord shards."""

    dataset: DatasetName = "ptb"
    files: list[str] = Field(
        default_factory=list,
        description="paths or globs for the file datasets (text, conllu, csv, ...); class folders' parent for folder",
    )
    task: TaskName | None = Field(
        None, description="which task the records feed (any task whose needs the format provides); default: the "
        "task that uses most of what the format provides (tagged sentences: tagging, labelled texts: classification)"
    )
    reader: ReaderConfig = Field(default_factory=ReaderConfig)
    dedupe: bool | None = Field(
        None, description="remove exact-duplicate documents/sentences before splitting (default: on for classification)"
    )
    char_features: bool = Field(False, description="tagging: also write character ids per token and a char vocabulary")
    target: TargetTokenizerConfig = Field(
        default_factory=TargetTokenizerConfig, description="seq2seq: the target side's tokenizer and vocabulary"
    )
    remove_stress: bool = Field(False, description="cmudict: strip the stress digits (AH0 -> AH)")
    tag_scheme: TagScheme = Field(
        "plain", description="tagging: plain tags (POS) or BIO/BIOES spans (NER, scored by span F1)"
    )
    max_length: int = Field(1000, ge=1, description="lines with more tokens are rejected")
    max_token_chars: int = Field(
        100, ge=1, description="a record with a token of more characters is rejected (token_too_long); one limit "
        "for both sides of seq2seq pairs; a character-level token is one character, so it never applies there",
    )
    split: SplitConfig = Field(default_factory=SplitConfig)
    max_lines: dict[str, int] | None = Field(
        None, description="keep only the first N records of a split (e.g. {train: 5000}); for quick runs. Corpus "
        "order, except for classification: a fixed hash order, so that corpora stored class by class keep every class",
    )
    num_shards: int = Field(
        0, ge=0, description="shards per split; 0 picks one per ~1M tokens, but at least min_shards")
    min_shards: int = Field(
        8, ge=1, description="with num_shards 0, a split has at least this many shards (each of >= 100k tokens): "
        "set it to at least training workers x 8 (a stream's reader threads) so every reader has files")
    output_dir: str = "data/prepared"

    @property
    def format(self) -> str:
        return dataset_formats()[self.dataset]

    @property
    def provides(self) -> frozenset[str]:
        """The roles the format's items provide (``text``, ``tags``, ``label``, ``target``)."""
        from pipelines.readers import FORMATS

        return FORMATS[self.format].roles(self.reader)

    @property
    def dedupe_enabled(self) -> bool:
        return _tasks().get(self.task).dedupe_by_default if self.dedupe is None else self.dedupe

    @model_validator(mode="after")
    def _files_for_text(self) -> "DataConfig":
        if self.dataset in file_datasets() and not self.files:
            raise ValueError(f"data.files must list at least one path or glob when data.dataset is {self.dataset!r}")
        tasks, provides = _tasks(), self.provides
        if self.task is None:
            default = tasks.default_for(provides)
            if default is None:
                raise ValueError(f"no registered task reads what data.dataset {self.dataset!r} provides "
                                 f"({', '.join(sorted(provides))}); set data.task")
            self.__dict__["task"] = default.name  # no re-validation loop
        task = tasks.get(self.task)
        missing = sorted(set(task.reads) - provides)
        if missing:
            fits = [t.name for t in tasks.all_tasks() if set(t.reads) <= provides]
            raise ValueError(f"data.task {self.task!r} needs {', '.join(sorted(task.reads))}, but data.dataset "
                             f"{self.dataset!r} ({self.format} format) provides {', '.join(sorted(provides))} "
                             f"(missing {', '.join(missing)}); tasks it can feed: {', '.join(fits) or 'none'}")
        task.check_data(self)
        if self.split.method == "stratified" and "label" not in provides:
            raise ValueError("data.split.method 'stratified' needs a label per record (labelled documents); "
                             "use 'hash' or 'interleave'")
        if self.split.method == "interleave" and self.format == "document":
            raise ValueError(f"data.split.method 'interleave' counts records within a file, and every file of "
                             f"{self.dataset!r} is one document; use 'stratified' or 'hash'")
        if self.max_lines:
            bad = sorted(set(self.max_lines) - {"train", "valid", "test"})
            if bad:
                raise ValueError(f"data.max_lines has unknown split(s) {bad}; use train, valid, test")
        return self


class _RecurrentModelConfig(_Section):
    """What every model has: recurrent layers of one of our cells over token embeddings."""

    cell: CellName = "lstm"
    activation: Literal["tanh", "relu"] = Field("tanh", description="the Elman (rnn) cell's activation")
    num_layers: int = Field(2, ge=1, description="recurrent layers (seq2seq: of the encoder)")
    embedding_dim: int = Field(200, ge=1)
    hidden_dim: int = Field(200, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="on embeddings, between layers and on the output")
    recurrent_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="variational dropout on the hidden state")


class LanguageModelConfig(_RecurrentModelConfig):
    """``model.type: lm``: a stacked recurrent language model."""

    type: Literal["lm"] = "lm"
    tie_weights: bool = Field(False, description="share the embedding and output weights (embedding_dim == hidden_dim)")

    @model_validator(mode="after")
    def _tying(self) -> "LanguageModelConfig":
        if self.tie_weights and self.embedding_dim != self.hidden_dim:
            raise ValueError("model.tie_weights needs model.embedding_dim == model.hidden_dim")
        return self


class TaggerConfig(_RecurrentModelConfig):
    """``model.type: tagger``: a bidirectional recurrent tagger, optionally with characters and a CRF."""

    type: Literal["tagger"] = "tagger"
    use_crf: bool = Field(False, description="linear-chain CRF output layer with Viterbi decoding")
    char_embedding_dim: int = Field(25, ge=1, description="with data.char_features: character embedding size")
    char_hidden_dim: int = Field(25, ge=1, description="with data.char_features: character BiRNN units")
    max_chars_per_token: int = Field(20, ge=1, description="characters of a token the char encoder reads")


class ClassifierConfig(_RecurrentModelConfig):
    """``model.type: classifier``: a recurrent encoder pooled into one vector, then an MLP."""

    type: Literal["classifier"] = "classifier"
    bidirectional: bool = Field(True, description="bidirectional layers")
    pooling: PoolingMode = Field("last", description="how the sequence becomes one vector")
    mlp_dims: list[int] = Field(default_factory=list, description="hidden sizes of the MLP head")


class Seq2SeqConfig(_RecurrentModelConfig):
    """``model.type: seq2seq``: a bidirectional encoder and an attentional recurrent decoder."""

    type: Literal["seq2seq"] = "seq2seq"
    decoder_layers: int = Field(1, ge=1, description="decoder layers (num_layers: encoder layers)")
    decoder_dim: int | None = Field(None, ge=1, description="decoder units (default: 2 * hidden_dim)")
    attention: AttentionScore = Field(
        "additive", description="score: dot q.k, bilinear q W k, additive v.tanh(W [q; k])"
    )
    attention_units: int | None = Field(None, ge=1, description="additive attention's hidden size")
    input_feeding: bool = Field(True, description="feed the attentional vector into the next step")
    sampling_probability: float = Field(
        0.0, ge=0.0, le=1.0, description="scheduled sampling: feed the model's own prediction this often"
    )


# One config class per model type; ``model.type`` picks it (default: the data task's model), and a
# key of another type's class is an error naming it.
MODEL_CONFIGS: dict[str, type[_RecurrentModelConfig]] = {
    c.model_fields["type"].default: c for c in (LanguageModelConfig, TaggerConfig, ClassifierConfig, Seq2SeqConfig)
}
ModelConfig = Annotated[Union[tuple(MODEL_CONFIGS.values())], Field(discriminator="type")]


class OptimizerConfig(_Section):
    name: OptimizerName = "sgd"
    learning_rate: float = Field(1.0, gt=0.0)
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    weight_decay: float | None = Field(None, ge=0.0)


class ScheduleConfig(_Section):
    """Learning-rate schedule: linear warmup, then constant / per-epoch decay / reduce-on-plateau."""

    warmup_steps: int = Field(0, ge=0)
    decay: ScheduleDecay = "none"
    decay_rate: float = Field(0.5, gt=0.0, le=1.0)
    decay_start_epoch: int = Field(1, ge=1, description="epoch decay: first epoch (1-based) whose LR is decayed")
    plateau_patience: int = Field(0, ge=0)
    min_learning_rate: float = Field(0.0, ge=0.0)


class EarlyStoppingConfig(_Section):
    patience: int | None = Field(None, ge=1, description="epochs without improvement before stopping")
    min_delta: float = Field(0.0, ge=0.0)


class TrainingConfig(_Section):
    strategy: StrategyName = "default"
    devices: list[str] | None = None
    batch_size: int = Field(20, ge=1, description="global batch: parallel streams (LM) or sentences/documents")
    bptt: int = Field(20, ge=1, description="truncated-BPTT window length")
    eval_batch_size: int = Field(10, ge=1, description="parallel streams (LM) or examples per batch when scoring valid/test")
    max_length: int | None = Field(None, ge=1, description="tagging/classification: cut longer training examples")
    carry_state: bool = True
    shuffle_buffer: int = Field(10_000, ge=1, description="tagging/classification/seq2seq: training examples "
                                "shuffled at a time as they are read from the shards (LM without carry_state: windows)")
    epochs: int = Field(1, ge=1)
    max_steps_per_epoch: int | None = Field(None, ge=1)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    clip_norm: float | None = Field(5.0, gt=0.0)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    restore_best_weights: bool = Field(
        True, description="end training with the weights of the best validation epoch (tracking.metric)"
    )
    mixed_precision: bool = False
    jit_compile: bool = True
    checkpoint_every_steps: int = Field(500, ge=1)
    log_every_steps: int = Field(50, ge=1)
    seed: int = 0


class TrackingConfig(_Section):
    tracking_uri: str | None = None
    experiment: str = "rnnflow"
    registered_model: str | None = None
    metric: str | None = Field(None, description="decides promotion; default per task (val_perplexity, val_accuracy)")
    greater_is_better: bool | None = Field(None, description="default: True for accuracy / F1, False for perplexity / loss")
    http_retries: int | None = Field(None, ge=0, le=10, description=(
        "retries of a failed request to a tracking server (connection refused, 5xx, 429), with exponential "
        "backoff; default: MLflow's (7, or MLFLOW_HTTP_REQUEST_MAX_RETRIES)"))
    http_backoff: int | None = Field(None, ge=0, le=60, description=(
        "backoff factor in seconds: the n-th retry waits about http_backoff * 2**(n-1) s (at most 120 s); "
        "default: MLflow's (2, or MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR)"))
    http_timeout_s: int | None = Field(None, ge=1, description=(
        "seconds one request may take; default: MLflow's (120, or MLFLOW_HTTP_REQUEST_TIMEOUT)"))


class PromotionConfig(_Section):
    """How a new version must beat the champion to take its alias."""

    rule: Literal["paired_bootstrap", "any_improvement"] = Field("paired_bootstrap", description=(
        "paired_bootstrap: better with `confidence` in a paired bootstrap over the held-out items both models "
        "were scored on; any_improvement: a better tracking.metric figure by any amount"))
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="the fraction of resamples the candidate must win")
    samples: int = Field(1000, ge=100, le=100_000, description="bootstrap resamples")
    seed: int = Field(0, description="the resampling seed (decisions are reproducible)")
    min_items: int = Field(20, ge=1, description=(
        "fewer held-out items shared with the champion than this, and the candidate is not promoted"))


class DecodeConfig(_Section):
    """seq2seq: how outputs are searched when evaluating, exporting and translating."""

    beam_size: int = Field(5, ge=1, description="1 = greedy search")
    max_length: int = Field(40, ge=1, description="the longest output, in tokens")
    length_penalty: float = Field(1.0, ge=0.0, description="score / length ** length_penalty; 0 = raw log-prob")
    attention_samples: int = Field(4, ge=0, description="validation inputs whose attention maps are logged each epoch")


class GenerateConfig(_Section):
    prompt: str = "the"
    max_tokens: int = Field(30, ge=1)
    temperature: float = Field(1.0, ge=0.0, description="0 means greedy")
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int = 0


class RunConfig(_Section):
    name: str
    work_dir: str | None = Field(None, description="defaults to runs/<name>")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=dict, validate_default=True)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    decode: DecodeConfig = Field(default_factory=DecodeConfig)

    @field_validator("model", mode="before")
    @classmethod
    def _default_model_type(cls, value: Any, info: ValidationInfo) -> Any:
        """``model.type`` defaults to the data task's model (``model`` picks its config class by it)."""
        if value is None:
            value = {}
        if not isinstance(value, dict) or "type" in value:
            return value
        data = info.data.get("data")
        if data is not None:
            return {**value, "type": _tasks().get(data.task).model_type}
        # the data section is invalid (reported on its own): the first model type that has these keys
        fitting = [t for t, c in MODEL_CONFIGS.items() if set(value) <= set(c.model_fields)]
        return {**value, "type": (fitting or list(MODEL_CONFIGS))[0]}

    @model_validator(mode="after")
    def _model_fits_task(self) -> "RunConfig":
        task = _tasks().get(self.data.task)
        wanted = task.model_type
        if self.model.type != wanted:
            raise ValueError(f"model.type {self.model.type!r} cannot train on {self.data.task!r} data; use {wanted!r}")
        metric, greater = task.metric, task.greater_is_better
        if self.tracking.metric is None:
            self.tracking.__dict__["metric"] = metric
        if self.tracking.greater_is_better is None:
            m = self.tracking.metric
            self.tracking.__dict__["greater_is_better"] = (
                greater if m == metric else not any(w in m for w in ("loss", "perplexity", "bpc", "error", "wer", "per"))
            )
        return self

    @property
    def resolved_work_dir(self) -> Path:
        return Path(self.work_dir or os.path.join("runs", self.name))

    def resolved_tracking_uri(self) -> str:
        """Config first, then ``MLFLOW_TRACKING_URI``, then the local sqlite store."""
        return self.tracking.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        model_type = None
        if len(loc) > 1 and loc[0] == "model" and loc[1] in MODEL_CONFIGS:  # the union's branch
            model_type = loc.pop(1)
        key = ".".join(loc) or "<top level>"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            owners = [t for t, c in MODEL_CONFIGS.items() if loc[-1] in c.model_fields] if model_type else []
            if owners:
                msg = f"not a setting of model.type {model_type!r} (it belongs to {', '.join(owners)})"
            else:
                msg = "unknown key (check its spelling, or see the configs/ examples)"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], source: str = "<config>") -> RunConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: invalid config:\n{_format_errors(err)}") from None


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> RunConfig:
    """Reads a YAML config; ``overrides`` are ``section.key=value`` strings (value parsed as YAML)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected section.key=value")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
        node[parts[-1]] = yaml.safe_load(value)
    return parse_config(data, source=str(path))


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
