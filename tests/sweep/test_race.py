"""The confirmation race on synthetic scores: who is dropped when, ties, replay after an interruption, the
statistics against scipy, and the error rate of dropping the true best."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from sweep import confirm, race
from sweep.race import Finalist, Outcome, Rules

NAMES = ("a", "b", "c")


def finalists(names=NAMES):
    return [Finalist(s, i, {"strategy": s}) for i, s in enumerate(names)]


def outcomes(means, rounds, noise=0.01, seed=0, names=NAMES):
    """Every run of ``rounds`` rounds: strategy s scores means[s] + seed-level noise shared by all + own noise."""
    rng = np.random.default_rng(seed)
    out = {}
    for r in range(rounds):
        shared = rng.normal(0, 0.05)  # a hard seed is hard for everyone: the runs of a round are paired
        for i, s in enumerate(names):
            out[race.run_number(r, i, len(names))] = Outcome(means[s] + shared + rng.normal(0, noise), 0.5)
    return out


def test_a_clear_loser_is_dropped_as_soon_as_the_first_test_allows_and_the_rest_race_on():
    rules = Rules(max_seeds=10, min_seeds=3)
    done = outcomes({"a": 0.90, "b": 0.895, "c": 0.70}, rounds=3)
    state = race.replay(finalists(), rules, done, "max")
    assert state.rounds == 3 and state.alive == ("a", "b") and not state.finished
    drop = state.dropped["c"]
    assert drop.after_round == 3 and drop.against == "b"  # b leads a by noise after 3 seeds: the best so far
    assert drop.threshold == pytest.approx(0.05 / 2) and drop.p < drop.threshold and drop.diff > 0.15
    assert state.todo == (9, 10)  # round 4 of a and b; c runs no more
    # before min_seeds nothing is tested, however clear
    early = race.replay(finalists(), rules, {k: v for k, v in done.items() if k < 6}, "max")
    assert early.rounds == 2 and early.alive == NAMES and early.todo == (6, 7, 8)


def test_a_tie_runs_to_max_seeds_and_is_reported_as_a_tie():
    rules = Rules(max_seeds=6, min_seeds=3)
    done = outcomes({"a": 0.9, "b": 0.9, "c": 0.9}, rounds=6, noise=0.02, seed=3)
    answer = race.answer(finalists(), rules, list(range(1, 7)), done, "acc", "max")
    assert answer.state.finished and answer.state.rounds == 6 and set(answer.state.alive) == set(NAMES)
    assert answer.winner is None and [e.status for e in answer.entries] == ["best", "tied", "tied"]
    assert "cannot be told apart" in answer.verdict and "after 6 seeds" in answer.verdict
    assert sum(e.p_best for e in answer.entries) == pytest.approx(1.0)
    assert all(e.test is not None and e.test.n == 6 for e in answer.entries)


def test_one_survivor_is_the_winner_and_the_dropped_show_no_test_score():
    rules = Rules(max_seeds=10, min_seeds=3)
    done = outcomes({"a": 0.9, "b": 0.7, "c": 0.6}, rounds=3)
    answer = race.answer(finalists(), rules, list(range(1, 11)), done, "acc", "max")
    assert answer.state.finished and answer.winner == "a"
    assert [e.strategy for e in answer.entries] == ["a", "b", "c"]
    assert [e.status for e in answer.entries] == ["winner", "dropped", "dropped"]
    assert answer.entries[0].test.n == 3 and answer.entries[1].test is None and answer.entries[1].p_best is None
    assert answer.verdict.startswith("a wins: the 2 other strategies were significantly worse on validation within 3")
    assert answer.seeds == [1, 2, 3]


def test_the_dropped_rank_by_their_paired_mean_over_shared_rounds_not_by_when_they_were_dropped():
    names = ("a", "steady", "noisy", "broken")
    rules = Rules(max_seeds=10, min_seeds=3)
    done = outcomes({"a": 0.90, "steady": 0.85, "noisy": 0.70, "broken": 0.5}, rounds=6, noise=0.001, names=names)
    for r, v in enumerate((0.95, 0.40, 0.95, 0.40, 0.30, 0.30)):  # far worse on average, but too noisy to drop early
        done[race.run_number(r, 2, 4)] = Outcome(v, 0.5)
    done[race.run_number(0, 3, 4)] = Outcome(failed="non-finite loss at epoch 1")
    answer = race.answer(finalists(names), rules, list(range(1, 11)), done, "acc", "max")
    drops = answer.state.dropped
    assert drops["steady"].after_round == 3 and drops["noisy"].after_round > 3 and drops["broken"].after_round == 1
    assert [e.strategy for e in answer.entries] == ["a", "steady", "noisy", "broken"]
    assert answer.shared_rounds == 3
    assert "ranked by their mean validation score over rounds 1 to 3" in confirm.headline(answer)


def test_minimising_and_a_failed_run_drop_the_right_strategies():
    rules = Rules(max_seeds=10, min_seeds=3)
    done = outcomes({"a": 0.2, "b": 0.21, "c": 0.9}, rounds=3)  # a loss: lower is better, c is far worse
    done[race.run_number(1, 1, 3)] = Outcome(failed="non-finite loss at epoch 2")
    state = race.replay(finalists(), rules, done, "min")
    assert state.dropped["b"].after_round == 2 and "non-finite loss" in state.dropped["b"].reason
    assert state.dropped["c"].after_round == 3 and state.alive == ("a",) and state.finished


def test_replay_after_an_interruption_asks_only_for_the_missing_runs():
    rules = Rules(max_seeds=5, min_seeds=2)
    full = outcomes({"a": 0.9, "b": 0.9, "c": 0.9}, rounds=5, noise=0.02)
    final = race.replay(finalists(), rules, full, "max")
    needed = {k for k in full if k // 3 < final.rounds and NAMES[k % 3] not in final.dropped
              or (NAMES[k % 3] in final.dropped and k // 3 < final.dropped[NAMES[k % 3]].after_round)}
    for kept in range(len(full)):
        partial = {k: v for k, v in full.items() if k < kept}
        state = race.replay(finalists(), rules, partial, "max")
        if state.finished:
            assert needed <= set(partial)
            break
        assert state.todo and all(k not in partial for k in state.todo)  # nothing done is asked for again
        assert set(state.todo) <= needed  # and nothing the uninterrupted race did not run
    assert final.finished


def test_a_time_budget_stops_between_rounds():
    rules = Rules(max_seeds=10, min_seeds=3)
    done = outcomes({"a": 0.9, "b": 0.9, "c": 0.9}, rounds=4, noise=0.02)
    answer = race.answer(finalists(), rules, list(range(10)), done, "acc", "max", stopped_after=4)
    assert answer.state.finished and answer.state.stopped == "time budget" and answer.state.rounds == 4
    assert "when the time budget stopped the race after 4 seeds" in answer.verdict


def test_one_strategy_runs_min_seeds_and_nothing_is_compared():
    rules = Rules(max_seeds=10, min_seeds=3)
    one = finalists(("a",))
    state = race.replay(one, rules, {0: Outcome(0.9), 1: Outcome(0.91)}, "max")
    assert state.todo == (2,)
    answer = race.answer(one, rules, [1, 2, 3], {0: Outcome(0.9), 1: Outcome(0.91), 2: Outcome(0.92)}, "acc", "max")
    assert answer.state.finished and answer.winner == "a" and "only strategy raced" in answer.verdict


# --- the statistics, against scipy --------------------------------------------------------------------------------


def test_tests_and_intervals_match_scipy():
    a, b = [0.91, 0.93, 0.95, 0.90, 0.92], [0.90, 0.90, 0.94, 0.91, 0.90]
    assert race.one_sided_p(a, b, "t") == pytest.approx(stats.ttest_rel(a, b, alternative="greater").pvalue)
    d = np.subtract(a, b)
    exact = stats.permutation_test((d,), np.mean, permutation_type="samples", alternative="greater",
                                   n_resamples=np.inf).pvalue
    assert race.one_sided_p(a, b, "permutation") == pytest.approx(exact)
    assert race.one_sided_p([1, 2, 3], [0, 1, 2], "permutation") == pytest.approx(1 / 8)  # 2**-n, exactly
    assert race.one_sided_p([0.5, 0.6], [0.5, 0.6], "t") == 1.0  # no difference at all
    assert race.one_sided_p([0.6, 0.7, 0.8], [0.5, 0.6, 0.7], "t") < 1e-12  # ahead by the same on every seed
    i = race.interval([1.0, 2.0, 3.0])
    half = stats.t.ppf(0.975, 2) / math.sqrt(3)
    assert (i.n, i.mean) == (3, 2.0) and i.low == pytest.approx(2 - half) and i.high == pytest.approx(2 + half)
    assert math.isnan(race.interval([0.7]).low) and race.interval([]).n == 0


def test_probability_of_being_best_is_a_paired_bootstrap():
    p = race.p_best({"a": [0.9, 0.8, 0.95], "b": [0.8, 0.7, 0.85]}, "max")
    assert p == {"a": 1.0, "b": 0.0}  # a is ahead on every seed: every resample of seeds keeps it ahead
    p = race.p_best({"a": [0.9, 0.5], "b": [0.5, 0.9]}, "min")
    assert p["a"] == pytest.approx(0.5, abs=0.02) and sum(p.values()) == pytest.approx(1.0)


def test_the_true_best_is_dropped_at_most_alpha_of_the_time():
    """Five equal strategies, one look after 4 seeds: each one is the (joint) true best, so the chance that a given one
    is dropped must stay within alpha, although the best it is compared with is picked from the same data."""
    rules = Rules(max_seeds=4, min_seeds=4, alpha=0.1)
    names = tuple("abcde")
    trials, dropped_a = 1500, 0
    for seed in range(trials):
        done = outcomes(dict.fromkeys(names, 0.8), rounds=4, noise=0.02, seed=seed, names=names)
        dropped_a += "a" in race.replay(finalists(names), rules, done, "max").dropped
    rate = dropped_a / trials
    assert rate <= rules.alpha + 3 * math.sqrt(rules.alpha * (1 - rules.alpha) / trials), rate


def test_rules_are_checked():
    assert Rules().check() == []
    assert "a paired test needs two seeds" in Rules(min_seeds=1).check()[0]
    assert "between 2 and --max-seeds (3)" in Rules(max_seeds=3, min_seeds=4).check()[0]
    assert "not one of t, permutation" in Rules(test="wilcoxon").check()[0]
