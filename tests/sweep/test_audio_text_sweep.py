"""The audio-text task through the real CLI: a smoke sweep over every selection, then its report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from trainables.strategies import AUDIO_TEXT_STRATEGIES

SWEEP = str(Path(sys.executable).with_name("sweep"))


def _sweep(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SWEEP, *args], capture_output=True, text=True, timeout=420, env=dict(os.environ))


@pytest.mark.slow
def test_audio_text_negatives_smoke_sweep_ranks_every_selection(tmp_path, ray_session):
    address = ray_session.get_runtime_context().gcs_address
    n = len(AUDIO_TEXT_STRATEGIES)
    run = _sweep("run", "--space", "audio_text_negatives", "--smoke-test", "--num-samples", str(n), "--max-concurrent",
                 "2", "--storage", str(tmp_path), "--name", "at", "--address", address)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "ranking by validation map_mean" in run.stdout
    report = _sweep("report", "at", "--storage", str(tmp_path))
    assert report.returncode == 0, report.stderr
    summary = pq.read_table(tmp_path / "at" / "report" / "summary.parquet").to_pylist()
    assert sorted(r["strategy"] for r in summary) == sorted(AUDIO_TEXT_STRATEGIES)  # one trial each: equal budget
    assert all(r["map_mean"] is not None and 0.0 <= r["map_mean"] <= 1.0 for r in summary)
    assert all(r["config.task"] == "audio_text" for r in summary)
    md = (tmp_path / "at" / "report" / "report.md").read_text()
    assert "Ranking by validation map_mean" in md and "hard_ns" in md
