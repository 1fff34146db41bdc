"""Text normalization and tokenization, defined once for the Beam prepare job and the tf.data input.

The same ops run everywhere: the Beam job calls :meth:`Tokenizer.tokenize_batch_py` (one TensorFlow
call for a batch of lines), tests call :meth:`Tokenizer.tokenize_py`, and exported models call
:meth:`Tokenizer.tokenize` inside their graph. All three go through :meth:`Tokenizer.tokenize`.

Pipeline of one string:

1. case folding (``lowercase=True``): ``tf_text.case_fold_utf8``. Note that tensorflow-text's case
   folding is NFKC_Casefold, i.e. it implies the NFKC compatibility mapping;
2. Unicode normalization (``normalization`` other than ``"none"``): ``tf_text.normalize_utf8``;
3. splitting: word level uses ``tf_text.WhitespaceTokenizer`` or ``tf_text.UnicodeScriptTokenizer``
   (``split``); character level splits into Unicode code points, spaces included (``split`` is
   ignored at character level).

Example:

>>> tok = Tokenizer(TokenizerConfig(level="word", lowercase=True))
>>> tok.tokenize_py("The  Cat sat")
['the', 'cat', 'sat']
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import tensorflow as tf
import tensorflow_text as tf_text

LEVELS = ("word", "char")
SPLITS = ("whitespace", "unicode_script")
NORMALIZATIONS = ("none", "NFC", "NFKC", "NFD", "NFKD")


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    """How text is normalized and split into tokens.

    Args:
        level: ``"word"`` or ``"char"`` (Unicode code points; spaces are tokens).
        split: word level only: ``"whitespace"`` (split on Unicode whitespace) or
            ``"unicode_script"`` (also split where the Unicode script changes, e.g. ``"cat,"`` →
            ``"cat"``, ``","``).
        normalization: Unicode normalization form, or ``"none"``.
        lowercase: case-fold (``tf_text.case_fold_utf8``, which implies NFKC).
    """

    level: str = "word"
    split: str = "whitespace"
    normalization: str = "NFKC"
    lowercase: bool = False

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"TokenizerConfig.level must be one of {LEVELS}, got {self.level!r}")
        if self.split not in SPLITS:
            raise ValueError(f"TokenizerConfig.split must be one of {SPLITS}, got {self.split!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"TokenizerConfig.normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}"
            )
        if not isinstance(self.lowercase, bool):
            raise ValueError(f"TokenizerConfig.lowercase must be a bool, got {self.lowercase!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TokenizerConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"TokenizerConfig: unknown key(s) {unknown}; expected {sorted(known)}")
        return cls(**data)


def joiner(level: str) -> str:
    """What joins tokens of ``level`` back into text: ``""`` for characters, ``" "`` for words."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    return "" if level == "char" else " "


def detokenize(tokens: Sequence[str], level: str) -> str:
    """Tokens back into text (at word level the original spacing is not restored: one space between
    tokens)."""
    return joiner(level).join(tokens)


class Tokenizer:
    """Normalizes and tokenizes strings with tensorflow-text ops.

    Args:
        config: a :class:`TokenizerConfig` (or a dict accepted by ``TokenizerConfig.from_dict``).

    Call arguments of :meth:`tokenize`:
        texts: 1-D ``tf.string`` tensor (or anything convertible to one) of valid UTF-8 strings.

    Returns a ``tf.RaggedTensor`` of token strings, shape ``[batch, (tokens)]``. Graph-safe: usable
    inside ``tf.function``, ``tf.data`` and Keras layers.

    Example:

    >>> Tokenizer(TokenizerConfig(level="char")).tokenize_py("ab c")
    ['a', 'b', ' ', 'c']
    """

    def __init__(self, config: TokenizerConfig | dict[str, Any] | None = None):
        if config is None:
            config = TokenizerConfig()
        elif isinstance(config, dict):
            config = TokenizerConfig.from_dict(config)
        self.config = config
        self._splitter = None

    # TF objects are made lazily so that a Tokenizer pickles cheaply (Beam) and is created where used.
    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])

    def __repr__(self) -> str:
        return f"Tokenizer({self.config!r})"

    def _word_splitter(self):
        if self._splitter is None:
            if self.config.split == "whitespace":
                self._splitter = tf_text.WhitespaceTokenizer()
            else:
                self._splitter = tf_text.UnicodeScriptTokenizer()
        return self._splitter

    def normalize(self, texts) -> tf.Tensor:
        """Case folding (if ``lowercase``) then Unicode normalization, on a string tensor of any shape."""
        texts = tf.convert_to_tensor(texts, dtype=tf.string)
        if self.config.lowercase:
            texts = tf_text.case_fold_utf8(texts)
        if self.config.normalization != "none":
            texts = tf_text.normalize_utf8(texts, self.config.normalization)
        return texts

    def tokenize(self, texts) -> tf.RaggedTensor:
        """Normalizes and splits a 1-D string tensor; returns a ``[batch, (tokens)]`` RaggedTensor."""
        texts = tf.convert_to_tensor(texts, dtype=tf.string)
        if texts.shape.rank is not None and texts.shape.rank != 1:
            raise ValueError(f"Tokenizer.tokenize expects a 1-D string tensor, got shape {texts.shape}")
        texts = self.normalize(texts)
        if self.config.level == "char":
            return tf.strings.unicode_split(texts, "UTF-8")
        return self._word_splitter().tokenize(texts)

    def tokenize_batch_py(self, texts: Sequence[str]) -> list[list[str]]:
        """Tokenizes a list of Python strings in one (eager) TensorFlow call; what the Beam job uses.

        Eager on purpose: for batches of a few thousand lines it is as fast as a ``tf.function``, and
        it saves the seconds a first trace of the unicode_script tokenizer takes.
        """
        if not texts:
            return []
        ragged = self.tokenize(tf.constant(list(texts), dtype=tf.string))
        return [[t.decode("utf-8") for t in row] for row in ragged.to_list()]

    def normalize_batch_py(self, texts: Sequence[str]) -> list[str]:
        """Normalizes a list of Python strings (case folding, Unicode form) in one TensorFlow call.

        For pre-tokenized input (tagging corpora): each token is normalized like the text the
        exported model tokenizes, without being split.
        """
        if not texts:
            return []
        return [t.decode("utf-8") for t in self.normalize(tf.constant(list(texts), dtype=tf.string)).numpy().tolist()]

    def tokenize_py(self, text: str) -> list[str]:
        """Tokenizes one Python string with the same ops as :meth:`tokenize`."""
        return self.tokenize_batch_py([text])[0]

    def detokenize(self, tokens: Sequence[str]) -> str:
        """Tokens back into text: :func:`detokenize` at this tokenizer's level."""
        return detokenize(tokens, self.config.level)
