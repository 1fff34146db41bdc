"""rnnflow's Keras layers, each registered for saving under the package ``rnnflow``.

- :mod:`keras_models.layers.cells`: the recurrent cells (Elman, LSTM, GRU) and :func:`get_cell`.
- :mod:`keras_models.layers.recurrent`: :class:`Recurrent`, which runs a cell over a sequence, and
  :func:`bidirectional_recurrent`.
- :mod:`keras_models.layers.attention`: global attention scores (dot, bilinear, additive).
- :mod:`keras_models.layers.crf`: the linear-chain CRF.
- :mod:`keras_models.layers.pooling`: masked pooling over time.
"""
