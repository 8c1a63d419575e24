"""One line per trial event while a sweep runs, instead of Tune's wide status tables."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from ray.tune import Callback

from sweep.ranking import NUISANCE, describe_config
from trainables.tune_entry import RESUME_KEY, TRIAL_KEY


class Progress(Callback):
    def __init__(
        self, num_samples: int, epochs: int, metric: str, done: int = 0, out: Any = sys.stdout, seeds: bool = False,
        searched: Callable[[int], Iterable[str]] | None = None,
    ) -> None:
        self.num_samples, self.epochs, self.metric, self.out = num_samples, epochs, metric, out
        self.seeds = seeds  # name trials by strategy and seed (`sweep confirm` runs one config under several)
        self.ended = done  # trials finished in earlier sessions count towards the total
        self.t0 = time.perf_counter()
        self.searched = searched  # a trial number -> what its study searched; None: the nuisance parameters

    def _print(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.1f}s] {msg}", file=self.out, flush=True)

    def _name(self, trial: Any) -> str:
        seed = f" seed {trial.config.get('seed')}" if self.seeds else ""
        return f"#{trial.config.get(TRIAL_KEY)} {trial.config.get('strategy')}{seed}"

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        how = "resume" if trial.config.get(RESUME_KEY) else "start "
        number = trial.config.get(TRIAL_KEY)
        try:  # a line of progress must never stop a sweep: without the study's record, the nuisance parameters
            searched = self.searched(number) if self.searched is not None and number is not None else NUISANCE
        except (IndexError, KeyError, TypeError):
            searched = NUISANCE
        self._print(f"{how} {self._name(trial)} {describe_config(trial.config, searched)}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended += 1
        r = trial.last_result or {}
        epoch, score = r.get("epoch", 0), r.get(self.metric)
        how = "finished" if epoch >= self.epochs else "stopped early"
        if r.get("stop_reason"):
            how = f"ended: {r['stop_reason']}"
        shown = f"{score:.4f}" if isinstance(score, (int, float)) else "n/a"
        self._print(
            f"done  {self.ended:>3}/{self.num_samples} {self._name(trial)}: "
            f"{how} at epoch {epoch}/{self.epochs}, {self.metric} {shown}"
        )

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._print(f"retry {self._name(trial)}: its worker failed; going on from its last checkpoint")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended += 1
        self._print(
            f"error {self.ended:>3}/{self.num_samples} {self._name(trial)}: failed after retries (see {trial.path})"
        )
