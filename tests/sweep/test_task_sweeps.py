"""Each task through the real CLI: a smoke sweep over its space, then its report (one test per task)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from trainables.tasks import TASKS

AUDIO_TEXT_STRATEGIES = TASKS["audio_text"].strategies
AUDIO_VISUAL_STRATEGIES = TASKS["audio_visual"].strategies

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
    summary = pq.read_table(tmp_path / "at" / "report" / "trials.parquet").to_pylist()
    assert sorted(r["strategy"] for r in summary) == sorted(AUDIO_TEXT_STRATEGIES)  # one trial each: equal budget
    assert all(r["map_mean"] is not None and 0.0 <= r["map_mean"] <= 1.0 for r in summary)
    assert all(r["config.task"] == "audio_text" for r in summary)
    md = (tmp_path / "at" / "report" / "report.md").read_text()
    assert "Ranking by validation map_mean" in md and "hard_ns" in md


@pytest.mark.slow
def test_av_sampling_smoke_sweep_ranks_every_strategy_in_the_papers_table(tmp_path, ray_session):
    address = ray_session.get_runtime_context().gcs_address
    n = len(AUDIO_VISUAL_STRATEGIES)
    run = _sweep("run", "--space", "av_sampling", "--smoke-test", "--num-samples", str(n), "--max-concurrent", "2",
                 "--storage", str(tmp_path), "--name", "av", "--address", address)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "ranking by validation linear_acc" in run.stdout
    assert _sweep("report", "av", "--storage", str(tmp_path)).returncode == 0
    summary = pq.read_table(tmp_path / "av" / "report" / "trials.parquet").to_pylist()
    assert sorted(r["strategy"] for r in summary) == sorted(AUDIO_VISUAL_STRATEGIES)  # one trial each
    epochs = pq.read_table(tmp_path / "av" / "report" / "epochs.parquet").to_pylist()
    soft = {r["trial_id"] for r in epochs if AUDIO_VISUAL_STRATEGIES[r["strategy"]].positive == "soft_class"}
    assert soft and all(r["positive_purity"] is not None for r in epochs if r["trial_id"] in soft)
    md = (tmp_path / "av" / "report" / "report.md").read_text()
    # the paper's shape: strategy x in-domain / out-of-domain, linear / fine-tune
    assert "| strategy | linear_acc | finetune_acc | ood_linear_acc | ood_finetune_acc | epochs |" in md


@pytest.mark.slow
def test_temporal_context_smoke_sweep_reports_levels_against_p_change_room(tmp_path, ray_session):
    address = ray_session.get_runtime_context().gcs_address
    run = _sweep("run", "--space", "temporal_context", "--smoke-test", "--num-samples", "4", "--max-concurrent", "2",
                 "--storage", str(tmp_path), "--name", "tc", "--address", address)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "ranking by validation ooo_mean" in run.stdout
    assert _sweep("report", "tc", "--storage", str(tmp_path)).returncode == 0
    summary = pq.read_table(tmp_path / "tc" / "report" / "trials.parquet").to_pylist()
    assert sorted(r["strategy"] for r in summary) == ["classic", "classic", "time", "time"]
    assert all(r["config.p_change_room"] is not None for r in summary if r["strategy"] == "time")
    md = (tmp_path / "tc" / "report" / "report.md").read_text()
    assert "| strategy | ooo_category | ooo_context | ooo_object |" in md
    assert (tmp_path / "tc" / "report" / "figures" / "levels.png").is_file() and "figures/levels.png" in md


@pytest.mark.slow
def test_a_sweep_scoring_every_other_epoch_runs_and_records_only_the_scored_epochs(tmp_path, ray_session):
    address = ray_session.get_runtime_context().gcs_address
    run = _sweep("run", "--space", "mnist1d", "--smoke-test", "--strategies", "infonce,sp50", "--num-samples", "2",
                 "--epochs", "4", "--set", "eval_every=2", "--storage", str(tmp_path), "--name", "ev",
                 "--address", address)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]  # Tune refused a result without the metric
    assert "NaN" not in run.stdout + run.stderr and "nan" not in run.stdout
    import sweep

    epochs = sweep.load("ev", storage=str(tmp_path)).epochs()
    scored = epochs.dropna(subset=["linear_acc"])
    assert len(epochs) > len(scored) > 0 and set(scored["epoch"]) <= {2, 4} and set(epochs["epoch"]) >= {1, 2}
