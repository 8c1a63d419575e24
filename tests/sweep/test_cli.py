"""The real `sweep` console script in a subprocess: bad input, `spaces`, `train`, and one smoke sweep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SWEEP = str(Path(sys.executable).with_name("sweep"))


def _sweep(*args, cwd=None, timeout=300, env=None):
    return subprocess.run(
        [SWEEP, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def _one_clear_line(proc):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_unknown_space_is_one_line_and_exit_2(tmp_path):
    line = _one_clear_line(_sweep("run", "--space", "nope", "--storage", str(tmp_path)))
    assert "unknown search space 'nope'" in line and "digits" in line
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_unknown_config_key_is_one_line_and_exit_2(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("strategy: hard\nbetaa: 1.0\n")
    line = _one_clear_line(_sweep("train", "--config", str(cfg)))
    assert "`betaa`" in line


def test_missing_dataset_root_is_one_line_and_exit_2(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"dataset": "cifar10", "data_root": str(tmp_path / "nowhere")}))
    line = _one_clear_line(_sweep("train", "--config", str(cfg)))
    assert "cifar10" in line and "nowhere" in line
    line = _one_clear_line(
        _sweep(
            "run",
            "--space",
            "stl10_hcl",
            "--storage",
            str(tmp_path / "s"),
            "--data-root",
            str(tmp_path / "nowhere"),
        )
    )
    assert "stl10" in line


@pytest.mark.parametrize("args", [["--num-samples", "0"], ["--space", "/no/file.py:space"]])
def test_other_bad_run_arguments_are_one_line(args, tmp_path):
    _one_clear_line(_sweep("run", "--storage", str(tmp_path), *args))


def test_missing_config_file_is_one_line(tmp_path):
    _one_clear_line(_sweep("train", "--config", str(tmp_path / "none.yaml")))


def test_spaces_lists_every_study_on_one_line_each():
    proc = _sweep("spaces")
    assert proc.returncode == 0
    names = [line.split()[0] for line in proc.stdout.strip().splitlines()]
    assert names == ["digits", "stl10_hcl"]


@pytest.mark.slow
def test_train_runs_without_ray_and_resumes(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "strategy: hard\nbeta: 0.5\nepochs: 2\nlimit: 100\nwidth: 8\nproj_hidden_dim: 16\n"
        "proj_dim: 8\nprobe_epochs: 10\nbatch_size: 32\n"
    )
    out = tmp_path / "run"
    proc = _sweep("train", "--config", str(cfg), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "epoch   2/2" in proc.stdout
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert (out / "checkpoint.pt").exists() and list(out.glob("events.out.tfevents*"))
    # a second call finds the checkpoint at the last epoch and has nothing left to do
    again = _sweep("train", "--config", str(cfg), "--out", str(out))
    assert again.returncode == 0 and "resuming" in again.stdout and "epoch   2/2" not in again.stdout


@pytest.mark.slow
def test_smoke_sweep_end_to_end(tmp_path, ray_session):
    address = ray_session.get_runtime_context().gcs_address
    proc = _sweep(
        "run",
        "--smoke-test",
        "--storage",
        str(tmp_path),
        "--name",
        "smoke",
        "--address",
        address,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ranking by validation linear_acc" in proc.stdout
    exp = tmp_path / "smoke"
    assert json.loads((exp / "sweep.json").read_text())["num_samples"] == 4
    assert "| rank | strategy |" in (exp / "ranking.md").read_text()
    trial_dirs = [d for d in exp.iterdir() if d.is_dir() and (d / "params.json").exists()]
    assert len(trial_dirs) == 4
    for d in trial_dirs:
        assert list(d.glob("events.out.tfevents*")), f"no TensorBoard events in {d}"
        rows = [json.loads(line) for line in (d / "result.json").read_text().splitlines()]
        assert rows and {"epoch", "loss", "linear_acc", "knn_acc", "time_train_s"} <= set(rows[-1])
        assert list(d.glob("checkpoint_*/state.pt"))
    strategies = {json.loads((d / "params.json").read_text())["strategy"] for d in trial_dirs}
    assert len(strategies) == 4  # round-robin: four trials, four different strategies


def test_local_ray_listens_on_loopback_only(ray_session):
    import psutil

    port = int(ray_session.get_runtime_context().gcs_address.rsplit(":", 1)[1])
    listening = [
        c.laddr.ip for c in psutil.net_connections(kind="inet") if c.status == "LISTEN" and c.laddr.port == port
    ]
    assert listening, "the GCS port is not listening"
    assert all(ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for ip in listening), listening
