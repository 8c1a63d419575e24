"""Trackers: a smoke sweep's trials in a local MLflow store (no server, no network), and TensorBoard tags that are
the same for a sweep's trial and for `sweep train`, without Ray's bookkeeping."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

SWEEP = str(Path(sys.executable).with_name("sweep"))
EPOCHS = 2


def _sweep(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SWEEP, *args], capture_output=True, text=True, timeout=600, env=dict(os.environ))


def tags(folder: Path) -> dict[str, list[int]]:
    """Every scalar tag in the TensorBoard event files under ``folder``, with the steps it was written at."""
    from tensorboardX.proto import event_pb2

    found: dict[str, list[int]] = {}
    for path in sorted(folder.rglob("events.out.tfevents*")):
        data = path.read_bytes()
        at = 0
        while at + 12 <= len(data):  # TFRecord: length (8), its crc (4), the record, its crc (4)
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = event_pb2.Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                found.setdefault(value.tag, []).append(int(event.step))
    return found


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, ray_session):
    storage = tmp_path_factory.mktemp("tracked")
    address = ray_session.get_runtime_context().gcs_address
    run = _sweep("run", "--smoke-test", "--num-samples", "2", "--epochs", str(EPOCHS), "--strategies", "infonce",
                 "--tracker", "mlflow", "--storage", str(storage), "--name", "t", "--address", address)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return storage / "t"


@pytest.mark.slow
def test_every_trial_is_an_mlflow_run_with_its_config_and_its_scores_per_epoch(tracked):
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tracked / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("t")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        assert run.data.params["strategy"] == "infonce" and "lr" in run.data.params and run.data.tags["sweep"] == "t"
        history = client.get_metric_history(run.info.run_id, "linear_acc")
        assert [m.step for m in history] == list(range(1, len(history) + 1)) and 1 <= len(history) <= EPOCHS
        assert all(0 <= m.value <= 1 for m in history)
        assert "training_iteration" not in run.data.metrics and "pid" not in run.data.metrics  # Ray's own


@pytest.mark.slow
def test_a_sweeps_tensorboard_tags_are_sweep_trains(tracked, tmp_path):
    trial_dir = next(p for p in (tracked / "session-0").iterdir() if p.is_dir() and p.name.startswith("0000_"))
    swept = tags(trial_dir)
    assert swept and not any(t.startswith("ray/") for t in swept), sorted(swept)
    assert swept["linear_acc"] == list(range(1, len(swept["linear_acc"]) + 1))  # at the epoch, not the iteration
    config = tmp_path / "c.json"
    import json

    import sweep

    config.write_text(json.dumps({**sweep.load("t", str(tracked.parent)).trials().iloc[0].filter(like="config.")
                                  .rename(lambda k: k[len("config."):]).dropna().to_dict(), "epochs": EPOCHS}))
    train = _sweep("train", "--config", str(config), "--out", str(tmp_path / "retrain"))
    assert train.returncode == 0, train.stderr
    assert set(tags(tmp_path / "retrain")) == set(swept)  # one retrain overlays its sweep
