"""The sweep's durable record, read back after a kill: pure functions over files in tmp_path, no Ray cluster."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time

import optuna
import pytest
import torch
from optuna.trial import TrialState

from sweep import ledger
from sweep.ledger import Outcome, Resumable, Saved, judge
from sweep.scheduling import make_scheduler

optuna.logging.set_verbosity(optuna.logging.WARNING)
METRIC = "linear_acc"


# --- judge --------------------------------------------------------------------------------------------------------


def _row(epoch, value=0.5, **extra):
    return {"epoch": epoch, METRIC: value, **extra}


@pytest.mark.parametrize(
    "last, kwargs, expected",
    [
        # an error after its retries wins over everything else
        (_row(8, 0.9), {"error": "error after 2 attempts: boom"},
         Outcome(TrialState.FAIL, None, "error after 2 attempts: boom")),
        (None, {"error": "error"}, Outcome(TrialState.FAIL, None, "error")),
        # no epoch yet: unfinished (resumed from scratch), unless the sweep cut it
        (None, {}, None),
        ({}, {}, None),
        (None, {"cut": "time budget"}, Outcome(TrialState.PRUNED, None, "time budget before its first epoch")),
        # the trial stopped itself: a failure with its reason, even at the full budget
        (_row(3, 0.4, stop_reason="non-finite loss"), {}, Outcome(TrialState.FAIL, None, "non-finite loss at epoch 3")),
        (_row(8, 0.4, stop_reason="collapsed embeddings"), {"stopped": True},
         Outcome(TrialState.FAIL, None, "collapsed embeddings at epoch 8")),
        # a score that is not a finite number is a failure, never a NaN handed to Optuna
        (_row(2, math.nan), {}, Outcome(TrialState.FAIL, None, f"non-finite {METRIC} at epoch 2")),
        (_row(8, math.inf), {}, Outcome(TrialState.FAIL, None, f"non-finite {METRIC} at epoch 8")),
        # an epoch without the score (eval_every > 1) is not a failure: resumed, or pruned without a score if cut
        ({"epoch": 2}, {}, None),
        ({"epoch": 2}, {"cut": "time budget"},
         Outcome(TrialState.PRUNED, None, "time budget at epoch 2, before its next validation score")),
        ({"epoch": 8}, {}, Outcome(TrialState.FAIL, None, f"non-finite {METRIC} at epoch 8")),
        (_row(2, "0.5"), {}, Outcome(TrialState.FAIL, None, f"non-finite {METRIC} at epoch 2")),
        # the full budget: COMPLETE with the last score, whether or not the scheduler also said stop
        (_row(8, 0.9), {}, Outcome(TrialState.COMPLETE, 0.9)),
        (_row(8, 1), {"stopped": True}, Outcome(TrialState.COMPLETE, 1.0)),
        (_row(9, 0.9), {"cut": "time budget"}, Outcome(TrialState.COMPLETE, 0.9)),
        # stopped early: PRUNED at the epoch it reached, with that epoch's score
        (_row(3, 0.4), {"stopped": True}, Outcome(TrialState.PRUNED, 0.4, "stopped early by the scheduler at epoch 3")),
        (_row(3, 0.4), {"cut": "time budget"}, Outcome(TrialState.PRUNED, 0.4, "time budget at epoch 3")),
        # mid-way and nobody stopped it: unfinished, it will be resumed
        (_row(3, 0.4), {}, None),
    ],
)
def test_judge(last, kwargs, expected):
    assert judge(last, 8, METRIC, **kwargs) == expected


def test_judge_returns_a_float_score():
    outcome = judge(_row(8, 1), 8, METRIC)
    assert isinstance(outcome.value, float)


# --- tell and report_history ----------------------------------------------------------------------------------------


def test_tell_is_once_per_trial():
    study = optuna.create_study(direction="maximize")
    study.ask()
    ledger.tell(study, study.trials[0], Outcome(TrialState.COMPLETE, 0.7))
    # a second outcome for the same trial (a late callback, a replay) changes nothing and does not raise
    ledger.tell(study, study.trials[0], Outcome(TrialState.FAIL, None, "late"))
    ledger.tell(study, study.trials[0], Outcome(TrialState.COMPLETE, 0.1))
    t = study.trials[0]
    assert t.state == TrialState.COMPLETE and t.value == 0.7 and "reason" not in t.user_attrs


def test_tell_records_the_reason_and_no_score_for_pruned_and_failed():
    study = optuna.create_study(direction="maximize")
    study.ask()
    study.ask()
    ledger.tell(study, study.trials[0], Outcome(TrialState.PRUNED, 0.4, "stopped early by the scheduler at epoch 3"))
    ledger.tell(study, study.trials[1], Outcome(TrialState.FAIL, None, "non-finite loss at epoch 2"))
    pruned, failed = study.trials
    assert pruned.state == TrialState.PRUNED and pruned.user_attrs["reason"].endswith("epoch 3")
    assert failed.state == TrialState.FAIL and failed.user_attrs["reason"] == "non-finite loss at epoch 2"
    assert pruned.value is None and failed.value is None


def test_tell_survives_the_grid_sampler_stopping_the_study():
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.GridSampler({"x": [1, 2]}, seed=0))
    for _ in range(2):
        study.ask().suggest_categorical("x", [1, 2])
    study.tell(0, 0.5)
    # the last grid point told: GridSampler calls study.stop(), which raises outside optimize() ...
    raw = optuna.create_study(direction="maximize", sampler=optuna.samplers.GridSampler({"x": [1, 2]}, seed=0))
    for _ in range(2):
        raw.ask().suggest_categorical("x", [1, 2])
    raw.tell(0, 0.5)
    with pytest.raises(RuntimeError, match="Study.stop"):
        raw.tell(1, 0.6)
    # ... and ledger.tell takes it as the end of the grid
    ledger.tell(study, study.trials[1], Outcome(TrialState.COMPLETE, 0.6))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert study.trials[1].value == 0.6


def test_report_history_reports_each_new_finite_epoch_once():
    study = optuna.create_study(direction="maximize")
    study.ask()
    history = [_row(1, 0.1), _row(2, math.nan), {"epoch": 3}, _row(4, 0.4)]
    ledger.report_history(study, study.trials[0], history, METRIC)
    assert study.trials[0].intermediate_values == {1: 0.1, 4: 0.4}
    # told again with one more epoch: only the new one is added, the known ones are not overwritten
    ledger.report_history(study, study.trials[0], [_row(1, 0.9), *history[1:], _row(5, 0.5)], METRIC)
    assert study.trials[0].intermediate_values == {1: 0.1, 4: 0.4, 5: 0.5}


# --- checkpoints on disk --------------------------------------------------------------------------------------------


def _ckpt(exp, session, number, index, epochs, *, strategy="infonce", state="ok", history="ok", t0=0.0):
    """A checkpoint as the trainable writes it: state.pt (torch.save, a zip) and history.json (every epoch)."""
    d = exp / f"session-{session}" / f"{number:04d}_{strategy}" / f"checkpoint_{index:06d}"
    d.mkdir(parents=True)
    rows = [{"epoch": e, METRIC: 0.1 * e, "timestamp": t0 + e} for e in range(1, epochs + 1)]
    torch.save({"epoch": epochs}, d / "state.pt")
    if state == "truncated":  # a kill in the middle of the copy
        data = (d / "state.pt").read_bytes()
        (d / "state.pt").write_bytes(data[: len(data) // 2])
    elif state == "missing":
        (d / "state.pt").unlink()
    if history == "ok":
        (d / "history.json").write_text(json.dumps(rows))
    elif history == "broken":
        (d / "history.json").write_text(json.dumps(rows)[:-7])
    elif history == "not rows":
        (d / "history.json").write_text(json.dumps({"epoch": 3}))
    return d


def test_newest_checkpoints_picks_the_most_epochs_then_the_later_session(tmp_path):
    exp = tmp_path / "exp"
    # trial 0: most epochs wins, even from an earlier session
    _ckpt(exp, 0, 0, 1, 2)
    best0 = _ckpt(exp, 0, 0, 2, 3)
    _ckpt(exp, 1, 0, 0, 2)
    # trial 1: a tie on epochs goes to the later session
    _ckpt(exp, 0, 1, 4, 2, strategy="hard")
    best1 = _ckpt(exp, 1, 1, 0, 2, strategy="hard")
    # trial 2: the newest has a truncated state.pt, the next one down is taken
    best2 = _ckpt(exp, 0, 2, 0, 1)
    _ckpt(exp, 0, 2, 1, 2, state="truncated")
    _ckpt(exp, 0, 2, 2, 3, state="missing")
    # trial 3: the newest has a broken history.json
    best3 = _ckpt(exp, 0, 3, 0, 1)
    _ckpt(exp, 1, 3, 0, 4, history="broken")
    _ckpt(exp, 1, 3, 1, 5, history="not rows")
    _ckpt(exp, 1, 3, 2, 6, history="missing")
    # trial 4: nothing loadable at all
    _ckpt(exp, 0, 4, 0, 2, state="truncated")
    # not checkpoints of a trial: ignored
    (exp / "session-0" / "notes").mkdir()
    (exp / "session-0" / "notes" / "history.json").write_text("[]")
    (exp / "session-0" / "0005_x" / "checkpoint_000000" / "deeper").mkdir(parents=True)
    (exp / "session-0" / "0005_x" / "checkpoint_000000" / "deeper" / "history.json").write_text("[]")
    (exp / "session-x" / "0006_x" / "checkpoint_000000").mkdir(parents=True)
    (exp / "session-x" / "0006_x" / "checkpoint_000000" / "history.json").write_text("[]")

    saved = ledger.newest_checkpoints(str(exp))
    assert set(saved) == {0, 1, 2, 3}
    assert (saved[0].path, saved[0].session, saved[0].epoch) == (str(best0), 0, 3)
    assert (saved[1].path, saved[1].session, saved[1].epoch) == (str(best1), 1, 2)
    assert (saved[2].path, saved[2].epoch) == (str(best2), 1)
    assert (saved[3].path, saved[3].epoch) == (str(best3), 1)
    assert [r["epoch"] for r in saved[0].history] == [1, 2, 3]


def test_newest_checkpoints_of_an_empty_or_missing_sweep(tmp_path):
    assert ledger.newest_checkpoints(str(tmp_path)) == {}
    assert ledger.newest_checkpoints(str(tmp_path / "none")) == {}
    assert Saved("p", 0, []).epoch == 0


def test_remove_leftovers_deletes_staging_and_superseded_checkpoints_only(tmp_path):
    exp = tmp_path / "exp"
    kept0 = _ckpt(exp, 0, 0, 2, 3)  # newest of trial 0, in session 0
    later0 = _ckpt(exp, 1, 0, 0, 2)  # a later session's, with fewer epochs: not superseded by an *older* session
    same0 = _ckpt(exp, 0, 0, 1, 2)  # an older one of the same session: Tune's num_to_keep deals with it
    old1 = _ckpt(exp, 0, 1, 0, 2)  # superseded by session 1's
    kept1 = _ckpt(exp, 1, 1, 0, 3)
    lone = _ckpt(exp, 0, 2, 0, 1, state="truncated")  # trial 2 has no loadable checkpoint: nothing of it is deleted
    staging = exp / "session-1" / "0001_infonce" / ".staging"
    (staging / "epoch_00004").mkdir(parents=True)
    (staging / "epoch_00004" / "state.pt").write_bytes(b"half")
    other = exp / "session-1" / "0001_infonce" / "params.json"
    other.write_text("{}")

    saved = ledger.newest_checkpoints(str(exp))
    assert saved[0].path == str(kept0) and saved[1].path == str(kept1)
    ledger.remove_leftovers(str(exp), saved)
    assert not staging.exists() and not old1.exists()
    for d in (kept0, later0, same0, kept1, lone):
        assert d.is_dir(), d
    assert other.exists()
    # nothing is lost: the same newest checkpoints are found afterwards
    assert ledger.newest_checkpoints(str(exp)) == saved


# --- reconcile ------------------------------------------------------------------------------------------------------


def _write(exp, session, number, strategy, rows, index=0):
    d = exp / f"session-{session}" / f"{number:04d}_{strategy}" / f"checkpoint_{index:06d}"
    d.mkdir(parents=True)
    torch.save({"epoch": rows[-1]["epoch"]}, d / "state.pt")
    (d / "history.json").write_text(json.dumps(rows))
    return d


def _rows(ts, *scores, stop_at=None):
    """Epoch rows 1..len(scores), reported at timestamps ts, ts+1, ..."""
    rows = [{"epoch": e, METRIC: s, "timestamp": float(ts + e)} for e, s in enumerate(scores, start=1)]
    if stop_at:
        rows[-1]["stop_reason"] = stop_at
    return rows


def _sweep_study(tmp_path, n):
    exp = tmp_path / "exp"
    study = ledger.create_study(str(exp), "exp", "max")
    for i in range(n):
        trial = study.ask()
        strategy = trial.suggest_categorical("strategy", ["infonce", "hard"])
        lr = trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        trial.set_user_attr("config", {"strategy": strategy, "lr": lr, "epochs": 4, "n": i})
    return exp, study


def _rebuild(trial):
    params = trial.params
    return {**params, "rebuilt": True}


def test_reconcile_brings_the_study_up_to_date_from_the_checkpoints(tmp_path):
    epochs = 4  # ASHA rungs at 1 and 2
    exp, study = _sweep_study(tmp_path, 8)
    _write(exp, 0, 0, "infonce", _rows(0, 0.8, 0.8, 0.8, 0.8))  # full budget, never told
    _write(exp, 0, 1, "infonce", _rows(10, 0.9, 0.85, stop_at="non-finite loss"))
    _write(exp, 0, 2, "infonce", _rows(20, 0.1))  # below the others at rung 1: ASHA stops it
    ckpt3 = _write(exp, 1, 3, "infonce", _rows(30, 0.95, 0.95, 0.95))  # best so far, mid-way
    # trial 4: no checkpoint at all; trial 5: asked but killed before its config was recorded
    study.ask()  # trial 8: from scratch too
    optuna.Trial(study, study.trials[5]._trial_id).set_user_attr("config", None)
    # trial 6 finished and was told; its rows still count in the rungs. Trial 7 failed before its first epoch.
    _write(exp, 0, 6, "infonce", _rows(5, 0.7))
    ledger.tell(study, study.trials[6], Outcome(TrialState.PRUNED, 0.7, "stopped early by the scheduler at epoch 1"))
    ledger.tell(study, study.trials[7], Outcome(TrialState.FAIL, None, "error"))
    before6 = study.trials[6]

    scheduler = make_scheduler("asha", epochs, grace_period=1)
    scheduler.set_search_properties(METRIC, "max")
    saved = ledger.newest_checkpoints(str(exp))
    resumable = ledger.reconcile(study, saved, scheduler, epochs, METRIC, _rebuild)

    t = study.get_trials()
    assert t[0].state == TrialState.COMPLETE and t[0].value == 0.8
    assert t[0].intermediate_values == {1: 0.8, 2: 0.8, 3: 0.8, 4: 0.8}
    assert t[1].state == TrialState.FAIL and t[1].user_attrs["reason"] == "non-finite loss at epoch 2"
    assert t[2].state == TrialState.PRUNED and t[2].intermediate_values == {1: 0.1}
    assert t[2].user_attrs["reason"] == "stopped early by the scheduler at epoch 1"
    assert t[3].state == t[4].state == t[5].state == t[8].state == TrialState.RUNNING
    assert t[3].intermediate_values == {1: 0.95, 2: 0.95, 3: 0.95}
    assert (t[6].state, t[6].value, t[6].user_attrs) == (before6.state, before6.value, before6.user_attrs)
    assert t[7].state == TrialState.FAIL

    by_number = {r.number: r for r in resumable}
    assert sorted(by_number) == [3, 4, 5, 8]
    assert by_number[3] == Resumable(3, t[3].user_attrs["config"], str(ckpt3), 3)
    assert by_number[4] == Resumable(4, t[4].user_attrs["config"], None, 0)
    assert by_number[5].config == {**t[5].params, "rebuilt": True} and by_number[5].checkpoint is None
    assert by_number[8].config == {"rebuilt": True}

    # a second reconcile (a second resume after another kill) finds nothing new to tell
    again = ledger.reconcile(study, saved, make_scheduler("asha", epochs, grace_period=1), epochs, METRIC, _rebuild)
    assert [r.number for r in again] == [3, 4, 5, 8]
    assert [s.state for s in study.get_trials()] == [s.state for s in t]


def test_without_asha_the_low_trial_is_resumed_not_pruned(tmp_path):
    """The PRUNED above comes from the other trials' rows in the rungs: FIFO (no replay) resumes the same trial."""
    exp, study = _sweep_study(tmp_path, 3)
    _write(exp, 0, 0, "infonce", _rows(0, 0.8, 0.8))
    _write(exp, 0, 1, "infonce", _rows(10, 0.9, 0.9))
    ckpt = _write(exp, 0, 2, "infonce", _rows(20, 0.1))
    saved = ledger.newest_checkpoints(str(exp))
    resumable = ledger.reconcile(study, saved, make_scheduler("fifo", 4), 4, METRIC, _rebuild)
    assert [(r.number, r.checkpoint, r.epoch) for r in resumable][2] == (2, str(ckpt), 1)
    assert all(t.state == TrialState.RUNNING for t in study.get_trials())


def test_cut_unfinished_ends_every_running_trial(tmp_path):
    exp, study = _sweep_study(tmp_path, 3)
    _write(exp, 0, 0, "infonce", _rows(0, 0.3, 0.4))
    ledger.tell(study, study.trials[2], Outcome(TrialState.COMPLETE, 0.9))
    saved = ledger.newest_checkpoints(str(exp))
    assert ledger.cut_unfinished(study, saved, 4, METRIC, "time budget") == 2
    t = study.get_trials()
    assert t[0].state == TrialState.PRUNED and t[0].user_attrs["reason"] == "time budget at epoch 2"
    assert t[0].intermediate_values == {1: 0.3, 2: 0.4}
    assert t[1].state == TrialState.PRUNED and t[1].user_attrs["reason"] == "time budget before its first epoch"
    assert t[2].state == TrialState.COMPLETE and t[2].value == 0.9


def test_the_study_database_is_reopened_with_everything_in_it(tmp_path):
    exp, study = _sweep_study(tmp_path, 2)
    ledger.tell(study, study.trials[0], Outcome(TrialState.COMPLETE, 0.9))
    assert ledger.open_study(str(exp)) is None  # no sweep.json: not a sweep
    (exp / ledger.SETTINGS_FILE).write_text("{}")
    again = ledger.open_study(str(exp))
    assert [t.state for t in again.trials] == [TrialState.COMPLETE, TrialState.RUNNING]
    assert again.trials[0].value == 0.9 and again.trials[1].user_attrs["config"]["n"] == 1
    assert ledger.open_study(str(tmp_path / "none")) is None


# --- the driver's record --------------------------------------------------------------------------------------------


def _driver(pid, heartbeat, host=None, state="running"):
    host = socket.gethostname() if host is None else host
    return {"state": state, "sessions": [{"started": heartbeat - 10, "heartbeat": heartbeat, "host": host, "pid": pid}]}


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_is_live():
    now = time.time()
    assert ledger.is_live(_driver(os.getpid(), now), now)
    assert not ledger.is_live(_driver(_dead_pid(), now), now)  # fresh heartbeat, but the process is gone
    assert not ledger.is_live(_driver(os.getpid(), now - ledger.HEARTBEAT_STALE_S - 1), now)  # stale
    assert ledger.is_live(_driver(1, now, host="another-host"), now)  # another host's pid cannot be checked
    assert not ledger.is_live(_driver(os.getpid(), now, state="finished"), now)
    assert not ledger.is_live(_driver(os.getpid(), now, state="interrupted"), now)
    assert not ledger.is_live({"state": "running", "sessions": []}, now)


def test_time_spent_counts_every_session_up_to_its_last_heartbeat():
    driver = {
        "sessions": [
            {"started": 100.0, "heartbeat": 160.0},
            {"started": 200.0, "heartbeat": 230.0},
            {"started": 300.0},  # killed before its first heartbeat
            {"started": 400.0, "heartbeat": 390.0},  # a clock step back counts as nothing
        ]
    }
    assert ledger.time_spent(driver) == 90.0
    assert ledger.time_spent({"sessions": []}) == 0.0


def test_sessions_are_numbered_and_recorded(tmp_path):
    exp = str(tmp_path / "exp")
    assert ledger.read_driver(exp) == {"state": "new", "sessions": []}
    first, _ = ledger.start_session(exp)
    driver = ledger.read_driver(exp)
    driver["state"] = "interrupted"
    ledger.write_driver(exp, driver)
    second, driver = ledger.start_session(exp)
    assert (first, second) == (0, 1)
    on_disk = ledger.read_driver(exp)
    assert on_disk == driver and on_disk["state"] == "running" and len(on_disk["sessions"]) == 2
    assert on_disk["sessions"][-1]["pid"] == os.getpid()
    assert ledger.is_live(on_disk)
