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

from sweep import confirm, ledger, race
from sweep.ranking import TrialRecord
from trainables.tasks.image.config import ImageConfig

SWEEP = str(Path(sys.executable).with_name("sweep"))
METRIC = "linear_acc"


def _record(number, strategy, scores, status="finished", **config):
    history = [{"epoch": e, METRIC: s} for e, s in enumerate(scores, 1)]
    return TrialRecord(number, {"strategy": strategy, "lr": 0.001, **config}, history, status)


# --- choosing finalists and planning runs ----------------------------------------------------------------------


def test_finalists_are_each_strategys_best_full_budget_first_never_failed_in_ranking_order():
    records = [
        _record(0, "infonce", [0.5, 0.6, 0.7, 0.8]),
        _record(1, "infonce", [0.9, 0.95], status="stopped"),  # higher, but not at full budget
        _record(2, "infonce", [0.5, 0.6, 0.7, 0.75]),
        _record(3, "hard", [0.99, 0.99, 0.99, 0.99], status="failed"),  # failed trials are never finalists
        _record(4, "hard", [0.4, 0.5, 0.6, 0.85]),
        _record(5, "debiased", [], status="failed"),
    ]
    assert [(f.strategy, f.trial) for f in confirm.choose_finalists(records, METRIC, "max", 4)] == [
        ("hard", 4), ("infonce", 0)
    ]
    assert [f.trial for f in confirm.choose_finalists(records, METRIC, "min", 4)] == [2, 4]


def test_runs_are_paired_round_major_and_valid_trial_configs():
    finalists = confirm.choose_finalists(
        [_record(7, "infonce", [0.8], temperature=0.5), _record(3, "hard", [0.7], tau_plus=0.1, beta=1.0)],
        METRIC, "max", 1)
    seeds = confirm.confirm_seeds(0, 3)
    assert seeds == [1, 2, 3]  # never the sweep's own seed 0, whose split selected the finalists
    plan = confirm.RacePlan("s", METRIC, "max", 12, 1, race.Rules(max_seeds=3), seeds, finalists, {})
    runs = [plan.run(n) for n in range(6)]
    assert [(f.strategy, seed) for f, seed, _ in runs] == [
        ("infonce", 1), ("hard", 1), ("infonce", 2), ("hard", 2), ("infonce", 3), ("hard", 3)
    ]
    for _, seed, config in runs:
        assert config["seed"] == seed and config["epochs"] == 12 and config["evaluate_test"] is True
        assert config["eval_every"] == 12
        ImageConfig.from_dict(config)
    assert runs[1][2]["beta"] == 1.0 and "beta" not in runs[0][2]
    assert confirm.RacePlan.from_json(plan.to_json()) == plan
    assert plan.number(2, "hard") == 5


def test_the_race_hands_out_the_rounds_before_min_seeds_at_once_then_runs_one_round_ahead():
    from sweep.study import TRIAL_KEY, RaceSearcher

    finalists = confirm.choose_finalists(
        [_record(0, "infonce", [0.8]), _record(1, "hard", [0.7], tau_plus=0.1, beta=1.0),
         _record(2, "debiased", [0.6], tau_plus=0.1)], METRIC, "max", 1)
    plan = confirm.RacePlan("s", METRIC, "max", 4, 1, race.Rules(max_seeds=5, min_seeds=3),
                            confirm.confirm_seeds(0, 5), finalists, {})
    searcher = RaceSearcher(plan, {}, {}, 0, lambda: False, lambda _: None, log=lambda _: None)
    handed = [searcher.suggest(f"t{i}")[TRIAL_KEY] for i in range(9)]
    assert handed == list(range(9))  # rounds 1 to 3: nothing can be dropped for its score before round 3
    assert searcher.suggest("t9") is None  # round 4 depends on the outcome of round 3
    outcome = {"epoch": 4, METRIC: 0.5, "test_" + METRIC: 0.5}
    scores = [0.80, 0.81, 0.79, 0.79, 0.80, 0.82, 0.81, 0.79, 0.80]  # no strategy significantly worse
    for i, score in enumerate(scores):
        searcher.on_trial_complete(f"t{i}", {**outcome, METRIC: score})
    assert searcher.state().rounds == 3
    # round 4 in finalist order, then round 5 ahead of round 4's result, the best mean first
    assert [searcher.suggest(f"t{i}")[TRIAL_KEY] for i in range(9, 15)] == [9, 10, 11, 14, 12, 13]
    assert searcher.suggest("t15") is None and all(searcher.needed(n) for n in range(9, 15))
    searcher.on_trial_complete("t10", {"epoch": 3, "stop_reason": "collapsed embeddings"})  # hard's round 4 fails
    for i, score in ((9, 0.8), (11, 0.81)):
        searcher.on_trial_complete(f"t{i}", {**outcome, METRIC: score})
    assert searcher.state().rounds == 4 and "hard" in searcher.state().dropped
    assert not searcher.needed(13) and searcher.needed(12)  # hard's run ahead no longer counts

    # a failed run: its strategy gets no further run of the block, and is dropped when its round completes
    failing = RaceSearcher(plan, {}, {}, 0, lambda: False, lambda _: None, log=lambda _: None)
    failing.suggest("a")  # run 0: infonce, round 1
    failing.on_trial_complete("a", {"epoch": 2, "stop_reason": "collapsed embeddings"})
    rest = []
    while (config := failing.suggest(f"b{len(rest)}")) is not None:
        rest.append(config[TRIAL_KEY])
    assert rest == [1, 2, 4, 5, 7, 8]


def test_a_spent_time_budget_lets_the_round_in_flight_finish_and_runs_nothing_after_it():
    from sweep.study import TRIAL_KEY, RaceSearcher

    finalists = confirm.choose_finalists([_record(0, "infonce", [0.8]), _record(1, "hard", [0.7])], METRIC, "max", 1)
    plan = confirm.RacePlan("s", METRIC, "max", 4, 1, race.Rules(max_seeds=6, min_seeds=2),
                            confirm.confirm_seeds(0, 6), finalists, {})
    spent, recorded = [False], []
    searcher = RaceSearcher(plan, {}, {}, 0, lambda: spent[0], recorded.append, log=lambda _: None)
    assert [searcher.suggest(f"t{i}")[TRIAL_KEY] for i in range(4)] == [0, 1, 2, 3]  # rounds 1 and 2
    spent[0] = True
    assert searcher.suggest("t4") is None and searcher.last_round == 1  # round 1 is in flight: it finishes
    assert searcher.needed(0) and not searcher.needed(2)
    for i, score in enumerate((0.80, 0.81)):
        searcher.on_trial_complete(f"t{i}", {"epoch": 4, METRIC: score, "test_" + METRIC: score})
    assert searcher.suggest("t5") == RaceSearcher.FINISHED
    assert recorded[-1].stopped_after == 1 and searcher.state().stopped == "time budget"


def test_a_runs_outcome_is_read_from_its_last_row():
    final = {"epoch": 4, METRIC: 0.8, "test_" + METRIC: 0.75}
    assert confirm.outcome_of(final, METRIC, 4) == race.Outcome(0.8, 0.75)
    assert confirm.outcome_of({**final, "epoch": 3}, METRIC, 4) is None  # still to run
    assert confirm.outcome_of(None, METRIC, 4) is None
    stopped = confirm.outcome_of({"epoch": 2, "stop_reason": "collapsed embeddings"}, METRIC, 4)
    assert stopped.failed == "collapsed embeddings at epoch 2" and stopped.val is None
    assert confirm.outcome_of({**final, METRIC: math.nan}, METRIC, 4).failed.startswith("no finite validation")


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
    one = _sweep("confirm", "nope", "--max-seeds", "1", "--storage", str(tmp_path))
    assert one.returncode == 2 and "argument --max-seeds: 1 must be >= 2" in one.stderr
    above = _sweep("confirm", "nope", "--max-seeds", "3", "--min-seeds", "4", "--storage", str(tmp_path))
    assert above.returncode == 2 and "--min-seeds is 4 but must be between 2 and --max-seeds (3)" in above.stderr
    alone = _sweep("run", "--smoke-test", "--max-seeds", "4", "--storage", str(tmp_path))
    assert alone.returncode == 2 and "add --confirm" in alone.stderr
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


RACE = ("--max-seeds", "3", "--min-seeds", "2")


@pytest.mark.slow
def test_confirm_races_the_finalists_on_paired_seeds_and_shows_the_answer(smoke_sweep, tmp_path):
    storage, address = _copy(smoke_sweep, tmp_path)
    args = ("--storage", str(storage), "--address", address)
    done = _sweep("confirm", "s", *RACE, "--max-concurrent", "2", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    cdir = storage / "s" / confirm.CONFIRM_DIR
    plan, answer = confirm.load_answer(str(storage / "s"))
    assert sorted(f.strategy for f in plan.finalists) == sorted(STRATEGIES) and plan.seeds == [1, 2, 3]
    assert answer.state.finished and 2 <= answer.state.rounds <= 3
    saved = ledger.newest_checkpoints(str(cdir))
    # every round ran every strategy still in the race, on the same seed; nothing beyond
    for r in range(answer.state.rounds):
        for strategy in STRATEGIES:
            in_race = strategy in answer.state.alive or answer.state.dropped[strategy].after_round > r
            assert (plan.number(r, strategy) in saved) == in_race
    assert len(saved) == answer.runs_done
    for number, s in saved.items():  # every run trained to the full budget once, its test score only at the end
        assert [h["epoch"] for h in s.history] == list(range(1, EPOCHS + 1)), number
        assert "test_" + METRIC in s.history[-1] and "test_" + METRIC not in s.history[0]
    assert done.stdout.rstrip().endswith(answer.verdict)  # the answer in one sentence, last
    assert "confirmation of s:" in done.stdout and "| 1 | " in done.stdout
    assert (cdir / confirm.RESULT_FILE).read_text().count("| 1 |") == 1

    # again: nothing to compute, the same answer; other rules are refused in one line
    again = _sweep("confirm", "s", *args)
    assert again.returncode == 0 and "racing" not in again.stdout and again.stdout.rstrip().endswith(answer.verdict)
    other = _sweep("confirm", "s", "--max-seeds", "5", *args)
    assert other.returncode == 2 and len(other.stderr.strip().splitlines()) == 1 and "--max-seeds 3" in other.stderr

    status = _sweep("status", "s", "--storage", str(storage))
    assert "confirmation (a race of 2 finalists): finished" in status.stdout and answer.verdict in status.stdout

    # the report takes it in: one Parquet row per run, paired seeds
    assert _sweep("report", "s", "--storage", str(storage)).returncode == 0
    rows = pq.read_table(storage / "s" / "report" / "confirm.parquet").to_pylist()
    assert len(rows) == len(saved) and {r["state"] for r in rows} == {"finished"}
    assert {(r["round"], r["seed"]) for r in rows} == {(k + 1, k + 1) for k in range(answer.state.rounds)}
    md = (storage / "s" / "report" / "report.md").read_text()
    assert "## Confirmation: a race on fresh seeds" in md and "figures/confirm.png" in md


@pytest.mark.slow
def test_run_confirm_killed_mid_race_is_finished_by_resume_without_redoing_a_run(tmp_path, ray_session):
    """The one-command pipeline (sweep, race, report): SIGKILL during the race, `sweep resume` finishes it."""
    address = ray_session.get_runtime_context().gcs_address
    storage, log = tmp_path / "store", tmp_path / "run.log"
    cdir = storage / "p" / confirm.CONFIRM_DIR
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            [SWEEP, "run", "--confirm", *RACE, "--smoke-test", "--num-samples", "4", "--epochs", str(EPOCHS),
             "--strategies", ",".join(STRATEGIES), "--max-concurrent", "1", "--storage", str(storage), "--name", "p",
             "--address", address], stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ),
        )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            saved = ledger.newest_checkpoints(str(cdir)) if cdir.exists() else {}
            if any(s.epoch >= EPOCHS for s in saved.values()):  # the race's first run has finished
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
    plan_before = json.loads((cdir / confirm.PLAN_FILE).read_text())
    assert finished_before and not (storage / "p" / "report").exists()

    again = _sweep("resume", "p", "--storage", str(storage), "--address", address)
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads((cdir / confirm.PLAN_FILE).read_text()) == plan_before  # the race's plan is fixed once
    dirs = _session_dirs(cdir)
    assert not (set().union(*(d for k, d in dirs.items() if k > 0)) & finished_before)  # no finished run again
    plan, answer = confirm.load_answer(str(storage / "p"))
    assert answer.state.finished and (storage / "p" / "report" / "report.html").is_file()
    for number, s in ledger.newest_checkpoints(str(cdir)).items():
        assert [h["epoch"] for h in s.history] == list(range(1, EPOCHS + 1)), number
    assert again.stdout.rstrip().endswith(answer.verdict)
    # and once more: everything is done, it only shows the answer
    done = _sweep("resume", "p", "--storage", str(storage), "--address", address)
    assert done.returncode == 0 and "racing" not in done.stdout and done.stdout.rstrip().endswith(answer.verdict)
