"""Two workers (two processes on 127.0.0.1) under MultiWorkerMirroredStrategy give the one-replica result."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("multiworker_worker.py")
REPO = Path(__file__).resolve().parents[2]


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _run(tmp_path, name, tf_config=None):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env["PYTHONPATH"] = str(REPO)
    if tf_config:
        env["TF_CONFIG"] = json.dumps(tf_config)
    out = tmp_path / f"{name}.json"
    proc = subprocess.Popen([sys.executable, str(WORKER), str(out), str(tmp_path / "ckpt")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, out


@pytest.mark.slow
def test_two_workers_match_one_replica_and_only_the_chief_logs(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = [_run(tmp_path, f"worker{i}", {"cluster": cluster, "task": {"type": "worker", "index": i}}) for i in range(2)]
    for proc, _ in procs:
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output[-3000:]
    workers = [json.loads(out.read_text()) for _, out in procs]
    (tmp_path / "ref").mkdir()
    ref_proc, ref_out = _run(tmp_path / "ref", "reference")
    output, _ = ref_proc.communicate(timeout=300)
    assert ref_proc.returncode == 0, output[-3000:]
    reference = json.loads(ref_out.read_text())

    assert [w["replicas"] for w in workers] == [2, 2] and reference["replicas"] == 1
    assert [w["chief"] for w in workers] == [True, False]
    assert workers[0]["logged"] == list(range(1, 7)) and workers[1]["logged"] == []
    for w in workers:
        np.testing.assert_allclose(w["losses"], reference["losses"], rtol=1e-5)
        for a, b in zip(w["weights"], reference["weights"]):
            np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-5)
    assert any(p.name.startswith("ckpt-") for p in (tmp_path / "ckpt").iterdir())  # the chief's checkpoints
