"""Scale: the prepare job, the training input and the first training step at 1x, 20x and 100x Penn Treebank.

The corpora are Penn Treebank's training text (Mikolov's ``ptb.train.txt``, 929k tokens with one
``<eos>`` per line) with its lines repeated N times (so the vocabulary and OOV rate stay PTB's; only
the size grows), prepared as a plain text corpus with a hashed 1% / 1% valid / test split. The
tagging input is the same text with every word tagged by a fixed rule (``L`` for words of more than
four characters, else ``S``): it measures reading, not tagging.

Measured, each in its own process (peak RSS is the whole process tree's, sampled every 0.1 s; for
the Dask runner the scheduler's and workers' processes are added):

* ``prepare``: ``rnnflow prepare`` wall time, tokens/s and peak RSS, per runner: ``inprocess``
  (DirectRunner in memory), ``multiprocessing`` (DirectRunner, 2 worker processes) and ``dask``
  (DaskRunner against a local scheduler with 2 single-thread workers);
* ``input``: the training input alone, no model: LM windows (``TokenStream`` through
  ``bptt_dataset_fn``, batch 20, bptt 35) and bucketed tagging batches (``ExampleStream``, batch 32),
  tokens/s over one epoch (capped by ``--max-input-tokens``), start-up included;
* ``train``: time from process start to the first finished training step of the ptb_small model
  (``Task.load`` → dataset → model → one step) and peak RSS after 50 steps;
* ``multiworker``: the ptb_small model trained for ``--mw-steps`` steps by ``keras_models.training.Trainer``
  under ``MultiWorkerMirroredStrategy``, two worker processes on loopback (``TF_CONFIG``), each reading
  only its own rows of the ``TokenStream``, against one worker on the default strategy: the per-step
  losses, the largest difference, and the bytes each process read (``rchar`` of ``/proc/self/io``,
  which counts the shards and everything else it read, libraries included).

    .venv/bin/python bench/scale.py --sizes 1 20 --output bench/results/scale.json
    .venv/bin/python bench/scale.py --sizes 100 --parts prepare --runners inprocess
    .venv/bin/python bench/scale.py --sizes 20 --parts multiworker
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNNERS = ("inprocess", "multiprocessing", "dask")
PARTS = ("prepare", "input", "train", "multiworker")


# ------------------------------------------------------------------------------------ corpora
def _ptb_train_lines() -> list[str]:
    from pipelines.datasets import ptb_sources

    train = next(s for s in ptb_sources() if "train" in s.name)
    return [line.strip() for line in train.read_bytes().decode("utf-8").splitlines() if line.strip()]


def build_corpora(work: Path, size: int) -> dict[str, Path]:
    """``ptb_x{size}.txt`` (the lines repeated ``size`` times) and its tagged twin."""
    out = {"text": work / f"ptb_x{size}.txt", "tagged": work / f"ptb_tagged_x{size}.txt"}
    if all(p.exists() for p in out.values()):
        return out
    lines = _ptb_train_lines()
    tagged = [" ".join(f"{w.replace('/', '-')}/{'L' if len(w) > 4 else 'S'}" for w in line.split()) for line in lines]
    for path, content in ((out["text"], lines), (out["tagged"], tagged)):
        block = ("\n".join(content) + "\n").encode("utf-8")
        with open(path, "wb") as f:
            for _ in range(size):
                f.write(block)
    return out


def write_config(work: Path, corpus: Path, name: str, dataset: str = "text") -> Path:
    import yaml

    config = {"name": name, "data": {"dataset": dataset, "files": [str(corpus)], "output_dir": str(work / "data"),
                                     "split": {"method": "hash", "valid": 0.01, "test": 0.01}},
              "model": {"cell": "lstm", "num_layers": 2, "embedding_dim": 200, "hidden_dim": 200},
              "training": {"batch_size": 20, "bptt": 35, "epochs": 1},
              "work_dir": str(work / "runs"), "tracking": {"tracking_uri": f"sqlite:///{work}/mlflow.db"}}
    if dataset == "slash_tagged":
        config["model"] = {"type": "tagger", "cell": "lstm", "hidden_dim": 64, "embedding_dim": 64}
        config["training"] = {"batch_size": 32, "epochs": 1}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# ------------------------------------------------------------------------------ measurements
class PeakRSS:
    """Samples the summed RSS of a process tree (and of extra pids) until stopped."""

    def __init__(self, pid: int, extra: list[int] = ()):
        import psutil

        self.root, self.extra, self.peak, self._stop = psutil.Process(pid), list(extra), 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _procs(self):
        import psutil

        procs = [self.root]
        try:
            procs += self.root.children(recursive=True)
        except psutil.Error:
            pass
        for pid in self.extra:
            try:
                p = psutil.Process(pid)
                procs += [p, *p.children(recursive=True)]
            except psutil.Error:
                pass
        return procs

    def _run(self):
        import psutil

        while not self._stop.is_set():
            total = 0
            for p in self._procs():
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.1)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


class DaskCluster:
    """A scheduler and two single-thread workers on loopback (stopped on exit)."""

    def __enter__(self):
        port = _free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        logs = open(os.devnull, "wb")
        self.procs = [subprocess.Popen([_bin("dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                        "--no-dashboard"], stdout=logs, stderr=logs)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.3)
        for _ in range(2):
            self.procs.append(subprocess.Popen([_bin("dask"), "worker", self.address, "--nthreads", "1",
                                                "--no-dashboard", "--memory-limit", "0"], stdout=logs, stderr=logs))
        from distributed import Client

        with Client(self.address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        return self

    def __exit__(self, *exc):
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def measure_prepare(config: Path, runner: str, cluster: DaskCluster | None) -> dict:
    from preprocessing.manifest import load_manifest

    beam = {"inprocess": [],
            "multiprocessing": ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
            "dask": ["--runner=DaskRunner", f"--dask_client_address={cluster.address if cluster else ''}"]}[runner]
    command = [_bin("rnnflow"), "prepare", str(config), "--force", *beam]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    rss = PeakRSS(proc.pid, [p.pid for p in cluster.procs] if cluster else [])
    output, errors = proc.communicate()
    wall = time.perf_counter() - start
    peak = rss.stop()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{errors[-3000:]}")
    data_dir = output.strip().splitlines()[-1].strip()
    manifest = load_manifest(data_dir)
    tokens = sum(s["tokens"] for s in manifest["splits"].values())
    return {"runner": runner, "wall_s": round(wall, 1), "tokens": tokens, "tokens_per_s": round(tokens / wall),
            "peak_rss_mb": round(peak / 2**20), "shards_train": len(manifest["splits"]["train"]["shards"]),
            "data_dir": data_dir}


def _peak_rss_mb() -> int:
    """This process' peak RSS (``VmHWM``: unlike ``ru_maxrss`` it is not inherited across exec)."""
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return round(kb / 1024)


def _child(argv: list[str]) -> dict:
    """Runs ``bench/scale.py --child ...`` in a fresh process and returns its JSON line."""
    out = subprocess.run([sys.executable, __file__, "--child", *argv], capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if out.returncode:
        raise RuntimeError(f"child {argv} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def child_input(kind: str, data_dir: str, max_tokens: int) -> dict:
    import tensorflow as tf

    start = time.perf_counter()
    tokens = 0
    if kind == "lm":
        from preprocessing.input_fns import bptt_dataset_fn
        from preprocessing.streams import TokenStream

        stream = TokenStream(data_dir, "train", 20, 35)
        for batch in bptt_dataset_fn(stream)(None):
            tokens += int(tf.size(batch["ids"]))
            if tokens >= max_tokens:
                break
    else:
        from preprocessing.streams import ExampleStream

        stream = ExampleStream(data_dir, "train")
        for batch in stream.dataset_fn(32, seed=0)(None):
            tokens += int(tf.math.count_nonzero(batch["ids"]))
            if tokens >= max_tokens:
                break
    wall = time.perf_counter() - start
    return {"input": kind, "tokens": tokens, "wall_s": round(wall, 2), "tokens_per_s": round(tokens / wall),
            "peak_rss_mb": _peak_rss_mb()}


def child_train(config_path: str, data_dir: str, started: float) -> dict:
    import keras
    import tensorflow as tf

    from keras_models.inputs import model_inputs
    from pipelines import tasks
    from pipelines.config import load_config
    from preprocessing.manifest import load_manifest

    config = load_config(config_path)
    task = tasks.get(config.data.task)
    data = task.load(config, Path(data_dir), load_manifest(data_dir))
    keras.utils.set_random_seed(0)
    model = task.build_model(config, data)
    optimizer = keras.optimizers.SGD(1.0)
    iterator = iter(task.train_data(config, data).dataset_fn(0, 0)(None))
    state = model.initial_state(config.training.batch_size)

    @tf.function
    def step(batch, state):
        with tf.GradientTape() as tape:
            loss_sum, count, new_state = model.loss_sum(model_inputs(batch), batch["targets"], training=True,
                                                        states=state, return_state=True)
            loss = loss_sum / tf.cast(count, loss_sum.dtype)
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss, new_state

    loss, state = step(next(iterator), state)
    float(loss)
    first = time.time() - started
    for _ in range(49):
        loss, state = step(next(iterator), state)
    float(loss)
    return {"time_to_first_step_s": round(first, 1), "after_50_steps_s": round(time.time() - started, 1),
            "peak_rss_mb": _peak_rss_mb()}


def _bytes_read() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def child_multiworker(config_path: str, data_dir: str, steps: int) -> dict:
    """One worker (``TF_CONFIG`` set) or the one-worker reference: ``steps`` training steps of the
    config's language model through the real Trainer, reading the training split's TokenStream."""
    import tempfile

    from keras_models.strategies import is_chief, make_strategy

    strategy = make_strategy("multi_worker" if "TF_CONFIG" in os.environ else "default")
    import keras

    from keras_models.training import Trainer
    from pipelines import tasks
    from pipelines.config import load_config
    from preprocessing.manifest import load_manifest

    config = load_config(config_path)
    config = config.model_copy(update={"training": config.training.model_copy(
        update={"epochs": 1, "max_steps_per_epoch": steps, "log_every_steps": 1, "jit_compile": False})})
    task = tasks.get(config.data.task)
    before = _bytes_read()
    data = task.load(config, Path(data_dir), load_manifest(data_dir))

    def build():
        keras.utils.set_random_seed(config.training.seed)
        return task.build_model(config, data)

    with tempfile.TemporaryDirectory() as checkpoints:
        trainer = Trainer(strategy=strategy, build_model=build, task=task.training_task(config),
                          data=task.train_data(config, data), settings=config.training,
                          checkpoint_dir=checkpoints, verbose=False)
        result = trainer.fit()
    return {"replicas": strategy.num_replicas_in_sync, "chief": is_chief(strategy),
            "losses": [float(x) for x in result.steps["train_loss"]], "bytes_read": _bytes_read() - before,
            "peak_rss_mb": _peak_rss_mb()}


def measure_multiworker(config: Path, data_dir: str, steps: int) -> dict:
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
        procs.append(subprocess.Popen([sys.executable, __file__, "--child", "multiworker", str(config), data_dir,
                                       str(steps)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    start = time.perf_counter()
    workers = []
    for proc in procs:
        out, err = proc.communicate(timeout=1800)
        if proc.returncode:
            raise RuntimeError(f"worker failed:\n{err[-3000:]}")
        workers.append(json.loads(out.strip().splitlines()[-1]))
    wall = time.perf_counter() - start
    one = _child(["multiworker", str(config), data_dir, str(steps)])
    diff = max(abs(a - b) for w in workers for a, b in zip(w["losses"], one["losses"]))
    return {"steps": steps, "two_workers_wall_s": round(wall, 1), "max_abs_loss_diff": diff,
            "first_losses": [round(x, 6) for x in one["losses"][:3]], "last_loss_one_worker": one["losses"][-1],
            "last_loss_two_workers": [w["losses"][-1] for w in workers],
            "bytes_read_one_worker": one["bytes_read"], "bytes_read_two_workers": [w["bytes_read"] for w in workers],
            "replicas": [w["replicas"] for w in workers], "peak_rss_mb_two_workers": [w["peak_rss_mb"] for w in workers]}


def _save(path: Path | None, result: dict) -> None:
    """Appends one result to the output file at once (a later failure keeps what was measured)."""
    print(json.dumps(result), flush=True)
    if path is None:
        return
    previous = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps(previous + [result], indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 20, 100], help="copies of PTB's training text")
    parser.add_argument("--runners", nargs="+", default=list(RUNNERS), choices=RUNNERS)
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--work", default="/tmp/rnnflow-scale", help="corpora and prepared data (kept for reuse)")
    parser.add_argument("--max-input-tokens", type=int, default=50_000_000)
    parser.add_argument("--mw-steps", type=int, default=30, help="training steps of the multiworker part")
    parser.add_argument("--output", help="append the results (JSON) to this file")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        started = time.time()
        if kind == "input":
            result = child_input(rest[0], rest[1], int(rest[2]))
        elif kind == "multiworker":
            result = child_multiworker(rest[0], rest[1], int(rest[2]))
        else:
            result = child_train(rest[0], rest[1], started)
        print(json.dumps(result))
        return 0

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    output = Path(args.output) if args.output else None
    for size in args.sizes:
        corpora = build_corpora(work, size)
        lm_config = write_config(work, corpora["text"], f"ptb_x{size}")
        tag_config = write_config(work, corpora["tagged"], f"ptb_tagged_x{size}", "slash_tagged")
        dirs = {}
        if "prepare" in args.parts:
            for runner in args.runners:
                if runner == "dask":
                    with DaskCluster() as cluster:
                        r = measure_prepare(lm_config, runner, cluster)
                else:
                    r = measure_prepare(lm_config, runner, None)
                dirs["lm"] = r.pop("data_dir")
                _save(output, {"part": "prepare", "size": size, **r})
        if {"input", "train", "multiworker"} & set(args.parts):
            from pipelines.config import load_config
            from pipelines.prepare import prepare

            dirs["lm"] = str(prepare(load_config(lm_config).data))
            dirs["tagged"] = str(prepare(load_config(tag_config).data))
        if "input" in args.parts:
            for kind, key in (("lm", "lm"), ("tagging", "tagged")):
                r = _child(["input", kind, dirs[key], str(args.max_input_tokens)])
                _save(output, {"part": "input", "size": size, **r})
        if "train" in args.parts:
            r = _child(["train", str(lm_config), dirs["lm"]])
            _save(output, {"part": "train", "size": size, **r})
        if "multiworker" in args.parts:
            _save(output, {"part": "multiworker", "size": size, **measure_multiworker(lm_config, dirs["lm"], args.mw_steps)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
