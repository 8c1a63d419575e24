"""Searcher and scheduler for one sweep, built by strict factories.

Wiring (RAY_TUNE_NOTES sections 2-3, combination (b)): metric and mode go on the searcher (its constructor) and on
the scheduler (``set_search_properties``, in sweep.runner), never in TuneConfig, which would refuse a scheduler that
has them. ASHA is the only early stopping (no Optuna pruner).

The searcher is ours, not Ray's OptunaSearch: it keeps the Optuna study in ``study.db`` (every ask, report and tell
committed as it happens) instead of pickling it at Ray's snapshots, so a killed driver loses nothing and a resumed
sweep hands out no trial number twice. It also tells Optuna what Ray's OptunaSearch gets wrong: an ASHA-stopped trial
is PRUNED at the epoch it reached (not COMPLETE with its low-budget score), and a NaN, a collapse or an error is a
FAIL with its reason (never a trial left RUNNING forever).

Fairness: every strategy gets the same number of trials (trial N runs strategies[N mod S], enqueued in the study so
that the assignment survives a restart); TPE picks the rest.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState
from ray.tune import Callback
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import Searcher

from sweep.errors import is_storage_fault
from sweep.ledger import ASKED, Resumable, judge, report_history, tell
from sweep.ranking import finite
from sweep.scheduling import TIME_ATTR
from trainables.errors import UserError
from trainables.tasks import parse_config
from trainables.tune_entry import METRIC_KEY, RESUME_KEY, SESSION_KEY, TRIAL_KEY


def equal_share(strategies: Sequence[str], num_samples: int) -> list[dict[str, str]]:
    """Round-robin strategy assignments: trial k runs strategies[k mod S], so the shares differ by at most one."""
    return [{"strategy": strategies[k % len(strategies)]} for k in range(num_samples)]


def trial_seed(seed: int, number: int) -> int:
    """The sampler's seed for trial ``number``: suggestions depend on the seed and the history, not on how many
    times the driver was restarted (a sampler reseeded on resume would replay its first random draws)."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


SAMPLERS = ("tpe", "random")


def make_sampler(
    seed: int, grid: Mapping[str, Sequence[Any]] | None = None, kind: str = "tpe"
) -> optuna.samplers.BaseSampler:
    """A grid's sampler when there is a grid; else TPE, or random search (the baseline TPE must beat)."""
    if grid is not None:
        return optuna.samplers.GridSampler({k: list(v) for k, v in grid.items()}, seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind != "tpe":
        raise UserError(f"sampler {kind!r} is not one of {', '.join(SAMPLERS)}")
    # Independent TPE: lr and temperature, which every strategy has, are learnt from every trial, whatever its
    # strategy, and a strategy's knobs from its own trials. (group=True modelled each strategy's branch alone: with
    # the 3 trials a strategy gets, TPE then never left random search.) constant_liar keeps parallel trials apart.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, n_startup_trials=10)


class Pinned:
    """An Optuna trial whose suggestions for the pinned names return the pinned value and are not searched.

    It lets ``--set lr=0.1`` fix a parameter that the space would otherwise suggest, so the study records only what
    was searched and the config is what ran.
    """

    def __init__(self, trial: optuna.Trial | optuna.trial.FixedTrial, pinned: Mapping[str, Any]) -> None:
        self._trial, self._pinned = trial, dict(pinned)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)

    def _suggest(self, kind: str, name: str, *args: Any, **kwargs: Any) -> Any:
        if name in self._pinned:
            return self._pinned[name]
        return getattr(self._trial, kind)(name, *args, **kwargs)

    def suggest_float(self, name: str, *args: Any, **kwargs: Any) -> float:
        return self._suggest("suggest_float", name, *args, **kwargs)

    def suggest_int(self, name: str, *args: Any, **kwargs: Any) -> int:
        return self._suggest("suggest_int", name, *args, **kwargs)

    def suggest_categorical(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self._suggest("suggest_categorical", name, *args, **kwargs)


def build_config(space: Callable, trial: Any, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's config: the space's suggestions and fixed settings, topped with the CLI's (epochs, seed, ...)."""
    fixed = space(Pinned(trial, overrides)) or {}
    return {**trial.params, **fixed, **overrides}


def finish_ask(
    study: optuna.Study,
    frozen: optuna.trial.FrozenTrial,
    space: Callable,
    overrides: Mapping[str, Any],
    seed: int,
    grid: Mapping[str, Sequence[Any]] | None = None,
    sampler: str = "tpe",
) -> dict[str, Any]:
    """The config of a trial whose ask a killed driver left half-done (each suggestion is its own write, so the
    study may hold some of its parameters). The space runs again on the trial itself: the parameters it has keep
    their values, the missing ones are suggested now by the sampler seeded as the ask was; the config is recorded."""
    study.sampler = make_sampler(seed if grid is not None else trial_seed(seed, frozen.number), grid, sampler)
    trial = optuna.Trial(study, frozen._trial_id)
    config = build_config(space, trial, overrides)
    trial.set_user_attr("config", config)
    return config


class SweepSearcher(Searcher):
    """Proposes trials from the durable study; resumes the unfinished ones first, under their own numbers."""

    def __init__(
        self,
        study: optuna.Study,
        space: Callable,
        *,
        metric: str,
        mode: str,
        epochs: int,
        num_samples: int,
        strategies: Sequence[str],
        seed: int,
        session: int,
        overrides: Mapping[str, Any] | None = None,
        grid: Mapping[str, Sequence[Any]] | None = None,
        sampler: str = "tpe",
        resume: Sequence[Resumable] = (),
        log: Callable[[str], None] = print,
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        self.study, self.space = study, space
        self.epochs, self.num_samples, self.seed, self.session, self.grid = epochs, num_samples, seed, session, grid
        self.sampler = sampler
        # Enqueued even when there is one, so `--strategies x` holds; a grid enumerates them itself.
        self.strategies = tuple(strategies) if grid is None else ()
        self.overrides = dict(overrides or {})
        self.resume = list(resume)
        self.log = log
        self.live: dict[str, int] = {}  # Tune trial id -> sweep trial number
        self.trials: dict[str, Any] = {}  # Tune trial id -> Tune Trial (for its error file), filled by TrialIndex
        self.storage_fault: str | None = None  # why the storage failed under a trial, which then has not failed
        self._ids: dict[int, int] = {}  # sweep trial number -> Optuna's internal trial id

    # --- proposing ---

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.resume:
            r = self.resume.pop(0)
            return self._start(trial_id, r.number, r.config, r.checkpoint)
        while len(self.study.get_trials(deepcopy=False, states=ASKED)) < self.num_samples:
            number, config = self._ask()
            try:
                parse_config(config)
            except UserError as exc:  # a space that yields an invalid config: a failed trial, no compute spent
                self.log(f"trial {number} not run: {exc}")
                failed = judge(None, self.epochs, self.metric, error=f"invalid config: {exc}")
                tell(self.study, self._get(number), failed)
                continue
            return self._start(trial_id, number, config, None)
        return Searcher.FINISHED

    def _ask(self) -> tuple[int, dict[str, Any]]:
        trials = self.study.get_trials(deepcopy=False)
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        # The number the next trial gets: a trial enqueued by a driver killed before its ask is asked first.
        n = waiting[0].number if waiting else len(trials)
        if self.strategies and not waiting:
            self.study.enqueue_trial({"strategy": self.strategies[n % len(self.strategies)]})
        # A GridSampler's seed orders its grid: it must stay the same for the whole sweep, or points repeat.
        seed = self.seed if self.grid is not None else trial_seed(self.seed, n)
        self.study.sampler = make_sampler(seed, self.grid, self.sampler)
        trial = self.study.ask()
        try:
            config = build_config(self.space, trial, self.overrides)
        except (Exception, SystemExit) as exc:
            self.study.tell(trial, state=TrialState.FAIL)
            raise UserError(f"the search space raised {type(exc).__name__}: {exc}") from exc
        trial.set_user_attr("config", config)
        return trial.number, config

    def _start(self, trial_id: str, number: int, config: dict[str, Any], checkpoint: str | None) -> dict[str, Any]:
        self.live[trial_id] = number
        return {**config, TRIAL_KEY: number, SESSION_KEY: self.session, RESUME_KEY: checkpoint, METRIC_KEY: self.metric}

    def _get(self, number: int) -> optuna.trial.FrozenTrial:
        return self.study.get_trials(deepcopy=False)[number]

    # --- listening ---

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        number = self.live.get(trial_id)
        value, step = result.get(self.metric), result.get(TIME_ATTR)
        if number is None or step is None or not finite(value):
            return
        if number not in self._ids:
            self._ids[number] = self._get(number)._trial_id
        optuna.Trial(self.study, self._ids[number]).report(float(value), int(step))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        number = self.live.pop(trial_id, None)
        if number is None:
            return
        frozen = self._get(number)
        last = result if result and TIME_ATTR in result else None
        if last is not None and not finite(last.get(self.metric)) and self.metric in last:
            # the NaN an epoch without a validation score publishes (METRIC_KEY): judged as not scored, as on disk
            last = {k: v for k, v in last.items() if k != self.metric}
        if last is not None:
            report_history(self.study, frozen, [last], self.metric)
        reason = _error_reason(self.trials.get(trial_id)) if error else ""
        if error and is_storage_fault(reason):  # left running in the study: `sweep resume` goes on from its checkpoint
            self.storage_fault = self.storage_fault or reason
            return
        outcome = judge(last, self.epochs, self.metric, stopped=True, error=reason)
        if outcome is not None:
            tell(self.study, frozen, outcome)

    # The study lives in study.db, committed as it changes: nothing for Ray's snapshots to save or restore.
    def save(self, checkpoint_path: str) -> None:
        pass

    def restore(self, checkpoint_path: str) -> None:
        pass


class RaceSearcher(Searcher):
    """Hands out the runs of `sweep confirm`'s race: the current round's, and the next round's ahead of its result,
    so that no worker waits for a round's slowest run (the rounds before ``min_seeds``, where nothing is dropped
    for its score, as one block). The race's decisions stay those of rounds judged one at a time
    (:func:`sweep.race.replay` reads each round's outcomes alone): a run ahead for a strategy that its round then
    drops is not counted, and :class:`RaceScheduler` stops it at its next epoch. FINISHED when the race is over. A
    time budget lets the round in flight finish, so every survivor always has the same seeds."""

    def __init__(
        self,
        plan: Any,  # sweep.confirm.RacePlan
        outcomes: Mapping[int, Any],
        checkpoints: Mapping[int, str],
        session: int,
        out_of_time: Callable[[], bool],
        record: Callable[[Any], None],
        log: Callable[[str], None] = print,
    ) -> None:
        super().__init__()
        self.plan, self.outcomes, self.checkpoints = plan, dict(outcomes), dict(checkpoints)
        self.session, self.out_of_time, self.record, self.log = session, out_of_time, record, log
        self.started: set[int] = set()
        self.live: dict[str, int] = {}
        self.trials: dict[str, Any] = {}  # filled by TrialIndex, for the error file of a failed run
        self.storage_fault: str | None = None  # as SweepSearcher's: such a run has not failed
        self.last_round: int | None = None  # set when the time budget is spent: rounds from this one do not run
        self._rounds = self.state().rounds

    def state(self) -> Any:
        return self.plan.state(self.outcomes)

    def _end(self) -> int:
        """One past the last round (0-based) that may run now."""
        return self.plan.rules.max_seeds if self.last_round is None else self.last_round

    def block(self, state: Any) -> tuple[int, ...]:
        """The runs that may start now, in order: the current round's, then every round up to ``min_seeds`` or the
        next round, whichever is later, its strategies best mean first (the likeliest to stay). A strategy whose
        run failed gets no further run: it is dropped when its round completes."""
        plan, rules = self.plan, self.plan.rules
        until = min(max(rules.min_seeds, state.rounds + 2), self._end())
        sign = 1.0 if plan.mode == "max" else -1.0

        def mean(s: str) -> float:
            vals = [o.val for r in range(state.rounds)
                    if (o := self.outcomes.get(plan.number(r, s))) is not None and o.val is not None]
            return -sign * float(np.mean(vals)) if vals else 0.0

        def failed(s: str) -> bool:
            return any((o := self.outcomes.get(plan.number(r, s))) is not None and (o.failed or o.val is None)
                       for r in range(state.rounds, until))

        ahead = sorted((s for s in state.alive if not failed(s)), key=mean)
        later = tuple(plan.number(r, s) for r in range(state.rounds + 1, until) for s in ahead
                      if plan.number(r, s) not in self.outcomes)
        return (state.todo if state.rounds < self._end() else ()) + later

    def needed(self, number: int) -> bool:
        """Whether run ``number`` may still count: its strategy is in the race and its round may run."""
        state = self.state()
        strategy = self.plan.run(number)[0].strategy
        return not state.finished and strategy in state.alive and number // len(self.plan.finalists) < self._end()

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        state = self.state()
        if not state.finished and self.last_round is None and self.out_of_time():
            runs = [self.plan.number(state.rounds, s) for s in state.alive]
            begun = any(n in self.started or n in self.checkpoints or n in self.outcomes for n in runs)
            self.last_round = state.rounds + 1 if begun else state.rounds
            self.log(f"time budget spent: the race stops after round {self.last_round}")
        if self.last_round is not None and state.rounds >= self.last_round and not state.finished:
            self.plan = dataclasses.replace(self.plan, stopped_after=state.rounds)
            self.record(self.plan)
            state = self.state()
        if state.finished:
            return Searcher.FINISHED
        pending = [n for n in self.block(state) if n not in self.started]
        if not pending:
            return None  # every run that may start has: the next ones depend on the outcomes in flight
        number = pending[0]
        self.started.add(number)
        self.live[trial_id] = number
        config = self.plan.run(number)[2]
        return {**config, TRIAL_KEY: number, SESSION_KEY: self.session, RESUME_KEY: self.checkpoints.get(number)}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        from sweep.confirm import outcome_of
        from sweep.race import Outcome

        number = self.live.pop(trial_id, None)
        if number is None:
            return
        if error:
            reason = _error_reason(self.trials.get(trial_id))
            if is_storage_fault(reason):
                self.storage_fault = self.storage_fault or reason
                return
            self.plan = dataclasses.replace(self.plan, failed={**self.plan.failed, number: reason})
            self.record(self.plan)  # at once: a resumed race must not run it again
            outcome = Outcome(failed=reason)
        else:
            outcome = outcome_of(result, self.plan.metric, self.plan.epochs)
        if outcome is None:  # stopped before its end (an interrupt): it goes on from its checkpoint next time
            self.started.discard(number)
            return
        self.outcomes[number] = outcome
        state = self.state()
        for done in range(self._rounds + 1, state.rounds + 1):  # a block's rounds can complete together
            dropped = [f"{s} ({d.reason})" for s, d in state.dropped.items() if d.after_round == done]
            left = len(state.alive) + sum(d.after_round > done for d in state.dropped.values())
            self.log(f"round {done}: {left} left" + (f"; dropped {'; '.join(dropped)}" if dropped else ""))
        self._rounds = max(self._rounds, state.rounds)

    # Its state is the checkpoints on disk and the plan file: nothing for Ray's snapshots.
    def save(self, checkpoint_path: str) -> None:
        pass

    def restore(self, checkpoint_path: str) -> None:
        pass


class RaceScheduler(FIFOScheduler):
    """Stops, at its next epoch, a race run that can no longer count: run ahead for a strategy its round dropped,
    or past the race's end (:meth:`RaceSearcher.needed`)."""

    def __init__(self, searcher: RaceSearcher) -> None:
        super().__init__()
        self.searcher = searcher

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        number = trial.config.get(TRIAL_KEY)
        if number is None or self.searcher.needed(number):
            return self.CONTINUE
        state, (finalist, seed, _) = self.searcher.state(), self.searcher.plan.run(number)
        why = ("the race is over" if state.finished else f"{finalist.strategy} was dropped"
               if finalist.strategy not in state.alive else "its round comes after the time budget's last")
        self.searcher.log(f"stop   #{number} {finalist.strategy} seed {seed}: no longer needed ({why})")
        return self.STOP


class TrialIndex(Callback):
    """Hands the searcher each Tune trial, so that a failed trial's error message reaches the study."""

    def __init__(self, searcher: SweepSearcher | RaceSearcher) -> None:
        self.searcher = searcher

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.searcher.trials[trial.trial_id] = trial


def _error_reason(trial: Any) -> str:
    """'error after N attempts: <the exception's last line>' from the trial's error file."""
    if trial is None:
        return "error"
    attempts = getattr(trial.run_metadata, "num_failures", 0)
    message = ""
    path = trial.error_file
    if path and Path(path).is_file():
        lines = [line.strip() for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
        message = next((line for line in reversed(lines) if not line.startswith("Failure #")), "")
    return f"error after {attempts} attempt{'s' if attempts != 1 else ''}: {message[:300] or 'see error.txt'}"
