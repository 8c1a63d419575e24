"""Early stopping for a sweep: successive halving within each strategy, durable across driver restarts.

The strategy is the scientific parameter; lr, temperature and the knobs are nuisance, tuned within each strategy.
Ray's ASHA keeps one pool of rungs for every trial, so a strategy that starts slowly can lose all its trials at the
first rungs to another that starts fast, and a stop is final: the ranking then compares strategies at unequal
budgets. :class:`StratifiedASHA` (``asha``, the default) keeps one ASHA per strategy instead: every strategy gets the
same rungs and the same halving schedule, the first trial of a strategy to reach a rung always passes it, so every
strategy's best trials reach the full budget and strategies are compared only there. ``pooled_asha`` is Ray's ASHA
over all trials, kept for comparison; ``fifo`` runs every trial to the full budget.

Ray restores a scheduler with empty rungs (RAY_TUNE_NOTES section 4), so resumed trials would pass rungs they had
failed; both ASHA schedulers here key trials by their sweep number and rebuild their rungs by replaying every
epoch on disk in the order it was reported (:meth:`DurableASHA.replay`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.schedulers.async_hyperband import AsyncHyperBandScheduler

from search_spaces import SCHEDULERS
from sweep.ranking import default_grace_period
from trainables.errors import UserError
from trainables.tune_entry import TRIAL_KEY

TIME_ATTR = "epoch"  # reported by every trial, 1-based: ASHA's time unit and Optuna's step
REDUCTION_FACTOR = 2
GROUP_KEY = "strategy"  # the config value whose trials share one rung system


def _keyed(trial: Any) -> Any:
    """ASHA sees a trial by its sweep number, so a resumed trial (a new Tune trial) is the same trial to it."""
    number = (getattr(trial, "config", None) or {}).get(TRIAL_KEY)
    return trial if number is None else SimpleNamespace(trial_id=str(number))


class DurableASHA(ASHAScheduler):
    """Ray's ASHA, keyed by sweep trial number, whose rungs can be rebuilt from the histories on disk."""

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, _keyed(trial))

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        return super().on_trial_result(tune_controller, _keyed(trial), result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        key = _keyed(trial)
        if key.trial_id in self._trial_info:
            super().on_trial_complete(tune_controller, key, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._trial_info.pop(_keyed(trial).trial_id, None)

    def replay(
        self, histories: Mapping[int, Sequence[Mapping]], finished: set[int], groups: Mapping[int, str] | None = None
    ) -> dict[int, str]:
        """Replay every reported epoch by its timestamp; return each trial's decision after its last epoch.

        ``groups`` (trial number -> strategy) is not needed here: one pool holds every trial.
        """
        events = sorted(
            (row.get("timestamp", 0.0), number, i) for number, rows in histories.items() for i, row in enumerate(rows)
        )
        decisions: dict[int, str] = {}
        for _, number, i in events:
            key, row = SimpleNamespace(trial_id=str(number)), histories[number][i]
            self._trial_info.setdefault(key.trial_id, self._brackets[0])
            decisions[number] = AsyncHyperBandScheduler.on_trial_result(self, None, key, dict(row))
            if number in finished and i == len(histories[number]) - 1:
                AsyncHyperBandScheduler.on_trial_complete(self, None, key, dict(row))
        return decisions


class StratifiedASHA(FIFOScheduler):
    """One :class:`DurableASHA` per strategy, all with the same rungs: successive halving within each strategy.

    A trial joins the rung system of its config's ``strategy``; rung systems are made as strategies first appear,
    so the scheduler needs no list of them. Tune sees one scheduler (FIFO order of trials, as ASHA's).
    """

    def __init__(self, *, time_attr: str, max_t: int, grace_period: int, reduction_factor: float) -> None:
        super().__init__()
        self._settings = {"time_attr": time_attr, "max_t": max_t, "grace_period": grace_period,
                          "reduction_factor": reduction_factor}
        self._groups: dict[str, DurableASHA] = {}
        self._mode: str | None = None

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        if (self._metric and metric) or (self._mode and mode):
            return False
        self._metric, self._mode = metric or self._metric, mode or self._mode
        for asha in self._groups.values():
            asha.set_search_properties(metric, mode, **spec)
        return True

    def group(self, strategy: str) -> DurableASHA:
        """The rung system of ``strategy`` (made on first use)."""
        if strategy not in self._groups:
            asha = DurableASHA(**self._settings)
            asha.set_search_properties(self._metric, self._mode)
            self._groups[strategy] = asha
        return self._groups[strategy]

    def _of(self, trial: Any) -> DurableASHA:
        return self.group(str((getattr(trial, "config", None) or {}).get(GROUP_KEY)))

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_remove(tune_controller, trial)

    def replay(
        self, histories: Mapping[int, Sequence[Mapping]], finished: set[int], groups: Mapping[int, str] | None = None
    ) -> dict[int, str]:
        """Each strategy's trials replayed into its own rung system (``groups``: trial number -> strategy)."""
        if groups is None:
            raise ValueError("StratifiedASHA.replay needs each trial's strategy")
        decisions: dict[int, str] = {}
        for strategy in sorted({groups[n] for n in histories}):
            mine = {n: rows for n, rows in histories.items() if groups[n] == strategy}
            decisions.update(self.group(strategy).replay(mine, finished & set(mine)))
        return decisions

    def debug_string(self) -> str:
        return "\n".join(f"{name}: {asha.debug_string()}" for name, asha in sorted(self._groups.items()))


def make_scheduler(
    kind: str, epochs: int, *, grace_period: int | None = None, reduction_factor: int = REDUCTION_FACTOR
) -> TrialScheduler:
    """``asha`` (one rung system per strategy), ``pooled_asha`` (Ray's, one for all) or ``fifo``; unknown kinds raise,
    listing the valid ones. Rungs at grace, grace * rf, ... below ``epochs``."""
    if kind == "fifo":
        return FIFOScheduler()
    if kind not in SCHEDULERS:
        raise UserError(f"unknown scheduler {kind!r}; choose one of {', '.join(SCHEDULERS)}")
    if grace_period is None:
        grace_period = default_grace_period(epochs)
    if not 1 <= grace_period <= epochs:
        raise UserError(f"`grace_period` is {grace_period} but must be between 1 and epochs ({epochs})")
    settings = {"time_attr": TIME_ATTR, "max_t": epochs, "grace_period": grace_period,
                "reduction_factor": reduction_factor}
    return StratifiedASHA(**settings) if kind == "asha" else DurableASHA(**settings)
