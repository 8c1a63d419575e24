"""The audio-visual task through the real CLI: a smoke sweep over every strategy, then its report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from trainables.strategies import AUDIO_VISUAL_STRATEGIES

SWEEP = str(Path(sys.executable).with_name("sweep"))


def _sweep(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SWEEP, *args], capture_output=True, text=True, timeout=420, env=dict(os.environ))


@pytest.mark.slow
def test_av_sampling_smoke_sweep_ranks_every_strategy_in_the_papers_table(tmp_path, ray_session):
    address = ray_session.get_runtime_context().gcs_address
    n = len(AUDIO_VISUAL_STRATEGIES)
    run = _sweep("run", "--space", "av_sampling", "--smoke-test", "--num-samples", str(n), "--max-concurrent", "2",
                 "--storage", str(tmp_path), "--name", "av", "--address", address)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "ranking by validation linear_acc" in run.stdout
    assert _sweep("report", "av", "--storage", str(tmp_path)).returncode == 0
    summary = pq.read_table(tmp_path / "av" / "report" / "summary.parquet").to_pylist()
    assert sorted(r["strategy"] for r in summary) == sorted(AUDIO_VISUAL_STRATEGIES)  # one trial each
    trials = pq.read_table(tmp_path / "av" / "report" / "trials.parquet").to_pylist()
    soft = {r["trial_id"] for r in trials if AUDIO_VISUAL_STRATEGIES[r["strategy"]].positive == "soft_class"}
    assert soft and all(r["positive_purity"] is not None for r in trials if r["trial_id"] in soft)
    md = (tmp_path / "av" / "report" / "report.md").read_text()
    # the paper's shape: strategy x in-domain / out-of-domain, linear / fine-tune
    assert "| strategy | linear_acc | finetune_acc | ood_linear_acc | ood_finetune_acc | epochs |" in md
