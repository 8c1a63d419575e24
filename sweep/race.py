"""The racing confirmation's rules and statistics: pure functions of the runs' scores, so a race replays exactly.

Each strategy's finalist (its sweep's best configuration) runs under fresh seeds in rounds, the same seed for every
strategy in a round (a seed fixes the data split, the initialisation and every batch, so the runs of a round are
paired). After each round, from ``min_seeds`` rounds on, every survivor is compared with the current best (the
highest mean validation score) by a one-sided paired test, and those significantly worse are dropped. The race ends
when one strategy remains, after ``max_seeds`` rounds, or when a time budget stops it between rounds.

Why this test is valid for a best chosen from the same data (Hsu's multiple comparisons with the best): the true
best strategy can only be dropped if some other strategy looks significantly better than it. Each one-sided test
at level ``alpha / (k - 1)`` (Bonferroni over the ``k - 1`` others, ``k`` the survivors of the round) makes that
chance at most ``alpha / (k - 1)`` per rival, so at most ``alpha`` per round, whichever strategy the data make the
current best. The race looks once per round, so over a whole race the chance of dropping the true best can add up
to ``alpha`` per look; ``benchmarks/ranking_fidelity.py`` measures how often the declared winner is in a reference
top set. Holm's step-down is not used: its larger thresholds are valid against a fixed control, not against one
the data picked.

The race decides on validation scores only. Test scores are reported for the survivors, never used to choose.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TESTS = ("t", "permutation")  # paired t-test (scipy.stats.ttest_rel), or exact sign-flip (permutation_test)


@dataclass(frozen=True)
class Rules:
    """How a race is run; fixed when it starts, kept in its plan."""

    max_seeds: int = 10
    min_seeds: int = 3  # no strategy is dropped before every survivor has this many seeds
    alpha: float = 0.05
    test: str = "t"

    def check(self) -> list[str]:
        """What is wrong with these rules, one problem each (empty when they are valid)."""
        problems = []
        if self.test not in TESTS:
            problems.append(f"the test is {self.test!r}, not one of {', '.join(TESTS)}")
        if not 2 <= self.min_seeds <= self.max_seeds:
            problems.append(f"--min-seeds is {self.min_seeds} but must be between 2 and --max-seeds "
                            f"({self.max_seeds}): a paired test needs two seeds")
        if not 0 < self.alpha < 1:
            problems.append(f"--alpha is {self.alpha} but must be between 0 and 1")
        return problems


@dataclass(frozen=True)
class Finalist:
    """A strategy's entry in the race: the sweep trial whose configuration it re-runs."""

    strategy: str
    trial: int
    config: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """One run's end: its final validation and test scores, or why it has none."""

    val: float | None = None
    test: float | None = None
    failed: str = ""


@dataclass(frozen=True)
class Drop:
    """Why and when a strategy left the race."""

    after_round: int  # 1-based
    reason: str
    against: str = ""  # the best it was compared with ("" when its run failed)
    diff: float = math.nan  # the best's mean validation score minus its own (in the better direction), same seeds
    p: float = math.nan  # one-sided p-value of that difference
    threshold: float = math.nan  # alpha / (k - 1)


@dataclass(frozen=True)
class State:
    """Where a race stands, replayed from the outcomes of its runs."""

    rounds: int  # complete rounds
    alive: tuple[str, ...]  # strategies still in the race, in finalist order
    dropped: Mapping[str, Drop]
    todo: tuple[int, ...]  # runs of the current round without an outcome (empty when finished)
    finished: bool
    stopped: str = ""  # why it ended before one strategy or max_seeds remained ("time budget"), else ""


def run_number(round_index: int, finalist_index: int, n_finalists: int) -> int:
    """Runs are numbered round-major: round r (0-based) of finalist i is r * F + i, the same on every resume."""
    return round_index * n_finalists + finalist_index


def one_sided_p(better: Sequence[float], worse: Sequence[float], test: str) -> float:
    """p-value of H1: mean(better - worse) > 0 over paired seeds; 1 when the differences are all zero."""
    from scipy import stats

    a, b = np.asarray(better, dtype=float), np.asarray(worse, dtype=float)
    d = a - b
    if len(d) < 2 or not np.any(d):
        return 1.0
    if test == "t":
        with warnings.catch_warnings():  # nearly constant differences: scipy warns, and the p-value is still right
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(stats.ttest_rel(a, b, alternative="greater").pvalue)
        return 0.0 if math.isnan(p) and d.mean() > 0 else (1.0 if math.isnan(p) else p)
    exact = len(d) <= 16  # 2**16 sign patterns: exact and cheap
    result = stats.permutation_test(
        (d,), np.mean, permutation_type="samples", alternative="greater",
        n_resamples=np.inf if exact else 9999, random_state=0,
    )
    return float(result.pvalue)


def replay(
    finalists: Sequence[Finalist],
    rules: Rules,
    outcomes: Mapping[int, Outcome],
    mode: str,
    stopped_after: int | None = None,
) -> State:
    """The race's state from the outcomes so far: which rounds are complete, who was dropped when, what runs next.

    ``stopped_after``: the race was stopped (a time budget) once that many rounds were complete.
    """
    sign = 1.0 if mode == "max" else -1.0
    names = [f.strategy for f in finalists]
    n = len(finalists)
    alive = list(names)
    dropped: dict[str, Drop] = {}
    for r in range(rules.max_seeds):
        runs = {s: run_number(r, names.index(s), n) for s in alive}
        todo = tuple(k for k in runs.values() if k not in outcomes)
        if todo:
            return State(r, tuple(alive), dropped, todo, False)
        for s, k in runs.items():
            if outcomes[k].failed or outcomes[k].val is None:
                dropped[s] = Drop(r + 1, f"its run on round {r + 1} ended without a score: "
                                         f"{outcomes[k].failed or 'no validation score'}")
        alive = [s for s in alive if s not in dropped]
        if r + 1 >= rules.min_seeds and len(alive) > 1:
            scores = {s: [sign * outcomes[run_number(q, names.index(s), n)].val for q in range(r + 1)] for s in alive}
            best = max(alive, key=lambda s: (float(np.mean(scores[s])), -names.index(s)))
            threshold = rules.alpha / (len(alive) - 1)
            for s in alive:
                if s == best:
                    continue
                p = one_sided_p(scores[best], scores[s], rules.test)
                if p < threshold:
                    diff = float(np.mean(scores[best]) - np.mean(scores[s]))
                    dropped[s] = Drop(r + 1, f"worse than {best} by {diff:.4f} on validation (p = {p:.2g} < "
                                             f"{threshold:.2g})", best, diff, p, threshold)
            alive = [s for s in alive if s not in dropped]
        done = r + 1
        if (len(alive) <= 1 and done >= rules.min_seeds) or not alive or done == rules.max_seeds:
            return State(done, tuple(alive), dropped, (), True)
        if stopped_after is not None and done >= stopped_after:
            return State(done, tuple(alive), dropped, (), True, "time budget")
    return State(rules.max_seeds, tuple(alive), dropped, (), True)


# --- what a finished (or interrupted) race reports -----------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A mean and its 95% confidence interval (Student's t over seeds); the bounds are NaN below two values."""

    n: int
    mean: float
    low: float = math.nan
    high: float = math.nan


def interval(values: Sequence[float]) -> Interval:
    from scipy import stats

    x = np.asarray([v for v in values if v is not None], dtype=float)
    if len(x) == 0:
        return Interval(0, math.nan)
    if len(x) == 1 or np.all(x == x[0]):
        return Interval(len(x), float(x.mean()), float(x.mean()) if len(x) > 1 else math.nan,
                        float(x.mean()) if len(x) > 1 else math.nan)
    ci = stats.ttest_1samp(x, 0.0).confidence_interval(0.95)
    return Interval(len(x), float(x.mean()), float(ci.low), float(ci.high))


def p_best(scores: Mapping[str, Sequence[float]], mode: str, resamples: int = 10000, seed: int = 0) -> dict[str, float]:
    """The probability that each strategy has the best mean: a paired bootstrap over seeds (the seeds resampled
    together, so a seed that is easy for every strategy stays easy for all); ties split evenly."""
    names = list(scores)
    if not names:
        return {}
    x = np.asarray([scores[s] for s in names], dtype=float) * (1.0 if mode == "max" else -1.0)  # (S, n)
    if len(names) == 1:
        return {names[0]: 1.0}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.shape[1], size=(resamples, x.shape[1]))
    means = x[:, idx].mean(axis=2)  # (S, resamples)
    top = means == means.max(axis=0, keepdims=True)
    share = (top / top.sum(axis=0, keepdims=True)).mean(axis=1)
    return {s: float(v) for s, v in zip(names, share, strict=True)}


@dataclass(frozen=True)
class Entry:
    """One strategy's line in the answer."""

    strategy: str
    finalist: Finalist
    # "winner" (the one strategy left), "best" (the best mean of several that cannot be told apart), "tied" (one of
    # those others), "dropped", "running" (the race goes on)
    status: str
    val: Interval
    test: Interval | None  # survivors only: the test split never chooses, and is not shown for a dropped strategy
    p_best: float | None
    seeds: list[int] = field(default_factory=list)  # the seeds of its scored runs, in round order
    val_scores: list[float] = field(default_factory=list)  # one per seed above
    test_scores: list[float] = field(default_factory=list)  # survivors only
    drop: Drop | None = None


@dataclass(frozen=True)
class Answer:
    metric: str
    mode: str
    rules: Rules
    seeds: list[int]  # the seeds of the rounds run so far
    state: State
    entries: list[Entry]  # the survivors, best mean first, then the dropped (best mean over their shared rounds first)
    runs_done: int
    shared_rounds: int = 0  # the dropped are ranked by their mean over rounds 1..shared_rounds, which all of them ran

    @property
    def winner(self) -> str | None:
        """The one strategy left, or None (the race is not over, or several cannot be told apart)."""
        return self.entries[0].strategy if self.entries and self.entries[0].status == "winner" else None

    @property
    def verdict(self) -> str:
        """The answer in one sentence."""
        alive = [e for e in self.entries if e.status != "dropped"]
        n, how = self.state.rounds, _how(self.rules)
        if not self.state.finished:
            lead = f"; {alive[0].strategy} leads" if alive and self.state.rounds else ""
            return f"The race is not finished: {n} of at most {self.rules.max_seeds} rounds done{lead}."
        if not alive:
            return "No strategy finished the race: every finalist's run failed (see the reasons below)."
        if len(alive) == 1:
            others = len(self.entries) - 1
            if not others:
                return f"{alive[0].strategy} is the only strategy raced ({n} seeds); there is nothing to compare."
            return (f"{alive[0].strategy} wins: the {others} other strateg{'y was' if others == 1 else 'ies were'} "
                    f"significantly worse on validation within {n} seeds ({how}).")
        tied = ", ".join(e.strategy for e in alive[1:])
        when = f"when the time budget stopped the race after {n} seeds" if self.state.stopped else f"after {n} seeds"
        chance = ", ".join(f"{e.strategy} {e.p_best:.0%}" for e in alive if e.p_best is not None)
        dropped = len(self.entries) - len(alive)
        return (f"{alive[0].strategy} has the best mean, but {tied} cannot be told apart from it {when} ({how}); "
                f"probability of being best: {chance}"
                + (f"; {dropped} other{'s were' if dropped != 1 else ' was'} dropped as significantly worse." if dropped
                   else "."))


def _how(rules: Rules) -> str:
    test = "paired t-test" if rules.test == "t" else "exact sign-flip permutation test"
    return f"one-sided {test} against the best, alpha {rules.alpha:g} Bonferroni-split over the rivals"


def answer(
    finalists: Sequence[Finalist],
    rules: Rules,
    seeds: Sequence[int],
    outcomes: Mapping[int, Outcome],
    metric: str,
    mode: str,
    stopped_after: int | None = None,
) -> Answer:
    """The race's result so far: per strategy its status, validation mean and interval, probability of being best
    among the survivors, and, for the survivors, the test mean and interval."""
    state = replay(finalists, rules, outcomes, mode, stopped_after)
    names = [f.strategy for f in finalists]
    n = len(finalists)
    sign = 1.0 if mode == "max" else -1.0

    def scored(s: str, rounds: int, key: str) -> tuple[list[int], list[float]]:
        """The seeds and ``key`` scores of ``s``'s scored runs in its first ``rounds`` rounds."""
        seeds_, values_ = [], []
        for r in range(rounds):
            o = outcomes.get(run_number(r, names.index(s), n))
            if o is not None and not o.failed and getattr(o, key) is not None:
                seeds_.append(seeds[r])
                values_.append(float(getattr(o, key)))
        return seeds_, values_

    def values(s: str, key: str) -> list[float]:
        return scored(s, state.rounds, key)[1]

    # The dropped are ranked by their mean over the rounds all of them ran, paired on the same seeds; not by when
    # they were dropped, which follows their spread as much as their mean (a noisy strategy survives longer).
    # Strategies whose run failed come after every scored one.
    on_score = [d.after_round for d in state.dropped.values() if d.against]
    shared = min(on_score, default=0)

    def dropped_rank(s: str) -> tuple[int, float]:
        vals = scored(s, shared, "val")[1] if state.dropped[s].against else []
        return (0, -sign * float(np.mean(vals))) if vals else (1, -state.dropped[s].after_round)

    alive = list(state.alive)
    chance = p_best({s: values(s, "val") for s in alive}, mode) if state.rounds else {}
    order = sorted(alive, key=lambda s: (-sign * float(np.mean(values(s, "val"))) if values(s, "val") else math.inf,
                                         names.index(s)))
    entries = []
    for i, s in enumerate(order):
        status = "running" if not state.finished else "winner" if len(order) == 1 else "best" if i == 0 else "tied"
        run_seeds, vals = scored(s, state.rounds, "val")
        tests = values(s, "test")
        entries.append(Entry(s, finalists[names.index(s)], status, interval(vals), interval(tests), chance.get(s),
                             run_seeds, vals, tests))
    dropped = {s: scored(s, state.dropped[s].after_round, "val") for s in state.dropped}
    for s in sorted(dropped, key=lambda s: (*dropped_rank(s), names.index(s))):
        entries.append(Entry(s, finalists[names.index(s)], "dropped", interval(dropped[s][1]), None, None,
                             dropped[s][0], dropped[s][1], drop=state.dropped[s]))
    return Answer(metric, mode, rules, list(seeds[: state.rounds]), state, entries, len(outcomes), shared)
