"""Services the tests start themselves (importable from the test modules beside it, whose folder
pytest puts on ``sys.path``): a Beam worker pool for the portable runner, a Dask scheduler with
workers, an ``mlflow server`` (proxied artifacts) and ``mlflow models serve``, each on 127.0.0.1 with
a free port, waited for (bounded) and stopped (terminate, then kill) when done; their logs are
printed when a test that uses them fails (:func:`show_logs_on_failure`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"
STOP_TIMEOUT_S = 10


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def service_env() -> dict[str, str]:
    """The environment of a service: this interpreter's ``bin`` first on ``PATH`` (Beam's worker pool
    starts SDK workers with ``python`` from ``PATH``), quiet TensorFlow, no GPU."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    return env


class Service:
    """One subprocess, in its own process group (its children stop with it), logging to a file."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None):
        self.name, self.argv = name, list(argv)
        self.log_path = Path(log_dir) / f"{name}.log"
        self.env = dict(env or {})  # set on top of service_env()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Service":
        """Starts the process; a service started again (after :meth:`stop`) appends to its log."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env={**service_env(), **self.env}, start_new_session=True)
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, limit: int = 6000) -> str:
        try:
            text = self.log_path.read_bytes().decode("utf-8", "replace")
        except OSError:
            return ""
        return text if len(text) <= limit else "...\n" + text[-limit:]

    def describe(self) -> str:
        state = "running" if self.running() else f"exited with {self.proc.returncode if self.proc else None}"
        return f"----- {self.name} ({state}): {' '.join(self.argv)}\n{self.log_tail()}"

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL if it is still there after a few seconds."""
        if self.proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError, PermissionError):  # children left in the group
            os.killpg(self.proc.pid, signal.SIGKILL)


def logs(services) -> str:
    return "\n".join(s.describe() for s in services)


def wait_until(check, what: str, services, timeout: float) -> None:
    """Polls ``check()`` until it is true; a service that exits meanwhile, or ``timeout`` seconds, fail
    with the services' logs."""
    deadline = time.monotonic() + timeout
    while True:
        dead = [s for s in services if not s.running()]
        if dead:
            raise RuntimeError(f"{dead[0].name} exited while waiting for {what}\n{logs(services)}")
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not ready yet
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready after {timeout:.0f} s\n{logs(services)}")
        time.sleep(0.25)


@contextlib.contextmanager
def show_logs_on_failure(services):
    """Prints the services' logs (pytest shows them with the failure) if the block raises."""
    try:
        yield
    except BaseException:
        print(logs(services))
        raise


@contextlib.contextmanager
def running(services):
    """Stops ``services`` (every one, in reverse order) when the block ends, however it ends."""
    try:
        yield services
    finally:
        for s in reversed(services):
            s.stop()


@contextlib.contextmanager
def beam_worker_pool(log_dir: Path, timeout: float = 60):
    """Beam's worker pool (``--environment_type=EXTERNAL``); yields ``(address, [service])``."""
    port = free_port()
    pool = Service("beam-worker-pool", [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                                        f"--service_port={port}"], log_dir)
    with running([pool.start()]) as services:
        wait_until(lambda: port_open(port), f"the Beam worker pool on port {port}", services, timeout)
        yield f"{HOST}:{port}", services


def _workers_registered(address: str, n: int) -> bool:
    from distributed import Client

    with Client(address, timeout=5) as client:
        return len(client.nthreads()) >= n


@contextlib.contextmanager
def dask_cluster(log_dir: Path, workers: int = 2, timeout: float = 90):
    """A Dask scheduler and ``workers`` one-thread workers; yields ``(tcp://address, services)``."""
    port = free_port()
    address = f"tcp://{HOST}:{port}"
    scheduler = Service("dask-scheduler", [sys.executable, "-m", "dask", "scheduler", "--host", HOST, "--port",
                                           str(port), "--no-dashboard"], log_dir)
    with running([scheduler.start()]) as services:
        wait_until(lambda: port_open(port), f"the Dask scheduler on port {port}", services, timeout)
        for i in range(workers):
            services.append(Service(f"dask-worker-{i}", [
                sys.executable, "-m", "dask", "worker", address, "--nthreads", "1", "--no-dashboard",
                "--host", HOST, "--local-directory", str(Path(log_dir) / f"dask-worker-{i}"),
                "--death-timeout", "60"], log_dir).start())
        wait_until(lambda: _workers_registered(address, workers), f"{workers} Dask workers at {address}", services,
                   timeout)
        yield address, services


# ------------------------------------------------------------------------------------------ MLflow
MLFLOW = str(Path(sys.executable).with_name("mlflow"))  # the venv's console script


def http_status(url: str, timeout: float = 5) -> int:
    """The HTTP status of ``GET url`` (an error status too); raises ``OSError`` if nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


class MlflowServer:
    """An ``mlflow server`` on 127.0.0.1: a sqlite store ``root/mlflow.db`` and proxied artifacts under
    ``root/artifacts`` (clients get ``mlflow-artifacts:`` URIs and upload through the server).
    :meth:`stop` and :meth:`start` restart it on the same port and store (a server that blips)."""

    def __init__(self, root: Path, port: int | None = None, timeout: float = 90):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.uri = f"http://{HOST}:{self.port}"
        self.store_uri = f"sqlite:///{self.root.resolve() / 'mlflow.db'}"
        self.artifacts = self.root / "artifacts"
        self.timeout = timeout
        self.service = Service("mlflow-server", [
            MLFLOW, "server", "--host", HOST, "--port", str(self.port), "--backend-store-uri", self.store_uri,
            "--artifacts-destination", str(self.artifacts.resolve()), "--workers", "1",
        ], self.root, env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})  # no job runner process

    def start(self) -> "MlflowServer":
        """Starts the server (if it is not running) and waits until ``GET /health`` answers 200."""
        if not self.service.running():
            self.service.start()
        wait_until(lambda: http_status(f"{self.uri}/health") == 200, f"mlflow server at {self.uri}",
                   [self.service], self.timeout)
        return self

    def stop(self) -> None:
        """Stops the server (and its workers) and waits until the port is free again."""
        self.service.stop()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)


@contextlib.contextmanager
def mlflow_server(root: Path, port: int | None = None, timeout: float = 90):
    """A running :class:`MlflowServer` (``.uri``, ``.port``, ``.service``, ``.stop()``, ``.start()``),
    stopped when the block ends; its log is printed if the block raises."""
    server = MlflowServer(root, port, timeout)
    with running([server.service]), show_logs_on_failure([server.service]):
        yield server.start()


class ServedURL(str):
    """The base URL of a served model (``http://127.0.0.1:PORT``); ``.service`` is its :class:`Service`."""

    service: Service
    model_uri: str

    def wait_ready(self, timeout: float = 120) -> "ServedURL":
        """Waits (bounded) until ``GET /ping`` answers 200."""
        wait_until(lambda: http_status(f"{self}/ping") == 200, f"mlflow models serve of {self.model_uri} at {self}",
                   [self.service], timeout)
        return self


@contextlib.contextmanager
def models_serve(model_uri: str, tracking_uri: str, log_dir: Path, timeout: float = 120, wait: bool = True):
    """``mlflow models serve -m model_uri --env-manager local`` (one worker) on a free port, reading
    the model through ``tracking_uri``; waits until ``GET /ping`` answers 200 (with ``wait=False`` the
    caller does, by ``.wait_ready()``: servers can start while other work goes on) and yields its
    base URL (a :class:`ServedURL`); stopped when the block ends, its log printed if the block raises."""
    port = free_port()
    name = "models-serve-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in model_uri)[-60:]
    service = Service(name, [MLFLOW, "models", "serve", "-m", model_uri, "--env-manager", "local", "-h", HOST,
                             "-p", str(port), "-w", "1"], log_dir,
                      env={"MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_REGISTRY_URI": tracking_uri})
    url = ServedURL(f"http://{HOST}:{port}")
    url.service, url.model_uri = service, model_uri
    with running([service.start()]), show_logs_on_failure([service]):
        if wait:
            url.wait_ready(timeout)
        yield url
