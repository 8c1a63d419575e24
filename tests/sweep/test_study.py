"""Our ASHA and our searcher, fed synthetic results: no trial runs, no Ray cluster starts.

The searcher works on an in-memory Optuna study here; in a sweep the same study lives in study.db.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from search_spaces import SPACES
from sweep.ledger import Resumable
from sweep.ranking import asha_rungs
from sweep.scheduling import TIME_ATTR, DurableASHA, StratifiedASHA, make_scheduler
from sweep.study import (
    SweepSearcher,
    TrialIndex,
    build_config,
    equal_share,
    finish_ask,
    trial_seed,
)
from trainables.tune_entry import RESUME_KEY, SESSION_KEY, SWEEP_KEYS, TRIAL_KEY

optuna.logging.set_verbosity(optuna.logging.WARNING)
METRIC, MODE = "linear_acc", "max"


def _asha(epochs=8):
    """Ray's pooled ASHA, made durable: the rung system each strategy of the default scheduler has its own of."""
    scheduler = make_scheduler("pooled_asha", epochs, grace_period=1)
    scheduler.set_search_properties(METRIC, MODE)
    return scheduler


def _trial(i, number=None):
    config = {} if number is None else {TRIAL_KEY: number}
    return Trial("__fake", trial_id=f"t{i}", config=config, stub=True)


def test_rungs_for_the_default_budget():
    assert asha_rungs(12, 2, 2) == [2, 4, 8]
    assert asha_rungs(8, 1, 2) == [1, 2, 4]


def test_asha_decides_on_our_epoch_not_on_training_iteration():
    scheduler = _asha()
    good, bad = _trial(0), _trial(1)
    for t in (good, bad):
        scheduler.on_trial_add(None, t)
    # training_iteration says 7, the epoch says rung 1 (epoch 1 with grace 1)
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
    scheduler = _asha(epochs=4)
    t = _trial(0)
    scheduler.on_trial_add(None, t)
    assert scheduler.on_trial_result(None, t, {TIME_ATTR: 4, METRIC: 0.9}) == TrialScheduler.STOP


def test_unknown_scheduler_and_bad_grace_are_rejected():
    assert isinstance(make_scheduler("fifo", 8), FIFOScheduler)
    assert isinstance(make_scheduler("asha", 8), StratifiedASHA)
    assert isinstance(make_scheduler("pooled_asha", 8), DurableASHA)
    with pytest.raises(ValueError, match="asha, pooled_asha, fifo"):
        make_scheduler("hyperband", 8)
    with pytest.raises(ValueError, match="grace_period"):
        make_scheduler("asha", 8, grace_period=9)


def test_asha_knows_a_resumed_trial_by_its_sweep_number():
    """A resumed trial is a new Tune trial with the same sweep number: ASHA must not judge it a second time at a rung
    it already passed, nor fail on a trial id it has never seen."""
    scheduler = _asha()
    first, other = _trial(0, number=0), _trial(1, number=1)
    for t in (first, other):
        scheduler.on_trial_add(None, t)
    assert scheduler.on_trial_result(None, first, {TIME_ATTR: 1, METRIC: 0.2}) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, other, {TIME_ATTR: 1, METRIC: 0.9}) == TrialScheduler.CONTINUE
    again = _trial(2, number=0)  # trial 0 resumed by the next session, under a new Tune id
    scheduler.on_trial_add(None, again)
    # rung 1 already holds trial 0's score: epoch 1 replayed is not judged again against the better trial 1
    assert scheduler.on_trial_result(None, again, {TIME_ATTR: 1, METRIC: 0.2}) == TrialScheduler.CONTINUE
    scheduler.on_trial_remove(None, again)
    scheduler.on_trial_remove(None, again)  # removing twice is harmless


# --- DurableASHA.replay ---------------------------------------------------------------------------------------------

# (trial, epoch, score) in the order the results reached the live driver. epochs 8 -> rungs at 1, 2, 4.
LIVE_ORDER = [
    (0, 1, 0.5),
    (1, 1, 0.7),
    (2, 1, 0.2),  # below rung 1's median (0.6): stopped
    (3, 1, 0.9),
    (0, 2, 0.6),
    (1, 2, 0.8),
    (3, 2, 0.3),  # below rung 2's median (0.7): stopped
    (0, 3, 0.65),
    (1, 3, 0.85),
    (0, 4, 0.66),
    (1, 4, 0.5),  # below rung 4's value (0.66): stopped
    (0, 5, 0.7),
]


def _run_live(order, epochs=8):
    """Feed results as Tune does: a STOP ends the trial (on_trial_complete) and its later results never come."""
    scheduler = _asha(epochs)
    tune_trials = {n: _trial(n, number=n) for n in {n for n, _, _ in order}}
    for t in tune_trials.values():
        scheduler.on_trial_add(None, t)
    histories, decisions, ended = {}, {}, set()
    for ts, (n, epoch, score) in enumerate(order, start=1):
        if n in ended:
            continue
        row = {TIME_ATTR: epoch, METRIC: score, "timestamp": float(ts)}
        histories.setdefault(n, []).append(row)
        decisions[n] = scheduler.on_trial_result(None, tune_trials[n], dict(row))
        if decisions[n] == TrialScheduler.STOP:
            scheduler.on_trial_complete(None, tune_trials[n], dict(row))
            ended.add(n)
    return scheduler, histories, decisions, ended


@pytest.mark.parametrize("told", [False, True], ids=["driver-killed-before-telling", "outcomes-told"])
def test_replay_rebuilds_the_rungs_so_a_stopped_trial_stays_stopped(told):
    live, histories, decisions, ended = _run_live(LIVE_ORDER)
    assert decisions == {0: "CONTINUE", 1: "STOP", 2: "STOP", 3: "STOP"}
    replayed = _asha()
    # handed over in another order than reported: replay must go by the rows' timestamps
    reordered = {n: histories[n] for n in sorted(histories, reverse=True)}
    assert replayed.replay(reordered, ended if told else set()) == decisions

    # both schedulers judge what comes next alike: trial 0 resumed (a new Tune trial, same number) and a new trial
    resumed, new = _trial(10, number=0), _trial(11, number=4)
    replayed.on_trial_add(None, resumed)
    live_new = _trial(11, number=4)
    for scheduler, t_new in ((live, live_new), (replayed, new)):
        scheduler.on_trial_add(None, t_new)
    for epoch, score in ((6, 0.71), (7, 0.72), (8, 0.73)):
        row = {TIME_ATTR: epoch, METRIC: score}
        assert replayed.on_trial_result(None, resumed, row) == live.on_trial_result(None, _trial(0, number=0), row)
    row = {TIME_ATTR: 1, METRIC: 0.4}  # below rung 1's median of the four first epochs
    assert live.on_trial_result(None, live_new, row) == TrialScheduler.STOP
    assert replayed.on_trial_result(None, new, row) == TrialScheduler.STOP


def test_a_fresh_asha_without_replay_would_let_a_stopped_trial_go_on():
    """Why replay exists: Ray restores ASHA with empty rungs, where every first score passes."""
    _, histories, decisions, _ = _run_live(LIVE_ORDER)
    assert decisions[2] == TrialScheduler.STOP
    fresh = _asha()
    t = _trial(0, number=2)
    fresh.on_trial_add(None, t)
    assert fresh.on_trial_result(None, t, dict(histories[2][-1])) == TrialScheduler.CONTINUE


# --- the searcher -------------------------------------------------------------------------------------------------


def _searcher(epochs=8, *, study=None, space=None, strategies=("infonce", "hard"), num_samples=4, seed=0, **kwargs):
    study = study if study is not None else optuna.create_study(direction="maximize")
    logs = []
    s = SweepSearcher(
        study,
        space or SPACES["digits"].space,
        metric=METRIC,
        mode=MODE,
        epochs=epochs,
        num_samples=num_samples,
        strategies=strategies,
        seed=seed,
        session=kwargs.pop("session", 0),
        overrides=kwargs.pop("overrides", {"epochs": epochs}),
        log=logs.append,
        **kwargs,
    )
    s.logs = logs
    return s


def _frozen(searcher, number):
    return searcher.study.trials[number]


def _plain(config):
    return {k: v for k, v in config.items() if k not in SWEEP_KEYS}


def test_suggest_hands_out_numbered_trials_with_their_sweep_keys():
    s = _searcher(session=3)
    a, b = s.suggest("a"), s.suggest("b")
    assert (a[TRIAL_KEY], b[TRIAL_KEY]) == (0, 1)
    assert a[SESSION_KEY] == b[SESSION_KEY] == 3 and a[RESUME_KEY] is None
    assert (a["strategy"], b["strategy"]) == ("infonce", "hard")  # round-robin, enqueued in the study
    assert a["epochs"] == 8 and a["dataset"] == "digits"
    # the config the trial runs is recorded in the study, without the sweep's own keys
    assert _frozen(s, 0).user_attrs["config"] == _plain(a)
    assert all(_frozen(s, i).state == TrialState.RUNNING for i in (0, 1))


def test_suggest_finishes_when_the_budget_is_asked():
    s = _searcher(num_samples=2)
    assert isinstance(s.suggest("a"), dict) and isinstance(s.suggest("b"), dict)
    assert s.suggest("c") == Searcher.FINISHED
    assert len(s.study.trials) == 2


def test_trial_stopped_early_is_told_to_optuna_as_pruned_at_its_epoch():
    s = _searcher()
    s.suggest("a")
    for epoch, score in ((1, 0.3), (2, 0.4)):
        s.on_trial_result("a", {TIME_ATTR: epoch, METRIC: score, "training_iteration": epoch})
    s.on_trial_complete("a", {TIME_ATTR: 2, METRIC: 0.4})
    frozen = _frozen(s, 0)
    assert frozen.state == TrialState.PRUNED
    assert frozen.intermediate_values == {1: 0.3, 2: 0.4}
    assert frozen.user_attrs["reason"] == "stopped early by the scheduler at epoch 2"


def test_trial_at_full_budget_is_complete_with_its_final_score():
    s = _searcher(epochs=2)
    s.suggest("a")
    s.on_trial_result("a", {TIME_ATTR: 1, METRIC: 0.3})
    s.on_trial_complete("a", {TIME_ATTR: 2, METRIC: 0.7})
    frozen = _frozen(s, 0)
    assert frozen.state == TrialState.COMPLETE and frozen.value == 0.7
    assert frozen.intermediate_values == {1: 0.3, 2: 0.7}


def test_errors_and_nan_scores_are_failures_not_running_forever():
    s = _searcher()
    for tid in "abc":
        s.suggest(tid)
    s.on_trial_complete("a", None, error=True)
    s.on_trial_result("b", {TIME_ATTR: 1, METRIC: math.nan})  # never reported to Optuna
    s.on_trial_complete("b", {TIME_ATTR: 8, METRIC: math.nan})
    s.on_trial_complete("c", {TIME_ATTR: 3, METRIC: 0.5, "stop_reason": "collapsed embeddings"})
    a, b, c = (_frozen(s, i) for i in range(3))
    assert a.state == b.state == c.state == TrialState.FAIL
    assert a.user_attrs["reason"] == "error"
    assert b.user_attrs["reason"] == f"non-finite {METRIC} at epoch 8" and b.intermediate_values == {}
    assert c.user_attrs["reason"] == "collapsed embeddings at epoch 3"
    assert s.live == {}


def test_a_failed_trial_keeps_the_last_line_of_its_error(tmp_path):
    s = _searcher()
    s.suggest("a")
    error = tmp_path / "error.txt"
    error.write_text("Failure # 1 (occurred at ...)\nTraceback (most recent call last):\n  ...\nValueError: boom\n")
    tune_trial = SimpleNamespace(trial_id="a", run_metadata=SimpleNamespace(num_failures=3), error_file=str(error))
    TrialIndex(s).on_trial_start(0, [], tune_trial)
    s.on_trial_complete("a", None, error=True)
    assert _frozen(s, 0).user_attrs["reason"] == "error after 3 attempts: ValueError: boom"


def test_results_of_unknown_trials_are_ignored():
    s = _searcher()
    s.on_trial_result("ghost", {TIME_ATTR: 1, METRIC: 0.5})
    s.on_trial_complete("ghost", {TIME_ATTR: 1, METRIC: 0.5})
    assert s.study.trials == []


def test_invalid_configs_from_a_space_fail_without_compute():
    def space(trial):
        strategy = trial.suggest_categorical("strategy", ["infonce", "hard"])
        trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        return {"epochs": 2} if strategy == "infonce" else {"epochs": -3}

    s = _searcher(space=space, num_samples=4, overrides={})
    first, second = s.suggest("a"), s.suggest("b")
    # trials 1 and 3 (hard) are invalid: each is a FAIL at once and the next trial is asked instead
    assert (first[TRIAL_KEY], second[TRIAL_KEY]) == (0, 2)
    assert s.suggest("c") == Searcher.FINISHED
    states = [t.state for t in s.study.trials]
    assert states == [TrialState.RUNNING, TrialState.FAIL, TrialState.RUNNING, TrialState.FAIL]
    for number in (1, 3):
        frozen = _frozen(s, number)
        assert frozen.user_attrs["reason"].startswith("invalid config: `epochs` is -3")
        assert frozen.intermediate_values == {}
    assert set(s.live.values()) == {0, 2}  # only valid trials reach Tune
    assert any("trial 1 not run" in line for line in s.logs)


def test_a_space_that_raises_is_one_clear_error_and_a_failed_trial():
    def space(trial):
        trial.suggest_categorical("strategy", ["infonce"])
        raise KeyError("oops")

    s = _searcher(space=space, strategies=("infonce",))
    with pytest.raises(ValueError, match="the search space raised KeyError"):
        s.suggest("a")
    assert [t.state for t in s.study.trials] == [TrialState.FAIL]


def test_unfinished_trials_are_resumed_first_under_their_own_number():
    study = optuna.create_study(direction="maximize")
    before = _searcher(study=study)
    old = before.suggest("old")  # trial 0, then the driver died
    resume = [Resumable(0, _plain(old), "/sweeps/x/session-0/0000_infonce/checkpoint_000002", 3)]
    s = _searcher(study=study, session=1, resume=resume)
    again = s.suggest("again")
    assert again[TRIAL_KEY] == 0 and again[SESSION_KEY] == 1
    assert again[RESUME_KEY] == "/sweeps/x/session-0/0000_infonce/checkpoint_000002"
    assert _plain(again) == _plain(old)
    assert len(study.trials) == 1  # nothing new asked for a resumed trial
    new = s.suggest("new")
    assert new[TRIAL_KEY] == 1 and new[RESUME_KEY] is None
    # the resumed trial's results go to trial 0
    s.on_trial_result("again", {TIME_ATTR: 4, METRIC: 0.6})
    assert _frozen(s, 0).intermediate_values == {4: 0.6}


def test_trial_seed_depends_on_seed_and_number_only():
    assert trial_seed(0, 5) == trial_seed(0, 5)
    assert len({trial_seed(0, n) for n in range(20)}) == 20
    assert trial_seed(0, 5) != trial_seed(1, 5)


def test_suggestions_do_not_depend_on_restarts():
    """Two searchers on the same history propose the same next trial, whether or not the driver restarted."""

    def history(searcher, k):
        for i in range(k):
            searcher.suggest(f"t{i}")
            searcher.on_trial_complete(f"t{i}", {TIME_ATTR: 8, METRIC: 0.1 * (i + 1)})

    kept = _searcher(num_samples=8)
    history(kept, 3)
    restarted_study = optuna.create_study(direction="maximize")
    history(_searcher(study=restarted_study, num_samples=8), 3)
    restarted = _searcher(study=restarted_study, num_samples=8, session=1)  # a new driver on the same study
    assert [t.params for t in kept.study.trials] == [t.params for t in restarted_study.trials]
    a, b = kept.suggest("next"), restarted.suggest("next")
    assert a[TRIAL_KEY] == b[TRIAL_KEY] == 3
    assert _plain(a) == _plain(b)
    # a sampler seeded once per driver would replay its first draw: trial 1's (same strategy) params
    assert a["lr"] != kept.study.trials[1].params["lr"]


def test_same_seed_same_trials_other_seed_other_trials():
    def configs(seed):
        s = _searcher(seed=seed, num_samples=6)
        return [_plain(s.suggest(f"t{i}")) for i in range(6)]

    assert configs(3) == configs(3)
    assert configs(3) != configs(4)


def test_equal_share_is_round_robin():
    assert [p["strategy"] for p in equal_share(["a", "b", "c"], 7)] == ["a", "b", "c", "a", "b", "c", "a"]


def test_rebuilt_config_matches_the_asked_one():
    """After a kill between ask and the config's record, the config is rebuilt from the params (reconcile)."""
    s = _searcher(overrides={"epochs": 8, "seed": 5})
    config = _plain(s.suggest("a"))
    rebuilt = build_config(SPACES["digits"].space, optuna.trial.FixedTrial(_frozen(s, 0).params), s.overrides)
    assert rebuilt == config


class _Killed(Exception):
    pass


def test_a_half_asked_trial_is_completed_with_the_parameters_it_had():
    """A driver killed between two suggestions leaves a RUNNING trial with some parameters and no config; the
    resume must finish that ask, not fail on the missing parameters (seen with the study in S3)."""
    space = SPACES["digits"].space
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"strategy": "hard"})
    trial = study.ask()
    asked = []

    class Dying:  # the space's trial, but the driver dies at the third suggestion
        def __getattr__(self, name):
            def suggest(param, *args, **kwargs):
                if len(asked) == 2:
                    raise _Killed
                asked.append(param)
                return getattr(trial, name)(param, *args, **kwargs)

            return suggest

    with pytest.raises(_Killed):
        space(Dying())
    half = study.trials[0]
    assert set(half.params) == {"strategy", *asked[1:]} and "config" not in half.user_attrs
    config = finish_ask(study, half, space, {"epochs": 3}, seed=0)
    again = study.trials[0]
    assert {"tau_plus", "beta", "lr", "temperature"} <= set(again.params)
    assert all(again.params[k] == v for k, v in half.params.items())  # what it had, it keeps
    assert again.user_attrs["config"] == config and config["strategy"] == "hard" and config["epochs"] == 3
