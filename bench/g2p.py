"""CMUdict grapheme-to-phoneme benchmark: WER / PER on the test words, greedy and beam search, per
attention score, with training time and decoding speed.

Trains the config (``rnnflow train``: prepare → train → evaluate valid/test with greedy and beam
search), then times decoding of the test words with the exported model (raw strings in) greedily and
with the config's beam; records validation WER per epoch. Examples (docs/BENCHMARKS.md)::

    # the shipped configs: additive attention, 10 epochs
    .venv/bin/python bench/g2p.py configs/cmudict_g2p_nostress.yaml --output bench/results/g2p_nostress_additive.json
    .venv/bin/python bench/g2p.py configs/cmudict_g2p.yaml --output bench/results/g2p_stress_additive.json
    # the attention scores compared at 6 epochs
    .venv/bin/python bench/g2p.py configs/cmudict_g2p_nostress.yaml --set training.epochs=6 \\
        --set model.attention=bilinear --output bench/results/g2p_nostress_bilinear_6ep.json
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from common import machine, metric_history, train_timed, training_parser, write_report

ANCHORS = {True: ("Phonetisaurus 8-gram, current CMUdict, stress removed", 0.333, 0.30),
           False: ("Phonetisaurus 8-gram, current CMUdict, stress kept", 0.405, 0.37)}


def decoding_speed(model_path: str, words: list[str], beam_size: int, batch_size: int = 256) -> float:
    """Words per second through the exported model (tokenization, encoder, search, detokenization)."""
    import tensorflow as tf

    from keras_models.saving import load_model

    model = load_model(model_path)
    search = tf.function(lambda t: model.search(t, beam_size=beam_size), reduce_retracing=True)
    search(tf.constant(words[:batch_size]))  # trace
    start = time.perf_counter()
    for i in range(0, len(words), batch_size):
        search(tf.constant(words[i : i + batch_size]))
    return len(words) / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = training_parser(__doc__, "configs/cmudict_g2p.yaml or configs/cmudict_g2p_nostress.yaml")
    parser.add_argument("--speed-words", type=int, default=2000, help="test words timed for decoding speed")
    args = parser.parse_args(argv)

    config, result, timings = train_timed(args.config, args.overrides, keep=True)
    try:
        from preprocessing.input_fns import load_examples
        from preprocessing.vocab import Vocabulary

        data_dir = Path(result.data_dir)
        vocab = Vocabulary.load(data_dir / "vocab" / "tokens.txt")
        words = sorted({"".join(vocab.decode(ids)) for ids in load_examples(data_dir, "test").ids})[: args.speed_words]
        beam = config.decode.beam_size
        speed = {"greedy_words_per_s": round(decoding_speed(result.model_path, words, 1), 1),
                 f"beam{beam}_words_per_s": round(decoding_speed(result.model_path, words, beam), 1)}
        history = {"val_wer_by_epoch": metric_history(config, result, "val_wer")}
    finally:
        if not args.keep:
            shutil.rmtree(Path(config.resolved_work_dir).parent, ignore_errors=True)
    m, metrics = config.model, result.metrics
    name, anchor, target = ANCHORS[config.data.remove_stress]
    beam_key = f"test_beam{config.decode.beam_size}_wer"
    report = {
        "config": args.config, "overrides": args.overrides,
        "model": f"{m.num_layers}x{m.hidden_dim} Bi{m.cell.upper()} encoder, {m.attention} attention",
        **timings, "epochs_completed": metrics.get("epochs_completed"),
        **{k: round(v, 4) for k, v in metrics.items() if k.startswith(("val_", "test_")) and isinstance(v, float)},
        **speed, **history,
        "anchor": f"{name}: WER {anchor:.1%}", "target": f"WER < {target:.0%}",
        "meets_target": min(metrics["test_wer"], metrics.get(beam_key, 1.0)) < target,
        "sample": result.sample, "machine": machine(),
    }
    write_report(report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
