"""`sweep confirm`: finalists, paired seeds, the statistics, and the real command on the embedded data."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from scipy import stats

from sweep import confirm, ledger
from sweep.ranking import TrialRecord
from trainables.tasks.image.config import ImageConfig

SWEEP = str(Path(sys.executable).with_name("sweep"))
METRIC = "linear_acc"


def _record(number, strategy, scores, status="finished", **config):
    history = [{"epoch": e, METRIC: s} for e, s in enumerate(scores, 1)]
    return TrialRecord(number, {"strategy": strategy, "lr": 0.001, **config}, history, status)


# --- choosing finalists and planning runs ----------------------------------------------------------------------


def test_finalists_are_the_best_per_strategy_full_budget_first_never_failed():
    records = [
        _record(0, "infonce", [0.5, 0.6, 0.7, 0.8]),
        _record(1, "infonce", [0.9, 0.95], status="stopped"),  # higher, but not at full budget
        _record(2, "infonce", [0.5, 0.6, 0.7, 0.75]),
        _record(3, "hard", [0.99, 0.99, 0.99, 0.99], status="failed"),  # failed trials are never finalists
        _record(4, "hard", [0.4, 0.5, 0.6, 0.65]),
        _record(5, "debiased", [], status="failed"),
    ]
    top1 = confirm.choose_finalists(records, METRIC, "max", 4, top_k=1)
    assert sorted(r.number for r in top1) == [0, 4]
    top2 = confirm.choose_finalists(records, METRIC, "max", 4, top_k=2)
    assert sorted(r.number for r in top2) == [0, 2, 4]
    assert sorted(r.number for r in confirm.choose_finalists(records, METRIC, "min", 4, top_k=1)) == [2, 4]


def test_runs_are_paired_seed_major_and_valid_trial_configs():
    finalists = [_record(7, "infonce", [0.8], temperature=0.5), _record(3, "hard", [0.7], tau_plus=0.1, beta=1.0)]
    seeds = confirm.confirm_seeds(0, 3)
    assert seeds == [1, 2, 3]  # never the sweep's own seed 0, whose split selected the finalists
    runs = confirm.plan_runs(finalists, seeds, epochs=12, num_threads=1)
    assert [(r.number, r.strategy, r.seed) for r in runs] == [
        (0, "infonce", 1), (1, "hard", 1), (2, "infonce", 2), (3, "hard", 2), (4, "infonce", 3), (5, "hard", 3)
    ]
    for r in runs:
        assert r.config["seed"] == r.seed and r.config["epochs"] == 12 and r.config["evaluate_test"] is True
        assert r.config["eval_every"] == 12 and r.finalist == (7 if r.strategy == "infonce" else 3)
        ImageConfig.from_dict(r.config)
    assert runs[1].config["beta"] == 1.0 and "beta" not in runs[0].config


# --- statistics ------------------------------------------------------------------------------------------------


def test_spread_mean_sd_and_t_interval():
    s = confirm.spread([1.0, 2.0, 3.0])
    half = stats.t.ppf(0.975, 2) / math.sqrt(3)
    assert (s.n, s.mean, s.sd) == (3, 2.0, 1.0)
    assert s.low == pytest.approx(2 - half) and s.high == pytest.approx(2 + half)
    one = confirm.spread([0.7])
    assert one.mean == 0.7 and math.isnan(one.sd) and math.isnan(one.low)
    assert confirm.spread([]).n == 0


def test_paired_p_matches_scipy_and_handles_degenerate_differences():
    a, b = [0.91, 0.93, 0.95, 0.90], [0.90, 0.90, 0.94, 0.91]
    expected = stats.ttest_rel(a, b).pvalue
    assert confirm.paired_p([x - y for x, y in zip(a, b, strict=True)]) == pytest.approx(expected)
    assert confirm.paired_p([0.01, 0.01, 0.01]) == 0.0  # always ahead by the same amount
    assert confirm.paired_p([0.0, 0.0]) == 1.0
    assert math.isnan(confirm.paired_p([0.2]))


def test_holm_adjusts_in_input_order_and_keeps_nan():
    adjusted = confirm.holm([0.01, 0.04, 0.03, math.nan])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(adjusted[3])


def _saved(rows_by_run):
    return {n: ledger.Saved(f"/x/{n}", 0, rows) for n, rows in rows_by_run.items()}


def _final(val, test, epochs=4, stop=""):
    return [{"epoch": e} for e in range(1, epochs)] + [
        {"epoch": epochs, METRIC: val, "test_" + METRIC: test, "stop_reason": stop}
    ]


def test_summary_ranks_on_test_pairs_by_seed_and_says_when_not_significant():
    finalists = [_record(0, "a", [0.9, 0.9, 0.9, 0.9]), _record(1, "b", [0.8] * 4), _record(2, "c", [0.7] * 4)]
    runs = confirm.plan_runs(finalists, [1, 2, 3], epochs=4, num_threads=1)
    test = {  # b beats a on every seed by ~0.05; c is a noisy near-tie with b
        "a": [0.80, 0.85, 0.82], "b": [0.85, 0.90, 0.87], "c": [0.95, 0.80, 0.86],
    }
    saved = _saved({r.number: _final(0.5, test[r.strategy][r.seed - 1]) for r in runs})
    s = confirm.summarize(runs, saved, {}, METRIC, "max", [1, 2, 3], 1)
    assert [r.strategy for r in s.rows] == ["b", "c", "a"]
    a = next(r for r in s.rows if r.strategy == "a")
    assert a.test == {1: 0.80, 2: 0.85, 3: 0.82} and a.pairs == 3 and a.wins == 3
    assert a.diff == pytest.approx(0.05)
    assert a.p < 1e-9  # the same 0.05 on every seed, up to rounding
    c = next(r for r in s.rows if r.strategy == "c")
    assert c.p == pytest.approx(stats.ttest_rel(test["b"], test["c"]).pvalue)
    assert s.rows[0].test_spread.mean == pytest.approx(0.8733333)
    assert "not significant" in s.verdict and "c cannot be told apart" in s.verdict
    assert "significantly better than a" in s.verdict
    assert s.runs_done == s.runs_total == 9
    assert "| 1 | b |" in confirm.describe(s)


def test_summary_with_top_k_picks_each_strategy_by_validation_never_by_test():
    finalists = [_record(0, "a", [0.9]), _record(1, "a", [0.8]), _record(2, "b", [0.7])]
    runs = confirm.plan_runs(finalists, [1, 2], epochs=4, num_threads=1)
    # finalist 1 has the better test score but the worse validation score: finalist 0 must represent "a"
    scores = {0: (0.9, 0.70), 1: (0.8, 0.99), 2: (0.7, 0.75)}
    saved = _saved({r.number: _final(*scores[r.finalist]) for r in runs})
    s = confirm.summarize(runs, saved, {}, METRIC, "max", [1, 2], 2)
    assert {r.strategy: r.finalist for r in s.rows} == {"a": 0, "b": 2}
    assert [r.strategy for r in s.rows] == ["b", "a"]


def test_summary_counts_failed_and_unfinished_runs_and_compares_common_seeds_only():
    finalists = [_record(0, "a", [0.9]), _record(1, "b", [0.8])]
    runs = confirm.plan_runs(finalists, [1, 2, 3], epochs=4, num_threads=1)
    saved = _saved({
        0: _final(0.9, 0.90), 1: _final(0.8, 0.80),
        2: _final(0.9, 0.91), 3: _final(0.8, math.nan, stop="non-finite loss"),
        4: _final(0.9, 0.92)[:2],  # a run still to finish
    })
    s = confirm.summarize(runs, saved, {5: "error after 2 attempts: boom"}, METRIC, "max", [1, 2, 3], 1)
    a, b = s.rows
    assert (a.strategy, b.strategy) == ("a", "b")
    assert a.test == {1: 0.90, 2: 0.91} and b.test == {1: 0.80}
    assert b.failed == {2: "non-finite loss", 3: "error after 2 attempts: boom"}
    assert b.pairs == 1 and math.isnan(b.p)  # one common seed: no test
    assert s.runs_done == 5 and s.runs_total == 6
    table = confirm.describe(s)
    assert "1/3 (2 failed)" in table and "4 of 6 runs" not in table and "5 of 6 runs done" in table


# --- the command on the embedded data --------------------------------------------------------------------------

EPOCHS = 2
STRATEGIES = ("infonce", "hard")


def _sweep(*args: str, timeout: float = 420) -> subprocess.CompletedProcess:
    return subprocess.run([SWEEP, *args], capture_output=True, text=True, timeout=timeout, env=dict(os.environ))


@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory, ray_session):
    """A finished smoke sweep of two strategies on the session's Ray, never confirmed (tests copy it)."""
    storage = tmp_path_factory.mktemp("confirm")
    address = ray_session.get_runtime_context().gcs_address
    run = _sweep("run", "--smoke-test", "--num-samples", "4", "--epochs", str(EPOCHS), "--max-concurrent", "2",
                 "--strategies", ",".join(STRATEGIES), "--storage", str(storage), "--name", "s", "--address", address)
    assert run.returncode == 0, run.stdout + run.stderr
    return storage, address


def _copy(smoke_sweep, tmp_path) -> tuple[Path, str]:
    storage, address = smoke_sweep
    shutil.copytree(storage / "s", tmp_path / "s")
    return tmp_path, address


def _session_dirs(cdir: Path) -> dict[int, set[int]]:
    return {
        int(s.name.split("-")[1]): {int(d.name[:4]) for d in s.iterdir() if re.fullmatch(r"\d{4}_\w+", d.name)}
        for s in cdir.glob("session-*")
    }


@pytest.mark.slow
def test_confirm_bad_input_is_one_line_and_writes_nothing(tmp_path):
    missing = _sweep("confirm", "nope", "--storage", str(tmp_path))
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "no sweep 'nope'" in missing.stderr
    zero = _sweep("confirm", "nope", "--seeds", "0", "--storage", str(tmp_path))
    assert zero.returncode == 2 and "argument --seeds: 0 must be >= 1" in zero.stderr
    assert list(tmp_path.iterdir()) == []


def _wait_cluster_free(ray_session, timeout: float = 120) -> None:
    """After a driver was killed: wait until Ray has ended its workers (every CPU free again)."""
    deadline = time.monotonic() + timeout
    total = ray_session.cluster_resources().get("CPU", 0)
    while time.monotonic() < deadline:
        if ray_session.available_resources().get("CPU", 0) >= total:
            time.sleep(0.5)  # a last checkpoint copy in flight
            return
        time.sleep(0.2)
    pytest.fail("the killed driver's workers still hold the cluster")


@pytest.mark.slow
def test_confirm_gives_one_row_per_strategy_with_s_paired_test_scores(smoke_sweep, tmp_path):
    storage, address = _copy(smoke_sweep, tmp_path)
    args = ("--storage", str(storage), "--address", address)
    done = _sweep("confirm", "s", "--seeds", "2", "--max-concurrent", "2", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    cdir = storage / "s" / confirm.CONFIRM_DIR
    summary = confirm.load_summary(str(storage / "s"))
    assert sorted(r.strategy for r in summary.rows) == sorted(STRATEGIES)
    for row in summary.rows:
        assert sorted(row.test) == [1, 2] and all(0.0 <= v <= 1.0 for v in row.test.values())
    assert summary.runs_done == summary.runs_total == 4
    assert "confirmation of s:" in done.stdout and "seeds 1, 2" in done.stdout
    assert (cdir / confirm.RESULT_FILE).read_text().count("| 1 |") == 1

    # every run trained to the full budget once, its test score only at the end
    for number, saved in ledger.newest_checkpoints(str(cdir)).items():
        assert [h["epoch"] for h in saved.history] == list(range(1, EPOCHS + 1)), number
        assert "test_" + METRIC in saved.history[-1] and "test_" + METRIC not in saved.history[0]

    # again: nothing to compute, the same table; another --seeds is refused in one line
    again = _sweep("confirm", "s", *args)
    assert again.returncode == 0 and "confirming" not in again.stdout and _session_dirs(cdir).keys() == {0}
    other = _sweep("confirm", "s", "--seeds", "3", *args)
    assert other.returncode == 2 and len(other.stderr.strip().splitlines()) == 1 and "--seeds 2" in other.stderr

    status = _sweep("status", "s", "--storage", str(storage))
    assert "confirmation: finished, 4 of 4 runs done" in status.stdout

    # the report takes it in: one Parquet row per run, the same seeds for every strategy
    assert _sweep("report", "s", "--storage", str(storage)).returncode == 0
    rows = pq.read_table(storage / "s" / "report" / "confirm.parquet").to_pylist()
    assert len(rows) == 4 and {r["state"] for r in rows} == {"finished"}
    assert {s: sorted(r["seed"] for r in rows if r["strategy"] == s) for s in STRATEGIES} == {
        s: [1, 2] for s in STRATEGIES
    }
    md = (storage / "s" / "report" / "report.md").read_text()
    assert "## Confirmation on the test split" in md and "![" in md


@pytest.mark.slow
def test_confirm_killed_then_run_again_continues_without_redoing_finished_runs(smoke_sweep, tmp_path, ray_session):
    storage, address = _copy(smoke_sweep, tmp_path)
    cdir = storage / "s" / confirm.CONFIRM_DIR
    log = tmp_path / "confirm.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            [SWEEP, "confirm", "s", "--seeds", "3", "--max-concurrent", "1", "--storage", str(storage), "--address",
             address], stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ),
        )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            saved = ledger.newest_checkpoints(str(cdir)) if cdir.exists() else {}
            if any(s.epoch >= EPOCHS for s in saved.values()):
                break
            time.sleep(0.05)
        assert proc.poll() is None, log.read_text()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    _wait_cluster_free(ray_session)
    before = {n: s.epoch for n, s in ledger.newest_checkpoints(str(cdir)).items()}
    finished_before = {n for n, e in before.items() if e >= EPOCHS}
    assert finished_before and len(finished_before) < 6
    plan_before = json.loads((cdir / confirm.PLAN_FILE).read_text())

    again = _sweep("confirm", "s", "--storage", str(storage), "--address", address)
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads((cdir / confirm.PLAN_FILE).read_text())["runs"] == plan_before["runs"]
    dirs = _session_dirs(cdir)
    assert not (dirs.get(1, set()) & finished_before)  # finished runs are not run again
    saved = ledger.newest_checkpoints(str(cdir))
    assert sorted(saved) == list(range(6))
    for number, s in saved.items():
        assert [h["epoch"] for h in s.history] == list(range(1, EPOCHS + 1)), number
    summary = confirm.load_summary(str(storage / "s"))
    assert summary.runs_done == 6 and all(sorted(r.test) == [1, 2, 3] for r in summary.rows)
