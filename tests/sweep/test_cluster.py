"""Past one machine, on one machine: a two-node Ray cluster on loopback (`ray start --head`, then `ray start
--address`, token auth on both and on the driver) runs a sweep whose storage is an S3 server on 127.0.0.1 (moto).
The driver is killed mid-sweep and `sweep resume` continues it from the same bucket.

Everything asserted is read back from the bucket: the study journal, the checkpoints, and the report's
epochs.parquet with the node each epoch ran on.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from sweep import ledger

BIN = Path(sys.executable).parent
BUCKET = "sweeps"
GIB = 1 << 30
START_TIMEOUT_S = 120
RUN_TIMEOUT_S = 420

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited ({proc.returncode})" + (f":\n{log.read_text()[-3000:]}" if log else ""))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"{what} did not listen on 127.0.0.1:{port} within {START_TIMEOUT_S} s")


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop a process and everything it started (its own session): politely, then for good."""
    if proc.poll() is None:
        for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 30)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # what the leader left behind (raylet, gcs_server, workers)
    except ProcessLookupError:
        pass


@pytest.fixture
def s3() -> Iterator[dict[str, str]]:
    """moto's S3 server on 127.0.0.1 with an empty bucket; the environment that points S3 clients at it."""
    port = _free_port()
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_port(port, proc, "moto_server")
        env = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "testing",  # moto accepts any key; none of them is real
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", access_key="testing",
                          secret_key="testing", region="us-east-1", allow_bucket_creation=True).create_dir(BUCKET)
        yield env
    finally:
        _kill_group(proc)


@pytest.fixture
def two_nodes(s3, tmp_path) -> Iterator[tuple[str, dict[str, str]]]:
    """A head and a worker node, 1 CPU each, with their own --memory (on one host each would claim all of it),
    bound to loopback, with the same token auth as the driver. Yields the address and the environment for it."""
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (tests/conftest.py) makes a node refuse company: not for these two.
    drop = ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(s3, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    node = ["--node-ip-address=127.0.0.1", "--num-cpus=1", f"--memory={2 * GIB}",
            f"--object-store-memory={GIB // 4}", "--block"]
    procs = []
    try:
        with open(tmp_path / "head.log", "wb") as log:
            procs.append(subprocess.Popen(
                [str(BIN / "ray"), "start", "--head", f"--port={port}", "--include-dashboard=false",
                 f"--temp-dir={temp}", *node], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        _wait_port(port, procs[0], "the head node", tmp_path / "head.log")
        with open(tmp_path / "worker.log", "wb") as log:
            procs.append(subprocess.Popen(
                [str(BIN / "ray"), "start", f"--address=127.0.0.1:{port}", *node], env=env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True))
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # both nodes up before the sweep starts, so it sees 2 CPUs
            out = subprocess.run([str(BIN / "ray"), "status", f"--address={address}"], env=env, capture_output=True,
                                 text=True, timeout=60).stdout
            if "2.0 CPU" in out:
                break
            if time.monotonic() > deadline or procs[1].poll() is not None:
                pytest.fail(f"the worker node did not join:\n{out}\n{(tmp_path / 'worker.log').read_text()[-3000:]}")
            time.sleep(1)
        yield address, env
    finally:
        for proc in reversed(procs):
            _kill_group(proc)
        shutil.rmtree(temp, ignore_errors=True)


def _sweep(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "sweep"), *args], capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          env=env)


def _pids_alive(exp: str) -> bool:
    """Whether a trial worker of the killed driver still runs (it could still upload a checkpoint)."""
    for saved in ledger.newest_checkpoints(exp).values():
        for row in saved.history:
            try:
                os.kill(int(row["pid"]), 0)
                return True
            except (ProcessLookupError, KeyError, ValueError):
                continue
    return False


def test_two_node_cluster_sweep_on_s3_killed_and_resumed(two_nodes, s3, tmp_path, monkeypatch):
    address, env = two_nodes
    for key, value in s3.items():  # this process reads the bucket too
        monkeypatch.setenv(key, value)
    storage = f"s3://{BUCKET}/runs"
    exp = f"{storage}/c"
    n, epochs = 4, 4
    log = tmp_path / "run.log"
    with open(log, "wb") as f:
        driver = subprocess.Popen(
            [str(BIN / "sweep"), "run", "--smoke-test", "--num-samples", str(n), "--epochs", str(epochs),
             "--storage", storage, "--name", "c", "--address", address],
            env=env, stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:  # kill the driver once a trial has finished and the sweep is mid-way
            study = ledger.open_study(exp)
            if study is not None and study.get_trials(deepcopy=False, states=ledger.FINISHED):
                break
            if driver.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the sweep ended ({driver.returncode}) before the kill:\n{log.read_text()[-4000:]}")
            time.sleep(0.2)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert "2 at a time (Ray has 2 CPU now)" in log.read_text()  # the driver saw both nodes
    before = {t.number: t.state for t in ledger.open_study(exp).trials}
    assert len(before) < n or any(not s.is_finished() for s in before.values()), "killed too late to resume anything"
    deadline = time.monotonic() + 60
    while _pids_alive(exp) and time.monotonic() < deadline:  # the cluster stops the dead driver's trials
        time.sleep(0.2)

    # `sweep resume` with the address from RAY_ADDRESS this time, reading everything back from the bucket.
    import sweep  # the Python API reads a sweep in object storage, interrupted, as the CLI does

    assert sweep.load("c", storage).state == "interrupted"
    resumed = _sweep({**env, "RAY_ADDRESS": address}, "resume", "c", "--storage", storage)
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-4000:]
    assert "resuming c" in resumed.stdout

    study = ledger.open_study(exp)
    assert len(study.trials) == n and all(t.state in ledger.FINISHED for t in study.trials)
    assert all(before[k] == t.state for k, t in enumerate(study.trials) if k in before and before[k].is_finished())
    saved = ledger.newest_checkpoints(exp)
    for t in study.trials:  # one history per trial, epoch by epoch, whatever the kill interrupted
        assert [row["epoch"] for row in saved[t.number].history] == list(range(1, saved[t.number].epoch + 1))
    assert [s["pid"] for s in ledger.read_driver(exp)["sessions"]] and ledger.read_driver(exp)["state"] == "finished"
    assert len(ledger.read_driver(exp)["sessions"]) == 2

    report = _sweep(env, "report", "c", "--storage", storage, "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr[-3000:]
    rows = pq.read_table(tmp_path / "report" / "epochs.parquet").to_pylist()
    nodes = {r["node_id"] for r in rows if r["epoch"] > 0}
    assert len(nodes) == 2 and all(nodes), nodes  # trials ran on both nodes, and each epoch says which
    assert {r["session"] for r in rows if r["epoch"] > 0} <= {0, 1}
    s = sweep.load("c", storage)
    assert s.state == "finished" and sweep.list_sweeps(storage)["sweep"].tolist() == ["c"]
    api = s.epochs()
    assert sorted(zip(api["trial_id"], api["epoch"], strict=True)) == sorted((r["trial_id"], r["epoch"]) for r in rows)
