"""rnnflow's models: a shared recurrent encoder backbone and one model per task.

- :mod:`keras_models.models.backbone`: :class:`RecurrentEncoder`, embedding + stacked (bi)recurrent
  layers + dropout, shared by the tagger, the classifier and the seq2seq encoder.
- :mod:`keras_models.models.language_model`: :class:`RNNLanguageModel`.
- :mod:`keras_models.models.tagger`: :class:`RNNTagger`.
- :mod:`keras_models.models.classifier`: :class:`RNNClassifier`.
- :mod:`keras_models.models.seq2seq`: :class:`Seq2SeqModel`.

Every model has the same loss contract, ``loss_sum(inputs, targets, training=None) -> (summed loss,
number of targets)`` as float32 scalars, which ``keras_models.training`` reads.
"""
