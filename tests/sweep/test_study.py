"""Our ASHA and Optuna wiring, fed synthetic results: no trial runs, no Ray cluster starts."""

from __future__ import annotations

import math

import optuna
import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from search_spaces import SPACES
from sweep.study import TIME_ATTR, asha_rungs, equal_share, make_scheduler, make_searcher

optuna.logging.set_verbosity(optuna.logging.WARNING)
METRIC, MODE = "linear_acc", "max"


def _asha(max_t=8):
    scheduler = make_scheduler("asha", max_t)
    scheduler.set_search_properties(METRIC, MODE)
    return scheduler


def _trial(i):
    return Trial("__fake", trial_id=f"t{i}", config={}, stub=True)


def test_rungs_for_the_default_budget():
    assert asha_rungs(12, 2, 2) == [2, 4, 8]
    assert asha_rungs(8, 1, 2) == [1, 2, 4]


def test_asha_decides_on_our_epoch_not_on_training_iteration():
    scheduler = _asha()
    good, bad = _trial(0), _trial(1)
    for t in (good, bad):
        scheduler.on_trial_add(None, t)
    # training_iteration says 1 (a resumed trial), the epoch says rung 1 (epoch 1 with grace 1)
    first = scheduler.on_trial_result(None, good, {TIME_ATTR: 1, METRIC: 0.9, "training_iteration": 7})
    second = scheduler.on_trial_result(None, bad, {TIME_ATTR: 1, METRIC: 0.1, "training_iteration": 7})
    assert first == TrialScheduler.CONTINUE
    assert second == TrialScheduler.STOP


def test_asha_keeps_a_better_trial_and_ignores_results_without_the_metric():
    scheduler = _asha()
    trials = [_trial(i) for i in range(3)]
    for t in trials:
        scheduler.on_trial_add(None, t)
    assert scheduler.on_trial_result(None, trials[0], {TIME_ATTR: 1, METRIC: 0.5}) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, trials[1], {TIME_ATTR: 1, METRIC: 0.8}) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, trials[2], {TIME_ATTR: 1}) == TrialScheduler.CONTINUE


def test_asha_stops_every_trial_at_the_full_budget():
    scheduler = _asha(max_t=4)
    t = _trial(0)
    scheduler.on_trial_add(None, t)
    assert scheduler.on_trial_result(None, t, {TIME_ATTR: 4, METRIC: 0.9}) == TrialScheduler.STOP


def test_unknown_scheduler_and_bad_grace_are_rejected():
    assert isinstance(make_scheduler("fifo", 8), FIFOScheduler)
    with pytest.raises(ValueError, match="asha or fifo"):
        make_scheduler("hyperband", 8)
    with pytest.raises(ValueError, match="grace_period"):
        make_scheduler("asha", 8, grace_period=9)


def _searcher(max_t=8):
    s = make_searcher(
        SPACES["digits"].space,
        metric=METRIC,
        mode=MODE,
        seed=0,
        max_t=max_t,
        strategies=("infonce", "hard"),
        num_samples=4,
    )
    return s


def _state(searcher, trial_id):
    return searcher._ot_trials[trial_id].storage.get_trial(searcher._ot_trials[trial_id]._trial_id)


def test_trial_stopped_early_is_told_to_optuna_as_pruned_at_its_epoch():
    s = _searcher()
    s.suggest("a")
    for epoch, score in ((1, 0.3), (2, 0.4)):
        s.on_trial_result("a", {TIME_ATTR: epoch, METRIC: score, "training_iteration": epoch})
    s.on_trial_complete("a", {TIME_ATTR: 2, METRIC: 0.4})
    frozen = _state(s, "a")
    assert frozen.state == optuna.trial.TrialState.PRUNED
    assert frozen.intermediate_values == {1: 0.3, 2: 0.4}


def test_trial_at_full_budget_is_complete_with_its_final_score():
    s = _searcher(max_t=2)
    s.suggest("a")
    s.on_trial_result("a", {TIME_ATTR: 1, METRIC: 0.3})
    s.on_trial_complete("a", {TIME_ATTR: 2, METRIC: 0.7})
    frozen = _state(s, "a")
    assert frozen.state == optuna.trial.TrialState.COMPLETE and frozen.value == 0.7


def test_errors_and_nan_scores_are_failures_not_running_forever():
    s = _searcher()
    s.suggest("a")
    s.suggest("b")
    s.on_trial_complete("a", None, error=True)
    s.on_trial_complete("b", {TIME_ATTR: 8, METRIC: math.nan})
    assert _state(s, "a").state == optuna.trial.TrialState.FAIL
    assert _state(s, "b").state == optuna.trial.TrialState.FAIL


def test_equal_share_is_round_robin():
    assert [p["strategy"] for p in equal_share(["a", "b", "c"], 7)] == ["a", "b", "c", "a", "b", "c", "a"]
