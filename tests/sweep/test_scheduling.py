"""Successive halving within each strategy (StratifiedASHA) against Ray's pooled ASHA, fed synthetic results the
way Tune feeds them; and the warnings a sweep prints before it spends compute."""

from __future__ import annotations

import itertools

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from sweep.plan import budget_warnings
from sweep.scheduling import TIME_ATTR, make_scheduler
from trainables.tune_entry import TRIAL_KEY

METRIC, MODE, EPOCHS = "linear_acc", "max", 8


def curve(strategy: str, k: int, epoch: int) -> float:
    """`fast` starts high and ends at 0.77-0.80; `slow` starts low and ends at 0.87-0.90, better than any fast one;
    trial k of a strategy is below trial k - 1, so later arrivals at a rung can be stopped."""
    if strategy == "fast":
        return 0.70 + 0.1 * epoch / EPOCHS - 0.01 * k
    return 0.20 + 0.7 * epoch / EPOCHS - 0.01 * k


TRIALS = [(n, "fast" if n % 2 == 0 else "slow", n // 2) for n in range(8)]  # round-robin, as the searcher assigns


def events():
    """Every (trial, epoch) in the order a 2-slot Tune run would report them: epoch by epoch, fast ones first."""
    return [(n, e) for e in range(1, EPOCHS + 1) for n, _, _ in TRIALS]


def drive(scheduler, order, ended=None, histories=None):
    """Feed results as Tune does: a STOP ends the trial and its later results never come."""
    ended = set() if ended is None else ended
    histories = {} if histories is None else histories
    trials = {n: Trial("__fake", trial_id=f"t{n}", config={TRIAL_KEY: n, "strategy": s}, stub=True)
              for n, s, _ in TRIALS}
    for t in trials.values():
        scheduler.on_trial_add(None, t)
    decisions, clock = {}, sum(len(rows) for rows in histories.values())
    for n, epoch in order:
        if n in ended:
            continue
        strategy, k = TRIALS[n][1], TRIALS[n][2]
        clock += 1
        row = {TIME_ATTR: epoch, METRIC: curve(strategy, k, epoch), "timestamp": float(clock)}
        histories.setdefault(n, []).append(row)
        decisions[n] = scheduler.on_trial_result(None, trials[n], dict(row))
        if decisions[n] == TrialScheduler.STOP:
            scheduler.on_trial_complete(None, trials[n], dict(row))
            ended.add(n)
    return histories, ended


def reached(histories, strategy):
    return [histories[n][-1][TIME_ATTR] for n, s, _ in TRIALS if s == strategy and n in histories]


def scheduler(kind):
    s = make_scheduler(kind, EPOCHS, grace_period=1)  # rungs at epochs 1, 2, 4: the mechanics, not the default
    s.set_search_properties(METRIC, MODE)
    return s


def test_a_slow_starter_keeps_a_trial_to_the_full_budget_only_when_halving_is_per_strategy():
    pooled, _ = drive(scheduler("pooled_asha"), events())
    stratified, _ = drive(scheduler("asha"), events())
    # pooled: every slow trial is below the fast ones at rung 1 and is stopped there, though it would end best
    assert max(reached(pooled, "slow")) < EPOCHS
    assert max(reached(pooled, "fast")) == EPOCHS
    # per strategy: each strategy's rungs hold only its own trials, so both keep one to the full budget
    assert max(reached(stratified, "slow")) == EPOCHS and max(reached(stratified, "fast")) == EPOCHS
    # ... and each still halves: with the same schedule, the same number of trials reach each rung
    for strategy in ("fast", "slow"):
        assert sorted(reached(stratified, strategy)) == sorted(reached(stratified, "fast"))
        assert sum(e == EPOCHS for e in reached(stratified, strategy)) < 4


def test_equal_schedules_whatever_the_level_of_the_curves():
    """Shifting one strategy's curves by a constant changes nothing in the other's halving (no shared rungs)."""
    a, _ = drive(scheduler("asha"), events())
    b = scheduler("asha")
    b.group("slow")  # made first: the order in which strategies appear does not matter either
    b_hist, _ = drive(b, events())
    assert {n: len(h) for n, h in a.items()} == {n: len(h) for n, h in b_hist.items()}


def test_a_restarted_scheduler_replays_the_rungs_and_decides_exactly_the_same():
    straight, straight_ended = drive(scheduler("asha"), events())
    for cut in (5, 13, 24, 40):  # a driver killed after `cut` results
        first = scheduler("asha")
        histories, ended = drive(first, events()[:cut])
        again = scheduler("asha")
        groups = {n: s for n, s, _ in TRIALS}
        decisions = again.replay(histories, set(ended), groups)
        assert all(decisions[n] == TrialScheduler.STOP for n in ended)
        # what the live driver stopped stays stopped; the rest continue with the restored rungs
        resumed, resumed_ended = drive(again, events()[cut:], ended=set(ended), histories=histories)
        assert {n: len(h) for n, h in resumed.items()} == {n: len(h) for n, h in straight.items()}, cut
        assert resumed_ended == straight_ended


def test_replay_puts_each_trial_in_its_strategys_rungs():
    """Epoch 1 of every trial, replayed after a kill: the best slow trial passes its own rung 1, which a replay into
    one pooled rung would have failed."""
    histories, _ = drive(scheduler("asha"), events()[:8])
    groups = {n: s for n, s, _ in TRIALS}
    pooled = scheduler("pooled_asha").replay(histories, set())
    stratified = scheduler("asha").replay(histories, set(), groups)
    best_slow = 1  # trial 1 is slow trial k = 0
    assert pooled[best_slow] == TrialScheduler.STOP and stratified[best_slow] == TrialScheduler.CONTINUE
    assert [stratified[n] for n in range(2)] == [TrialScheduler.CONTINUE] * 2  # first arrivals pass


# --- warnings before compute ----------------------------------------------------------------------------------


def test_too_few_trials_per_strategy_is_warned_about():
    lines = budget_warnings("asha", 12, {"infonce": 2, "hard": 0, "debiased": 3})
    assert lines == ["warning: 2 of 3 strategies get fewer than 3 trials (as few as 0: infonce, hard), too few to "
                     "tune lr and temperature under each; use --num-samples 9 or more"]
    assert budget_warnings("asha", 12, {"infonce": 3, "hard": 3}) == []


def test_pooled_asha_that_cannot_bring_every_strategy_to_the_full_budget_is_warned_about():
    # 10 strategies x 1 trial, a rung at 6 of 12 epochs: about 10 / 2 = 5 trials reach the full budget, fewer than 10
    shares = dict.fromkeys((f"s{i}" for i in range(10)), 1)
    lines = [line for line in budget_warnings("pooled_asha", 12, shares) if "pooled" in line]
    assert len(lines) == 1 and "about 5.0 of 10 trials" in lines[0]
    assert not [line for line in budget_warnings("asha", 12, shares) if "pooled" in line]  # the first always passes
    assert budget_warnings("fifo", 12, dict.fromkeys(shares, 3)) == []
    assert budget_warnings("pooled_asha", 12, dict.fromkeys(("a", "b"), 4)) == []  # 8 / 2 = 4 reach it


def test_every_strategy_reaches_the_full_budget_under_asha_whatever_the_arrival_order():
    for order in itertools.islice(itertools.permutations(range(8)), 0, 40000, 997):
        evs = [(n, e) for e in range(1, EPOCHS + 1) for n in order]
        hist, _ = drive(scheduler("asha"), evs)
        assert max(reached(hist, "slow")) == EPOCHS and max(reached(hist, "fast")) == EPOCHS


def test_a_study_scoring_at_its_rungs_gets_the_largest_step_that_hits_every_rung_and_a_miss_is_refused(tmp_path):
    import pytest

    from sweep.plan import SweepSettings, plan
    from trainables.errors import UserError

    def every(**kw):
        return plan(SweepSettings(space="mnist1d", storage=str(tmp_path), **kw)).settings.overrides.get("eval_every")

    assert every() == 4  # 8 epochs, one rung at 4: scored at 4 and 8 only
    assert every(epochs=12) == 6
    assert every(overrides={"eval_every": 2}) == 2  # the user's choice stands
    assert plan(SweepSettings(space="digits", storage=str(tmp_path))).settings.overrides.get("eval_every") is None
    with pytest.raises(UserError, match=r"not scored at ASHA's rung at epoch 4.*--set eval_every=4 "):
        every(overrides={"eval_every": 3})
