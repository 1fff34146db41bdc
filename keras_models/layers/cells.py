"""Recurrent cells written from the textbook equations.

Three cells, interchangeable wherever a cell is taken:

- `SimpleRNNCell`: the Elman network, `h_t = act(x_t W + h_{t-1} U + b)`.
- `LSTMCell`: Hochreiter & Schmidhuber with a forget gate (Gers et al.),
  gate order i, f, c, o as in Keras so that weights can be copied.
- `GRUCell`: Cho et al. (2014), the candidate computed from the *reset*
  hidden state (Keras `GRUCell(reset_after=False)`), gate order z, r, h.

Every cell splits its work in two so that a layer can hoist the input half
out of the time loop (see `keras_models.layers.recurrent.Recurrent`):

- `project_inputs(inputs)`: `[..., D] -> [..., gates * units]`, the input
  kernel and the bias, one matmul for all time steps;
- `step(projected_t, states, training=False, recurrent_mask=None)`: only the
  recurrent part of one time step.

`call(inputs, states, training=False)` is `step(project_inputs(inputs))`, so
the cells also work inside `keras.layers.RNN` and
`keras.layers.Bidirectional(keras.layers.RNN(cell))`.

Dropout. `dropout` drops inputs and `recurrent_dropout` drops the hidden
state where it enters the recurrent matmul (variational dropout, Gal &
Ghahramani 2016: one mask per sequence, the same at every step). The masks
are made by `get_dropout_masks()`; `Recurrent` makes them once per call,
outside its loop, and passes the recurrent mask to every `step`. Nothing is
cached on the cell, so there is nothing to reset between batches. Driven by
`keras.layers.RNN` (which only knows Keras' private dropout mixin), `call`
has no per-sequence mask to use and draws a fresh mask at every step: use
`Recurrent` for variational dropout.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["SimpleRNNCell", "LSTMCell", "GRUCell", "CELL_NAMES", "get_cell", "model_cell_arguments"]


def _as_list(states):
    if isinstance(states, (list, tuple)):
        return list(states)
    return [states]


class _CellBase(keras.layers.Layer):
    """What the cells really share: the kernel shapes, initializers, dropout
    masks, the input projection and the config.

    A subclass sets `num_gates` (G) and writes `step()`. The weights are
    `kernel [D, G*units]`, `recurrent_kernel [units, G*units]` and
    `bias [G*units]`, the layout of Keras' built-in cells.
    """

    num_gates = 1

    def __init__(
        self,
        units,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(units, int) or units <= 0:
            raise ValueError(f"`units` must be a positive int, got {units!r}.")
        for name, rate in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
            if not 0.0 <= float(rate) < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {rate!r}.")
        self.units = units
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.dropout = float(dropout)
        self.recurrent_dropout = float(recurrent_dropout)
        self.seed = seed
        # Only cells that drop anything carry a seed state variable.
        self.seed_generator = (
            keras.random.SeedGenerator(seed, name="seed_generator")
            if (self.dropout > 0 or self.recurrent_dropout > 0)
            else None
        )

    # -- sizes --------------------------------------------------------------
    @property
    def state_size(self):
        return [self.units]

    @property
    def output_size(self):
        return self.units

    # -- weights ------------------------------------------------------------
    def _bias_initializer_fn(self):
        return self.bias_initializer

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                f"{type(self).__name__} needs a known last input dimension, got {input_shape}."
            )
        gates = self.num_gates * self.units
        self.kernel = self.add_weight(
            shape=(input_dim, gates), initializer=self.kernel_initializer, name="kernel"
        )
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, gates),
            initializer=self.recurrent_initializer,
            name="recurrent_kernel",
        )
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(gates,), initializer=self._bias_initializer_fn(), name="bias"
            )
        else:
            self.bias = None

    def get_initial_state(self, batch_size=None):
        return [
            ops.zeros((batch_size, size), dtype=self.compute_dtype) for size in self.state_size
        ]

    # -- the split used by the fast layer -------------------------------------
    def project_inputs(self, inputs):
        """Input kernel and bias for any number of leading axes.

        Args:
            inputs: `[..., D]` tensor (for example `[batch, time, D]`).

        Returns:
            `[..., num_gates * units]`, computed as one `[N, D] x [D, G*units]`
            matmul.
        """
        inputs = ops.convert_to_tensor(inputs)
        kernel = self._read(self.kernel)
        if len(inputs.shape) == 2:
            z = ops.matmul(inputs, kernel)
        else:
            lead = ops.shape(inputs)[:-1]
            flat = ops.reshape(inputs, (-1, inputs.shape[-1]))
            z = ops.matmul(flat, kernel)
            z = ops.reshape(z, (*lead, self.num_gates * self.units))
        if self.use_bias:
            z = z + self._read(self.bias)
        return z

    def _read(self, variable):
        """``variable`` in the compute dtype: what a layer call's autocast gives, also when a public
        method (``project_inputs``, ``recurrent_weights``) is called directly under mixed precision."""
        return ops.cast(variable, self.compute_dtype)

    def recurrent_weights(self):
        """The recurrent weights as `step` uses them, read (and sliced) once.

        A layer calls this once outside its time loop and passes the result
        to every `step(..., weights=...)`, so that the variable reads, casts
        and slices (and their gradients) are not repeated per step.
        """
        return (self._read(self.recurrent_kernel),)

    def step(self, projected_t, states, training=False, recurrent_mask=None, weights=None):
        """The recurrent part of one time step.

        Args:
            projected_t: `[batch, num_gates * units]`, `project_inputs` of the
                inputs of this step.
            states: List of `[batch, units]` tensors (see `state_size`).
            training: Python bool; with `recurrent_dropout` and no
                `recurrent_mask`, draws a fresh mask for this step.
            recurrent_mask: Optional `[batch, units]` dropout mask for the
                hidden state entering the recurrent matmul (the same at every
                step of a sequence: variational dropout).
            weights: Optional result of `recurrent_weights()`.

        Returns:
            `(output, new_states)`.
        """
        raise NotImplementedError

    # -- dropout ------------------------------------------------------------
    def get_dropout_masks(self, batch_size, training=False, dtype=None):
        """Make one input mask and one recurrent mask for a whole sequence.

        Args:
            batch_size: int or scalar tensor.
            training: Python bool; no masks outside training.
            dtype: mask dtype (default: the compute dtype).

        Returns:
            `(input_mask, recurrent_mask)`: `[batch, D]` and `[batch, units]`
            tensors of `0` and `1 / (1 - rate)`, or `None` where that dropout
            is off.
        """
        dtype = dtype or self.compute_dtype
        input_mask = recurrent_mask = None
        if training and self.dropout > 0:
            ones = ops.ones((batch_size, self.kernel.shape[0]), dtype=dtype)
            input_mask = keras.random.dropout(ones, self.dropout, seed=self.seed_generator)
        if training and self.recurrent_dropout > 0:
            ones = ops.ones((batch_size, self.units), dtype=dtype)
            recurrent_mask = keras.random.dropout(
                ones, self.recurrent_dropout, seed=self.seed_generator
            )
        return input_mask, recurrent_mask

    def _recurrent_input(self, h, training, recurrent_mask):
        if recurrent_mask is not None:
            return h * recurrent_mask
        if training and self.recurrent_dropout > 0:
            # No per-sequence mask given (e.g. driven by keras.layers.RNN).
            return keras.random.dropout(h, self.recurrent_dropout, seed=self.seed_generator)
        return h

    def call(self, inputs, states, training=False):
        states = _as_list(states)
        if training and self.dropout > 0:
            inputs = keras.random.dropout(inputs, self.dropout, seed=self.seed_generator)
        return self.step(self.project_inputs(inputs), states, training=training)

    # -- config ---------------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "recurrent_initializer": keras.initializers.serialize(
                    self.recurrent_initializer
                ),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "dropout": self.dropout,
                "recurrent_dropout": self.recurrent_dropout,
                "seed": self.seed,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="rnnflow")
class SimpleRNNCell(_CellBase):
    """Elman recurrent cell.

    `h_t = act(x_t W + h_{t-1} U + b)`; the output is `h_t`.

    Args:
        units: Positive int, size of the hidden state.
        activation: `"tanh"` (default) or `"relu"` (any Keras activation name
            is accepted).
        use_bias: Whether to add the bias `b`.
        kernel_initializer: Initializer of the input kernel `W` `[D, units]`.
        recurrent_initializer: Initializer of the recurrent kernel `U`
            `[units, units]` (default orthogonal).
        bias_initializer: Initializer of `b`.
        dropout: Rate of input dropout, in `[0, 1)`.
        recurrent_dropout: Rate of variational dropout on the hidden state
            entering the recurrent matmul, in `[0, 1)`.
        seed: Seed of the dropout masks.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `[batch, D]` inputs of one time step.
        states: List with one `[batch, units]` tensor, the previous `h`.
        training: Python bool, enables dropout.

    Returns `(h_t, [h_t])`.

    Example:

    >>> cell = SimpleRNNCell(4, activation="relu")
    >>> layer = keras.layers.RNN(cell, return_sequences=True)
    >>> layer(np.zeros((2, 5, 3), "float32")).shape
    TensorShape([2, 5, 4])
    """

    num_gates = 1

    def __init__(self, units, activation="tanh", **kwargs):
        super().__init__(units, **kwargs)
        self.activation = keras.activations.get(activation)

    def step(self, projected_t, states, training=False, recurrent_mask=None, weights=None):
        (u,) = weights if weights is not None else self.recurrent_weights()
        h = _as_list(states)[0]
        h_in = self._recurrent_input(h, training, recurrent_mask)
        h_new = self.activation(projected_t + ops.matmul(h_in, u))
        return h_new, [h_new]

    def get_config(self):
        config = super().get_config()
        config["activation"] = keras.activations.serialize(self.activation)
        return config


@keras.saving.register_keras_serializable(package="rnnflow")
class LSTMCell(_CellBase):
    """Long short-term memory cell with a forget gate.

    With `z = x_t W + h_{t-1} U + b` split into `[z_i, z_f, z_c, z_o]`::

        i = sigmoid(z_i)   f = sigmoid(z_f)   o = sigmoid(z_o)
        c_t = f * c_{t-1} + i * tanh(z_c)
        h_t = o * tanh(c_t)

    The gate order i, f, c, o is Keras', so weights copy both ways.

    Args:
        units: Positive int, size of `h` and `c`.
        unit_forget_bias: If True (default), the forget-gate bias starts at 1
            (Jozefowicz et al. 2015) and the other biases use
            `bias_initializer`.
        use_bias: Whether to add the bias `b`.
        kernel_initializer: Initializer of `W` `[D, 4*units]`.
        recurrent_initializer: Initializer of `U` `[units, 4*units]`
            (default orthogonal).
        bias_initializer: Initializer of `b` `[4*units]`.
        dropout: Rate of input dropout, in `[0, 1)`.
        recurrent_dropout: Rate of variational dropout on `h_{t-1}` entering
            the recurrent matmul, in `[0, 1)`.
        seed: Seed of the dropout masks.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `[batch, D]` inputs of one time step.
        states: `[h, c]`, two `[batch, units]` tensors.
        training: Python bool, enables dropout.

    Returns `(h_t, [h_t, c_t])`.

    Example:

    >>> cell = LSTMCell(4)
    >>> layer = Recurrent(cell, return_state=True)
    >>> out, h, c = layer(np.zeros((2, 5, 3), "float32"))
    """

    num_gates = 4

    def __init__(self, units, unit_forget_bias=True, **kwargs):
        super().__init__(units, **kwargs)
        self.unit_forget_bias = unit_forget_bias

    @property
    def state_size(self):
        return [self.units, self.units]

    def _bias_initializer_fn(self):
        if not self.unit_forget_bias:
            return self.bias_initializer
        units, init = self.units, self.bias_initializer

        def bias_initializer(shape, dtype=None):
            return ops.concatenate(
                [
                    init((units,), dtype=dtype),
                    ops.ones((units,), dtype=dtype),
                    init((2 * units,), dtype=dtype),
                ]
            )

        return bias_initializer

    def step(self, projected_t, states, training=False, recurrent_mask=None, weights=None):
        (u,) = weights if weights is not None else self.recurrent_weights()
        h, c = _as_list(states)
        h_in = self._recurrent_input(h, training, recurrent_mask)
        z = projected_t + ops.matmul(h_in, u)
        z_i, z_f, z_c, z_o = ops.split(z, 4, axis=-1)
        c_new = ops.sigmoid(z_f) * c + ops.sigmoid(z_i) * ops.tanh(z_c)
        h_new = ops.sigmoid(z_o) * ops.tanh(c_new)
        return h_new, [h_new, c_new]

    def get_config(self):
        config = super().get_config()
        config["unit_forget_bias"] = self.unit_forget_bias
        return config


@keras.saving.register_keras_serializable(package="rnnflow")
class GRUCell(_CellBase):
    """Gated recurrent unit (Cho et al. 2014), reset applied before the matmul.

    With the input projection `x_t W + b` split into `[x_z, x_r, x_h]` and
    `U = [U_z, U_r, U_h]`::

        z = sigmoid(x_z + h_{t-1} U_z)          # update gate
        r = sigmoid(x_r + h_{t-1} U_r)          # reset gate
        g = tanh(x_h + (r * h_{t-1}) U_h)       # candidate from the reset state
        h_t = z * h_{t-1} + (1 - z) * g

    These are the semantics of Keras `GRUCell(reset_after=False)`, gate order
    z, r, h, so weights copy both ways.

    Args:
        units: Positive int, size of `h`.
        use_bias: Whether to add the bias `b`.
        kernel_initializer: Initializer of `W` `[D, 3*units]`.
        recurrent_initializer: Initializer of `U` `[units, 3*units]`
            (default orthogonal).
        bias_initializer: Initializer of `b` `[3*units]`.
        dropout: Rate of input dropout, in `[0, 1)`.
        recurrent_dropout: Rate of variational dropout on `h_{t-1}` entering
            the recurrent matmuls, in `[0, 1)`.
        seed: Seed of the dropout masks.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `[batch, D]` inputs of one time step.
        states: List with one `[batch, units]` tensor, the previous `h`.
        training: Python bool, enables dropout.

    Returns `(h_t, [h_t])`.

    Example:

    >>> layer = keras.layers.Bidirectional(Recurrent(GRUCell(4)))
    >>> layer(np.zeros((2, 5, 3), "float32")).shape
    TensorShape([2, 5, 8])
    """

    num_gates = 3

    def recurrent_weights(self):
        u = self._read(self.recurrent_kernel)
        return u[:, : 2 * self.units], u[:, 2 * self.units :]  # U_zr, U_h

    def step(self, projected_t, states, training=False, recurrent_mask=None, weights=None):
        u_zr, u_h = weights if weights is not None else self.recurrent_weights()
        h = _as_list(states)[0]
        h_in = self._recurrent_input(h, training, recurrent_mask)
        x_zr, x_h = ops.split(projected_t, [2 * self.units], axis=-1)
        # z and r in one sigmoid: they are adjacent in the z, r, h layout.
        z, r = ops.split(ops.sigmoid(x_zr + ops.matmul(h_in, u_zr)), 2, axis=-1)
        g = ops.tanh(x_h + ops.matmul(r * h_in, u_h))
        h_new = g + z * (h - g)  # = z * h + (1 - z) * g
        return h_new, [h_new]


_CELLS = {"rnn": SimpleRNNCell, "lstm": LSTMCell, "gru": GRUCell}
# The cell names a model (or a config) may choose from, from the registry above.
CELL_NAMES = tuple(_CELLS)


def get_cell(name_or_cell, units=None, **kwargs):
    """Return a cell from its name, or the cell itself.

    Args:
        name_or_cell: `"rnn"` (Elman), `"lstm"`, `"gru"` (any case), or an
            already made cell (returned unchanged; then `units` and `kwargs`
            must not be given).
        units: Size of the hidden state (required with a name).
        **kwargs: Further cell arguments (`dropout`, `activation`, ...).

    Example:

    >>> cell = get_cell("gru", 4, recurrent_dropout=0.25)
    >>> get_cell(cell) is cell
    True
    """
    if isinstance(name_or_cell, str):
        key = name_or_cell.lower()
        if key not in _CELLS:
            raise ValueError(
                f"Unknown cell {name_or_cell!r}; expected one of {sorted(_CELLS)} "
                "or a cell instance."
            )
        if units is None:
            raise ValueError(f"`units` is required to make a {key!r} cell.")
        return _CELLS[key](units, **kwargs)
    if hasattr(name_or_cell, "state_size") and hasattr(name_or_cell, "call"):
        if units is not None and getattr(name_or_cell, "units", units) != units:
            raise ValueError(
                f"Got a cell with units={name_or_cell.units} and units={units}."
            )
        if kwargs:
            raise ValueError(f"Cell arguments {sorted(kwargs)} given with a cell instance.")
        return name_or_cell
    raise TypeError(f"Expected a cell name or a cell instance, got {name_or_cell!r}.")


def model_cell_arguments(cell, recurrent_dropout=0.0, activation="tanh"):
    """The cell arguments of a model that names its cell: checks the name, applies the Elman special case.

    Every model takes its cell by name (so that its config, and so the saved model, is plain data)
    and passes the same two cell arguments to all of its cells; ``activation`` only means
    something to the Elman cell and is left out for the others.

    Args:
        cell: ``"lstm"``, ``"gru"`` or ``"rnn"`` (any case).
        recurrent_dropout: variational dropout rate on the recurrent state.
        activation: the Elman cell's activation, ``"tanh"`` or ``"relu"`` (ignored by LSTM/GRU).

    Returns:
        the keyword arguments for ``get_cell(cell, units, ...)``.

    Raises:
        TypeError: ``cell`` is not a name (a cell instance cannot be saved in a model's config).
        ValueError: ``cell`` is not one of :data:`CELL_NAMES`.

    Example:

    >>> model_cell_arguments("rnn", recurrent_dropout=0.1, activation="relu")
    {'recurrent_dropout': 0.1, 'activation': 'relu'}
    >>> model_cell_arguments("gru", activation="relu")
    {'recurrent_dropout': 0.0}
    """
    if not isinstance(cell, str):
        names = ", ".join(repr(name) for name in CELL_NAMES)
        raise TypeError(f"cell must be one of {names} so that the model can be saved; got {cell!r}")
    if cell.lower() not in _CELLS:
        raise ValueError(f"Unknown cell {cell!r}; expected one of {sorted(_CELLS)}.")
    kwargs = {"recurrent_dropout": recurrent_dropout}
    if cell.lower() == "rnn":
        kwargs["activation"] = activation
    return kwargs
