"""Searcher and scheduler for one sweep, built by strict factories.

Wiring (RAY_TUNE_NOTES sections 2-3): metric and mode go on the OptunaSearch *and* in TuneConfig; ASHA is left bare
and learns them from TuneConfig. ASHA is the only early stopping: OptunaSearch forces Optuna's NopPruner, so no
Optuna pruner is configured here.

Fairness: every strategy gets the same number of trials (the strategy of each trial is enqueued round-robin; TPE
picks the rest), and a trial that ASHA stops is told to Optuna as PRUNED at the epoch it reached, not as COMPLETE
with its low-budget score (Ray's default), so TPE never mistakes a short run for a finished one.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

TIME_ATTR = "epoch"  # reported by every trial, 1-based: ASHA's time unit and Optuna's step


class PrunedAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that steps Optuna by our epoch and records early-stopped trials as PRUNED."""

    def __init__(self, *args: Any, max_t: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_t = max_t

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        value, step = result.get(self.metric), result.get(TIME_ATTR)
        if _finite(value) and step is not None:
            trial = self._ot_trials[trial_id]
            if step not in trial.storage.get_trial(trial._trial_id).intermediate_values:
                trial.report(float(value), int(step))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        result = result or {}
        value, step = result.get(self.metric), result.get(TIME_ATTR)
        if not error and step is not None and step < self._max_t and _finite(value):
            self.on_trial_result(trial_id, result)
            self._ot_study.tell(self._ot_trials[trial_id], None, state=optuna.trial.TrialState.PRUNED)
            self._completed_trials.add(trial_id)
            return
        if not error and not _finite(value):  # never hand Optuna a NaN: it would leave the trial RUNNING forever
            self._ot_study.tell(self._ot_trials[trial_id], None, state=optuna.trial.TrialState.FAIL)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result=result, error=error)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def equal_share(strategies: Sequence[str], num_samples: int) -> list[dict[str, str]]:
    """Round-robin strategy assignments: trial k runs strategies[k mod S], so the shares differ by at most one."""
    return [{"strategy": strategies[k % len(strategies)]} for k in range(num_samples)]


def make_sampler(seed: int, grid: Mapping[str, Sequence[Any]] | None = None) -> optuna.samplers.BaseSampler:
    if grid is not None:
        return optuna.samplers.GridSampler({k: list(v) for k, v in grid.items()}, seed=seed)
    # group=True models each strategy's branch separately; constant_liar keeps parallel trials apart.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=10
        )


def make_searcher(
    space: Any,
    *,
    metric: str,
    mode: str,
    seed: int,
    max_t: int,
    strategies: Sequence[str],
    num_samples: int,
    grid: Mapping[str, Sequence[Any]] | None = None,
) -> PrunedAwareOptunaSearch:
    # A grid enumerates the strategies itself; enqueueing would fight it.
    points = equal_share(strategies, num_samples) if grid is None and len(strategies) > 1 else None
    return PrunedAwareOptunaSearch(
        space=space,
        metric=metric,
        mode=mode,
        sampler=make_sampler(seed, grid),
        points_to_evaluate=points,
        max_t=max_t,
    )


def asha_rungs(max_t: int, grace_period: int, reduction_factor: int) -> list[int]:
    rungs, r = [], grace_period
    while r < max_t:
        rungs.append(r)
        r *= reduction_factor
    return rungs


def make_scheduler(
    kind: str, max_t: int, *, grace_period: int | None = None, reduction_factor: int = 2
) -> TrialScheduler:
    """ASHA on the epoch (rungs grace, grace*rf, ... below max_t) or FIFO. Unknown kinds raise, listing the valid."""
    if kind == "fifo":
        return FIFOScheduler()
    if kind != "asha":
        raise ValueError(f"unknown scheduler {kind!r}; choose asha or fifo")
    if grace_period is None:  # about three rungs whatever the budget: 12 epochs -> rungs at 2, 4, 8
        grace_period = max(1, max_t // 6)
    if not 1 <= grace_period <= max_t:
        raise ValueError(f"`grace_period` is {grace_period} but must be between 1 and epochs ({max_t})")
    return ASHAScheduler(time_attr=TIME_ATTR, max_t=max_t, grace_period=grace_period, reduction_factor=reduction_factor)


class SpaceWithOverrides:
    """A define-by-run space whose fixed settings are topped with the CLI's (epochs, seed, ...).

    A module-level class, so the searcher state stays picklable with the standard pickle (RAY_TUNE_NOTES §5).
    """

    def __init__(self, space: Any, overrides: Mapping[str, Any]) -> None:
        self.space = space
        self.overrides = dict(overrides)

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        return {**(self.space(trial) or {}), **self.overrides}
