"""One worker of the two-process MultiWorkerMirroredStrategy test (run by test_multiworker.py).

Usage: python multiworker_worker.py OUT.json CHECKPOINT_DIR   (TF_CONFIG set by the caller)
With TF_CONFIG unset it trains the same model on the default strategy (the reference).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CUDA_VISIBLE_DEVICES"] = ""

from keras_models.strategies import is_chief, make_strategy  # noqa: E402

strategy = make_strategy("multi_worker" if "TF_CONFIG" in os.environ else "default")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_models.models.language_model import RNNLanguageModel  # noqa: E402
from keras_models.training import LanguageModelData, LanguageModelTask, Trainer  # noqa: E402
from pipelines.config import TrainingConfig  # noqa: E402
from preprocessing.input_fns import bptt_layout  # noqa: E402


def build():
    keras.utils.set_random_seed(7)
    model = RNNLanguageModel(11, cell="lstm", num_layers=1, embedding_dim=4, hidden_dim=4)
    model.build((None, None))
    return model


def main(out_path, checkpoint_dir):
    stream = np.random.default_rng(0).integers(4, 11, 800).astype(np.int32)
    settings = TrainingConfig(epochs=1, batch_size=4, bptt=5, max_steps_per_epoch=6, log_every_steps=1,
                              checkpoint_every_steps=3, clip_norm=0.5, jit_compile=False,
                              optimizer={"name": "sgd", "learning_rate": 0.5})
    logged = []
    trainer = Trainer(strategy=strategy, build_model=build, task=LanguageModelTask(),
                      data=LanguageModelData(bptt_layout(stream, 4, 5), max_steps=6), settings=settings,
                      checkpoint_dir=checkpoint_dir, on_step=lambda step, m: logged.append(step), verbose=False)
    result = trainer.fit()
    with open(out_path, "w") as f:
        json.dump({"losses": result.steps["train_loss"], "chief": is_chief(strategy), "logged": logged,
                   "replicas": strategy.num_replicas_in_sync,
                   "weights": [w.tolist() for w in trainer.model.get_weights()]}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
