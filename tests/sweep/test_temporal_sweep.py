"""The temporal task through the real CLI: a smoke sweep, then a report with the odd-one-out levels."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

SWEEP = str(Path(sys.executable).with_name("sweep"))


def _sweep(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SWEEP, *args], capture_output=True, text=True, timeout=420, env=dict(os.environ))


@pytest.mark.slow
def test_temporal_context_smoke_sweep_reports_levels_against_p_change_room(tmp_path, ray_session):
    address = ray_session.get_runtime_context().gcs_address
    run = _sweep("run", "--space", "temporal_context", "--smoke-test", "--num-samples", "4", "--max-concurrent", "2",
                 "--storage", str(tmp_path), "--name", "tc", "--address", address)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "ranking by validation ooo_mean" in run.stdout
    assert _sweep("report", "tc", "--storage", str(tmp_path)).returncode == 0
    summary = pq.read_table(tmp_path / "tc" / "report" / "summary.parquet").to_pylist()
    assert sorted(r["strategy"] for r in summary) == ["classic", "classic", "time", "time"]
    assert all(r["config.p_change_room"] is not None for r in summary if r["strategy"] == "time")
    md = (tmp_path / "tc" / "report" / "report.md").read_text()
    assert "| strategy | ooo_category | ooo_context | ooo_object |" in md
    assert (tmp_path / "tc" / "report" / "figures" / "levels.png").is_file() and "figures/levels.png" in md
