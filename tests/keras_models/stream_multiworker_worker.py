"""One worker of the two-process token-stream test (run by test_stream_training.py).

Usage: python stream_multiworker_worker.py DATA_DIR OUT.json CHECKPOINT_DIR   (TF_CONFIG set by the caller)
Trains a tiny LSTM LM on a TokenStream of DATA_DIR's train split (4 rows, bptt 5, one epoch). With
TF_CONFIG unset it trains on the default strategy (the one-worker reference).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CUDA_VISIBLE_DEVICES"] = ""

from keras_models.strategies import make_strategy  # noqa: E402

strategy = make_strategy("multi_worker" if "TF_CONFIG" in os.environ else "default")

import keras  # noqa: E402

from keras_models.models.language_model import RNNLanguageModel  # noqa: E402
from keras_models.training import LanguageModelData, LanguageModelTask, Trainer  # noqa: E402
from pipelines.config import TrainingConfig  # noqa: E402
from preprocessing.manifest import load_manifest  # noqa: E402
from preprocessing.streams import TokenStream  # noqa: E402
from preprocessing.vocab import Vocabulary  # noqa: E402


class RecordingStream(TokenStream):
    """A TokenStream that notes which rows this worker's input pipeline asked for."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rows = []  # [first_row, num_rows] of every dataset() call

    def dataset(self, first_row=0, num_rows=None, **kwargs):
        self.rows.append([first_row, num_rows])
        return super().dataset(first_row, num_rows, **kwargs)


def main(data_dir, out_path, checkpoint_dir):
    vocab_size = len(Vocabulary.load(load_manifest(data_dir).file("vocab")))

    def build():
        keras.utils.set_random_seed(7)
        model = RNNLanguageModel(vocab_size, cell="lstm", num_layers=1, embedding_dim=4, hidden_dim=4)
        model.build((None, None))
        return model

    settings = TrainingConfig(epochs=1, batch_size=4, bptt=5, log_every_steps=1, checkpoint_every_steps=6,
                              clip_norm=0.5, jit_compile=False, optimizer={"name": "sgd", "learning_rate": 0.5})
    stream = RecordingStream(data_dir, "train", 4, 5)
    trainer = Trainer(strategy=strategy, build_model=build, task=LanguageModelTask(),
                      data=LanguageModelData(stream), settings=settings, checkpoint_dir=checkpoint_dir, verbose=False)
    result = trainer.fit()
    with open(out_path, "w") as f:
        json.dump({"losses": result.steps["train_loss"], "steps": result.global_step,
                   "replicas": strategy.num_replicas_in_sync, "rows": stream.rows,
                   "weights": [w.tolist() for w in trainer.model.get_weights()]}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
