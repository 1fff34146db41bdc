"""Training speed of our recurrent layer against Keras' built-in layers.

Trains the same small word language model,

    Embedding(vocab, hidden) -> recurrent layer -> Dense(vocab) (softmax
    cross-entropy on the logits)

once with `Recurrent(LSTMCell)` / `Recurrent(GRUCell)` from `keras_models`
and once with `keras.layers.LSTM` / `keras.layers.GRU`, same shapes, same
optimizer (SGD), on synthetic random token ids drawn with a fixed seed,
each with `jit_compile` off and on, all in ONE process. Every model is built
and warmed up first (tracing / XLA compilation and one untimed round-robin
round excluded); then timed
`model.fit` calls run round-robin over the models, `--repeats` rounds of
`--steps` steps, so that a disturbance on a shared machine hits all models
alike. A callback times every training step; tokens/s is
`batch_size * bptt / median step time` (the mean is shown too). The table
shows tokens/s per (cell, layer, jit) and the ratio ours / built-in.

Note: `keras.layers.GRU` is used with its default `reset_after=True`; our
GRUCell is the Cho et al. form (`reset_after=False`). Same shapes and matmul
sizes.

Example (2 CPU cores, about 1.5 minutes):

    python bench/cell_speed.py --steps 25 --repeats 4 --warmup 5 \
        --output bench/results/cell_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

# Let `python bench/cell_speed.py` find the repository packages.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=(
            "Tokens/s of a word LM trained with our Recurrent(LSTMCell/GRUCell) vs "
            "keras.layers.LSTM/GRU, jit_compile off and on, in one run."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--steps", type=int, default=25, help="timed training steps per model and round")
    add("--warmup", type=int, default=5,
        help="untimed steps per model before timing (tracing, XLA compilation)")
    add("--repeats", type=int, default=4,
        help="timed rounds, round-robin over the models (steps x repeats timed steps per model)")
    add("--batch-size", type=int, default=20, help="sequences per batch")
    add("--bptt", type=int, default=20, help="time steps per sequence (truncated BPTT length)")
    add("--hidden", type=int, default=200, help="embedding size and recurrent units")
    add("--vocab", type=int, default=10000, help="vocabulary size (softmax width)")
    add("--cells", default="lstm,gru", help="comma-separated cells: lstm, gru")
    add("--jit", default="off,on", help="comma-separated jit_compile settings: off, on")
    add("--seed", type=int, default=1234, help="seed of the synthetic data and weights")
    add("--output", default=None, help="write the results as JSON to this path")
    return parser.parse_args(argv)


def build_model(kind, cell_name, args, jit):
    import keras

    from keras_models.layers.cells import get_cell
    from keras_models.layers.recurrent import Recurrent

    keras.utils.set_random_seed(args.seed)
    if kind == "ours":
        layer = Recurrent(get_cell(cell_name, args.hidden), return_sequences=True)
    else:
        builtin = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[cell_name]
        layer = builtin(args.hidden, return_sequences=True)
    model = keras.Sequential(
        [
            keras.Input(shape=(args.bptt,), batch_size=args.batch_size, dtype="int32"),
            keras.layers.Embedding(args.vocab, args.hidden),
            layer,
            keras.layers.Dense(args.vocab),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=1.0, clipnorm=5.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )
    return model


def make_dataset(args):
    import tensorflow as tf

    rng = np.random.default_rng(args.seed)
    n = 64  # distinct batches, cycled
    ids = rng.integers(0, args.vocab, size=(n * args.batch_size, args.bptt + 1), dtype=np.int32)
    ds = tf.data.Dataset.from_tensor_slices((ids[:, :-1], ids[:, 1:]))
    return ds.batch(args.batch_size, drop_remainder=True).repeat().prefetch(2)


def _ms(seconds):
    return [round(1000 * t, 2) for t in seconds]


def main(argv=None):
    args = parse_args(argv)
    import keras
    import tensorflow as tf

    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    jits = [{"off": False, "on": True}[j.strip()] for j in args.jit.split(",") if j.strip()]
    dataset = make_dataset(args)

    configs = [(c, k, j) for c in cells for j in jits for k in ("ours", "keras")]

    class StepTimer(keras.callbacks.Callback):
        """Wall time of each training step inside `fit`."""

        def __init__(self):
            super().__init__()
            self.durations = []

        def on_train_batch_begin(self, batch, logs=None):
            self._t0 = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if logs and "loss" in logs:
                float(logs["loss"])  # waits for the step (matters on a GPU)
            self.durations.append(time.perf_counter() - self._t0)

    def timed_fit(model, steps):
        timer = StepTimer()
        model.fit(
            dataset, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False, callbacks=[timer]
        )
        return timer.durations

    models = {}
    for config in configs:
        cell_name, kind, jit = config
        model = build_model(kind, cell_name, args, jit)
        t0 = time.perf_counter()
        timed_fit(model, args.warmup)  # traces and compiles the train function
        print(
            f"warm-up {cell_name}/{kind}/jit={'on' if jit else 'off'}: "
            f"{time.perf_counter() - t0:.1f}s",
            flush=True,
        )
        models[config] = model

    # One untimed round-robin round: the first fit of a model after another
    # model was built or trained costs ~0.1-0.2 s more in its first step
    # (Keras / TF, all models alike); it happens only once per model.
    for config in configs:
        timed_fit(models[config], 1)

    step_times = {config: [] for config in configs}
    for r in range(args.repeats):
        for config in configs:
            step_times[config].extend(timed_fit(models[config], args.steps))
        print(f"round {r + 1}/{args.repeats} done", flush=True)

    tokens_per_step = args.batch_size * args.bptt
    rows = []
    for cell_name in cells:
        for jit in jits:
            med = {
                k: tokens_per_step / statistics.median(step_times[(cell_name, k, jit)])
                for k in ("ours", "keras")
            }
            mean = {
                k: tokens_per_step / statistics.fmean(step_times[(cell_name, k, jit)])
                for k in ("ours", "keras")
            }
            rows.append(
                {
                    "cell": cell_name,
                    "jit_compile": jit,
                    "ours_tokens_per_s": round(med["ours"], 1),
                    "keras_tokens_per_s": round(med["keras"], 1),
                    "ratio_ours_over_keras": round(med["ours"] / med["keras"], 3),
                    "ours_mean_tokens_per_s": round(mean["ours"], 1),
                    "keras_mean_tokens_per_s": round(mean["keras"], 1),
                    "ratio_mean": round(mean["ours"] / mean["keras"], 3),
                    "ours_step_ms": _ms(step_times[(cell_name, "ours", jit)]),
                    "keras_step_ms": _ms(step_times[(cell_name, "keras", jit)]),
                }
            )

    header = (
        f"{'cell':<5} {'jit':<4} {'ours tok/s':>11} {'keras tok/s':>12} {'ours/keras':>11}"
        f"   {'mean: ours':>10} {'keras':>7} {'ratio':>7}"
    )
    print()
    print(
        f"tokens/s from the median step time of {args.repeats} x {args.steps} timed steps "
        f"({args.batch_size}x{args.bptt} tokens each); mean step time on the right"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['cell']:<5} {'on' if row['jit_compile'] else 'off':<4} "
            f"{row['ours_tokens_per_s']:>11.0f} {row['keras_tokens_per_s']:>12.0f} "
            f"{row['ratio_ours_over_keras']:>10.2f}x"
            f"   {row['ours_mean_tokens_per_s']:>10.0f} {row['keras_mean_tokens_per_s']:>7.0f} "
            f"{row['ratio_mean']:>6.2f}x"
        )

    if args.output:
        result = {
            "benchmark": "cell_speed",
            "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
            "settings": vars(args),
            "tokens_per_step": tokens_per_step,
            "environment": {
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "python": platform.python_version(),
                "machine": platform.machine(),
                "cpu_count": os.cpu_count(),
                "devices": [d.name for d in tf.config.list_logical_devices()],
            },
            "rows": rows,
        }
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)
        print(f"\nwrote {args.output}")
    return rows


if __name__ == "__main__":
    main()
