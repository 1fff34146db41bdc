"""Models that take raw strings: tokenization inside the graph, loadable with ``keras.saving`` and MLflow.

:class:`TextToIds` runs the same tokenizer the prepare job used (``preprocessing.tokenizers``) and a
``keras.layers.StringLookup`` over the prepared vocabulary, so an exported model needs nothing but
the ``.keras`` file and rnnflow installed. :class:`LanguageModelScorer` wraps a trained language model:
raw sentences in, per-sentence log-probability, token count and perplexity out.
:class:`SequenceTaggerExport` (raw sentences → tokens and tags) and :class:`TextClassifierExport`
(raw texts → label and class probabilities) do the same for taggers and classifiers.
"""

from __future__ import annotations

import keras
import tensorflow as tf

import keras_models.models.classifier
import keras_models.models.language_model
import keras_models.models.seq2seq
import keras_models.models.tagger
from preprocessing.tokenizers import Tokenizer
from preprocessing.vocab import EOS_ID, PAD, RESERVED_TOKENS, UNK

# The wrapped models' classes must be registered before a saved export is loaded.
_WRAPPED_MODEL_MODULES = (
    keras_models.models.classifier,
    keras_models.models.language_model,
    keras_models.models.seq2seq,
    keras_models.models.tagger,
)


@keras.saving.register_keras_serializable(package="rnnflow")
class TextToIds(keras.layers.Layer):
    """Raw strings → padded token ids (``<pad>`` = 0), in the graph.

    Args:
        tokenizer: the tokenizer config as a dict (``TokenizerConfig.to_dict()``).
        vocabulary: every token in id order, reserved tokens first (``Vocabulary.tokens``).
        append_eos: end every sequence with ``<eos>`` (what a language model predicts last).
        **kwargs: passed to ``keras.layers.Layer``.

    Call arguments:
        texts: ``tf.string`` tensor ``[batch]`` (or ``[batch, 1]``).

    Returns int64 ids ``[batch, max_tokens]``.

    Example:

    >>> layer = TextToIds({"level": "word"}, ["<pad>", "<unk>", "<bos>", "<eos>", "a"])
    >>> layer(tf.constant(["a b a"])).numpy().tolist()
    [[4, 1, 4, 3]]
    """

    def __init__(self, tokenizer, vocabulary, append_eos=True, **kwargs):
        super().__init__(**kwargs)
        if tuple(vocabulary[: len(RESERVED_TOKENS)]) != RESERVED_TOKENS:
            raise ValueError(f"the vocabulary must start with {list(RESERVED_TOKENS)}")
        self.tokenizer = dict(tokenizer)
        self.vocabulary = list(vocabulary)
        self.append_eos = append_eos
        self._tokenizer = Tokenizer(self.tokenizer)
        # StringLookup puts the mask token at 0 and the OOV token at 1: exactly <pad> and <unk>.
        self.lookup = keras.layers.StringLookup(
            vocabulary=self.vocabulary[2:], mask_token=PAD, oov_token=UNK, num_oov_indices=1, output_mode="int"
        )

    def build(self, input_shape=None):
        self.built = True  # the StringLookup table is made in the constructor; nothing to build

    def tokens(self, texts) -> tf.RaggedTensor:
        """The token strings ``[batch, (tokens)]`` that :meth:`call` looks up."""
        texts = tf.reshape(tf.convert_to_tensor(texts, tf.string), [-1])
        return self._tokenizer.tokenize(texts)

    def call(self, texts):
        texts = tf.reshape(tf.convert_to_tensor(texts, tf.string), [-1])
        tokens = self._tokenizer.tokenize(texts)
        ids = tf.ragged.map_flat_values(self.lookup, tokens)
        if self.append_eos:
            eos = tf.fill([tf.shape(texts)[0], 1], tf.constant(EOS_ID, ids.dtype))
            ids = tf.concat([ids, eos], axis=1)
        return ids.to_tensor(default_value=0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None)

    def get_config(self):
        config = super().get_config()
        config.update({"tokenizer": self.tokenizer, "vocabulary": self.vocabulary, "append_eos": self.append_eos})
        return config


class _Wrapper(keras.Model):
    """A model around trained layers: ``WRAPPED`` names the constructor arguments that are Keras
    objects (serialized with their own configs); the other arguments are plain values."""

    WRAPPED: tuple[str, ...] = ()
    PLAIN: tuple[str, ...] = ()

    def get_config(self):
        config = super().get_config()
        config.update({k: keras.saving.serialize_keras_object(getattr(self, k)) for k in self.WRAPPED})
        config.update({k: getattr(self, k) for k in self.PLAIN})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for k in cls.WRAPPED:
            config[k] = keras.saving.deserialize_keras_object(config[k])
        return cls(**config)


@keras.saving.register_keras_serializable(package="rnnflow")
class LanguageModelScorer(_Wrapper):
    """Scores raw sentences with a trained language model.

    Each sentence is tokenized, ``<eos>`` is appended, and the model reads it after an ``<eos>`` (the
    sentence boundary it saw in training); padding does not count.

    Args:
        text_to_ids: a :class:`TextToIds` layer.
        language_model: a trained ``RNNLanguageModel``.
        **kwargs: passed to ``keras.Model``.

    Call arguments:
        texts: ``tf.string`` tensor ``[batch]``.

    Returns a dict: ``log_prob`` (natural log, summed over tokens), ``num_tokens``, ``perplexity``.

    Example:

    >>> scorer = LanguageModelScorer(TextToIds(tok_cfg, vocab.tokens), lm)  # doctest: +SKIP
    >>> scorer(tf.constant(["the cat sat"]))["perplexity"]  # doctest: +SKIP
    """

    WRAPPED = ("text_to_ids", "language_model")

    def __init__(self, text_to_ids, language_model, **kwargs):
        super().__init__(**kwargs)
        self.text_to_ids = text_to_ids
        self.language_model = language_model

    def build(self, input_shape=None):
        self.text_to_ids.build(input_shape)
        if not self.language_model.built:
            self.language_model.build((None, None))
        self.built = True

    def call(self, texts):
        ids = self.text_to_ids(texts)
        ids = tf.cast(ids, tf.int32)
        batch = tf.shape(ids)[0]
        inputs = tf.concat([tf.fill([batch, 1], EOS_ID), ids[:, :-1]], axis=1)
        logits, _ = self.language_model.forward(inputs, training=False)
        log_probs = -keras.losses.sparse_categorical_crossentropy(ids, logits, from_logits=True)
        mask = tf.cast(ids != 0, log_probs.dtype)
        log_prob = tf.reduce_sum(log_probs * mask, axis=1)
        count = tf.reduce_sum(mask, axis=1)
        return {"log_prob": log_prob, "num_tokens": count, "perplexity": tf.exp(-log_prob / tf.maximum(count, 1.0))}

    @property
    def vocabulary(self) -> list[str]:
        return self.text_to_ids.vocabulary

    @property
    def tokenizer(self) -> Tokenizer:
        return self.text_to_ids._tokenizer


def _at_least_one_column(t: tf.Tensor) -> tf.Tensor:
    """Pads ``[batch, time, ...]`` with zeros to ``time >= 1`` (an empty input still makes a batch)."""
    pad = tf.maximum(0, 1 - tf.shape(t)[1])
    paddings = tf.concat([[[0, 0], [0, pad]], tf.zeros([tf.rank(t) - 2, 2], tf.int32)], axis=0)
    return tf.pad(t, paddings)


@keras.saving.register_keras_serializable(package="rnnflow")
class SequenceTaggerExport(_Wrapper):
    """Tags raw sentences with a trained ``RNNTagger``: tokenization (and character ids) in the graph.

    Args:
        text_to_ids: a :class:`TextToIds` layer with ``append_eos=False``.
        tagger: a trained ``keras_models.models.tagger.RNNTagger``.
        tag_names: tag strings in id order.
        char_vocabulary: the character vocabulary (reserved tokens first) when the tagger reads
            characters, else ``None``.
        max_chars: characters of a token the character encoder reads (as in training).
        **kwargs: passed to ``keras.Model``.

    Call arguments:
        texts: ``tf.string`` tensor ``[batch]``.

    Returns a dict: ``tokens`` and ``tags`` (``tf.string [batch, max_tokens]``, padded with ``""``)
    and ``length`` (``int32 [batch]``, tokens per sentence).
    """

    WRAPPED = ("text_to_ids", "tagger")
    PLAIN = ("tag_names", "char_vocabulary", "max_chars")

    def __init__(self, text_to_ids, tagger, tag_names, char_vocabulary=None, max_chars=20, **kwargs):
        super().__init__(**kwargs)
        self.text_to_ids = text_to_ids
        self.tagger = tagger
        self.tag_names = list(tag_names)
        self.char_vocabulary = list(char_vocabulary) if char_vocabulary else None
        self.max_chars = int(max_chars)
        self._tag_table = tf.constant(self.tag_names)
        self.char_lookup = None
        if self.char_vocabulary:
            if tuple(self.char_vocabulary[: len(RESERVED_TOKENS)]) != RESERVED_TOKENS:
                raise ValueError(f"the character vocabulary must start with {list(RESERVED_TOKENS)}")
            self.char_lookup = keras.layers.StringLookup(
                vocabulary=self.char_vocabulary[2:], mask_token=PAD, oov_token=UNK, num_oov_indices=1,
                output_mode="int",
            )

    def build(self, input_shape=None):
        self.built = True  # the tagger is trained and built; the lookups are made in the constructor

    def call(self, texts):
        tokens = self.text_to_ids.tokens(texts)
        ids = tf.cast(_at_least_one_column(tf.ragged.map_flat_values(self.text_to_ids.lookup, tokens)
                                           .to_tensor(default_value=0)), tf.int32)
        inputs = ids
        if self.char_lookup is not None:
            chars = tf.strings.unicode_split(tokens, "UTF-8")[:, :, : self.max_chars]
            chars = tf.ragged.map_flat_values(self.char_lookup, chars).to_tensor(default_value=0)
            inputs = {"ids": ids, "chars": tf.cast(_at_least_one_column(chars), tf.int32)}
        tag_ids = self.tagger.predict_tags(inputs)
        mask = ids != 0
        tags = tf.where(mask, tf.gather(self._tag_table, tag_ids), "")
        return {
            "tokens": _at_least_one_column(tokens.to_tensor(default_value="")),
            "tags": tags,
            "length": tf.cast(tokens.row_lengths(), tf.int32),
        }


@keras.saving.register_keras_serializable(package="rnnflow")
class TextClassifierExport(_Wrapper):
    """Classifies raw texts with a trained ``RNNClassifier``; tokenization in the graph.

    Args:
        text_to_ids: a :class:`TextToIds` layer with ``append_eos=False``.
        classifier: a trained ``keras_models.models.classifier.RNNClassifier``.
        label_names: class names in id order.
        **kwargs: passed to ``keras.Model``.

    Call arguments:
        texts: ``tf.string`` tensor ``[batch]``.

    Returns a dict: ``label`` (``tf.string [batch]``) and ``probabilities`` (``float32 [batch, classes]``,
    in the order of ``label_names``).
    """

    WRAPPED = ("text_to_ids", "classifier")
    PLAIN = ("label_names",)

    def __init__(self, text_to_ids, classifier, label_names, **kwargs):
        super().__init__(**kwargs)
        self.text_to_ids = text_to_ids
        self.classifier = classifier
        self.label_names = list(label_names)
        self._label_table = tf.constant(self.label_names)

    def build(self, input_shape=None):
        self.built = True

    def call(self, texts):
        ids = tf.cast(_at_least_one_column(self.text_to_ids(texts)), tf.int32)
        probs = tf.nn.softmax(tf.cast(self.classifier(ids, training=False), tf.float32), axis=-1)
        return {"label": tf.gather(self._label_table, tf.argmax(probs, axis=-1)), "probabilities": probs}


@keras.saving.register_keras_serializable(package="rnnflow")
class Seq2SeqExport(_Wrapper):
    """Transduces raw strings with a trained ``Seq2SeqModel``: source tokenization in the graph, greedy
    or beam search, outputs as strings.

    Args:
        text_to_ids: a :class:`TextToIds` over the source vocabulary, ``append_eos=False``.
        seq2seq: a trained ``keras_models.models.seq2seq.Seq2SeqModel``.
        target_vocab: target tokens in id order (reserved first).
        beam_size: 1 = greedy search.
        max_length: the longest output in tokens.
        length_penalty: beam search's length normalization exponent.
        target_level: ``"word"`` (tokens joined by spaces) or ``"char"`` (joined without).
        **kwargs: passed to ``keras.Model``.

    Call arguments:
        texts: ``tf.string`` tensor ``[batch]``.

    Returns a dict: ``output`` (``tf.string [batch]``, the best hypothesis), ``hypotheses``
    (``tf.string [batch, beam_size]``, best first) and ``scores`` (``float32 [batch, beam_size]``,
    length-normalized log-probabilities).
    """

    WRAPPED = ("text_to_ids", "seq2seq")
    PLAIN = ("target_vocab", "beam_size", "max_length", "length_penalty", "target_level")

    def __init__(self, text_to_ids, seq2seq, target_vocab, beam_size=1, max_length=50, length_penalty=1.0,
                 target_level="word", **kwargs):
        super().__init__(**kwargs)
        self.text_to_ids = text_to_ids
        self.seq2seq = seq2seq
        self.target_vocab = list(target_vocab)
        self.beam_size = int(beam_size)
        self.max_length = int(max_length)
        self.length_penalty = float(length_penalty)
        self.target_level = target_level
        # reserved tokens print as nothing: <pad> pads, <eos> ends, <bos>/<unk> are never wanted in text
        self._table = tf.constant(["" if t in RESERVED_TOKENS else t for t in self.target_vocab])

    def build(self, input_shape=None):
        self.built = True

    def search(self, texts, beam_size=None):
        """``(tokens [B, K, L], scores [B, K])`` for raw strings (``K`` = ``beam_size``)."""
        from keras_models.decoding import beam_search
        from preprocessing.vocab import BOS_ID

        ids = tf.cast(_at_least_one_column(self.text_to_ids(texts)), tf.int32)
        state = self.seq2seq.search_state(self.seq2seq.encode(ids, training=False))
        tokens, scores, _ = beam_search(self.seq2seq.step_fn(), state, beam_size=beam_size or self.beam_size,
                                        bos_id=BOS_ID, eos_id=EOS_ID, max_length=self.max_length,
                                        length_penalty=self.length_penalty)
        return tokens, scores

    def call(self, texts):
        tokens, scores = self.search(texts)
        pieces = tf.gather(self._table, tokens)
        joined = tf.strings.reduce_join(pieces, axis=-1, separator=" " if self.target_level != "char" else "")
        if self.target_level != "char":  # collapse the separators around the empty reserved tokens
            joined = tf.strings.strip(tf.strings.regex_replace(joined, " +", " "))
        return {"output": joined[:, 0], "hypotheses": joined, "scores": scores}
