"""What a running sweep shows: one live display on a terminal, one line per trial event anywhere else.

On a terminal (rich's ``Live``): trials done, running, stopped and failed of N; each running trial's epoch of E and
its last score; the best score so far per strategy (with the budget it was reached at); elapsed time and an upper
bound of the time left; the events' lines scroll above it. Not on a terminal (CI, a pipe, ``ray exec``): the same
events as plain lines, nothing redrawn. The display never stops a sweep: what it cannot show it leaves out.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from ray.tune import Callback

from sweep.ranking import NUISANCE, describe_config, finite
from trainables.tune_entry import RESUME_KEY, TRIAL_KEY


class Progress(Callback):
    def __init__(
        self, num_samples: int, epochs: int, metric: str, done: int = 0, out: Any = sys.stdout, seeds: bool = False,
        searched: Callable[[int], Iterable[str]] | None = None, mode: str = "max", slots: int = 1,
        title: str = "", live: bool | None = None, clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.num_samples, self.epochs, self.metric, self.out = num_samples, epochs, metric, out
        self.seeds = seeds  # name trials by strategy and seed (`sweep confirm` runs one config under several)
        self.ended = done  # trials finished in earlier sessions count towards the total
        self.clock, self.t0 = clock, clock()
        self.searched = searched  # a trial number -> what its study searched; None: the nuisance parameters
        self.sign = 1.0 if mode == "max" else -1.0
        self.slots, self.title = max(1, slots), title
        self.counts = {"finished": 0, "stopped": 0, "failed": 0}
        self.running: dict[Any, dict[str, Any]] = {}  # trial id -> name, epoch, score
        self.best: dict[str, tuple[float, int]] = {}  # strategy -> (score, epoch reached)
        self.epoch_s: list[float] = []  # seconds per trial-epoch so far (for the time left)
        self.live = (out.isatty() if hasattr(out, "isatty") else False) if live is None else live
        self._display: Any = None

    # --- events -----------------------------------------------------------------------------------------------

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        how = "resume" if trial.config.get(RESUME_KEY) else "start "
        number = trial.config.get(TRIAL_KEY)
        try:  # a line of progress must never stop a sweep: without the study's record, the nuisance parameters
            searched = self.searched(number) if self.searched is not None and number is not None else NUISANCE
        except (IndexError, KeyError, TypeError):
            searched = NUISANCE
        self.running[trial.trial_id] = {"name": self._name(trial), "epoch": 0, "score": None, "since": self.clock()}
        self._event(f"{how} {self._name(trial)} {describe_config(trial.config, searched)}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        row = self.running.get(trial.trial_id)
        if row is None:
            return
        now = self.clock()
        epoch = int(result.get("epoch", row["epoch"]) or 0)
        if epoch > row["epoch"]:
            self.epoch_s.append((now - row["since"]) / (epoch - row["epoch"]))
            row["since"] = now
        row["epoch"] = epoch
        if finite(result.get(self.metric)):  # an epoch without a validation score (eval_every > 1) keeps the last
            row["score"] = result[self.metric]
        self._note_best(trial, result)
        self._refresh()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended += 1
        self.running.pop(trial.trial_id, None)
        r = trial.last_result or {}
        epoch, score = r.get("epoch", 0), r.get(self.metric)
        how = "finished" if epoch >= self.epochs else "stopped early"
        if r.get("stop_reason"):
            how = f"ended: {r['stop_reason']}"
        self.counts["failed" if r.get("stop_reason") else "finished" if epoch >= self.epochs else "stopped"] += 1
        self._note_best(trial, r)
        shown = f"{score:.4f}" if isinstance(score, (int, float)) else "n/a"
        self._event(
            f"done  {self.ended:>3}/{self.num_samples} {self._name(trial)}: "
            f"{how} at epoch {epoch}/{self.epochs}, {self.metric} {shown}"
        )

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._event(f"retry {self._name(trial)}: its worker failed; going on from its last checkpoint")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended += 1
        self.counts["failed"] += 1
        self.running.pop(trial.trial_id, None)
        self._event(
            f"error {self.ended:>3}/{self.num_samples} {self._name(trial)}: failed after retries (see {trial.path})"
        )

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.close()

    def log(self, msg: str) -> None:
        """A line from elsewhere in the driver (the searcher's), shown as the events are."""
        self._event(msg)

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its callbacks with the experiment's state: a terminal and a live display do not pickle, and
        a restored sweep shows its progress anew (on stdout)."""
        state = dict(self.__dict__)
        state.update(out=None, _display=None, searched=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, out=sys.stdout)

    # --- showing ----------------------------------------------------------------------------------------------

    def close(self) -> None:
        if self._display is not None:
            self._display.stop()
            self._display = None

    def _name(self, trial: Any) -> str:
        seed = f" seed {trial.config.get('seed')}" if self.seeds else ""
        return f"#{trial.config.get(TRIAL_KEY)} {trial.config.get('strategy')}{seed}"

    def _note_best(self, trial: Any, result: dict) -> None:
        score, epoch = result.get(self.metric), int(result.get("epoch", 0) or 0)
        if not finite(score) or result.get("stop_reason"):
            return
        strategy = str(trial.config.get("strategy"))
        old = self.best.get(strategy)
        key = lambda v, e: (e >= self.epochs, self.sign * v)  # noqa: E731  (the ranking's order: full budget first)
        if old is None or key(score, epoch) > key(*old):
            self.best[strategy] = (float(score), epoch)

    def _event(self, msg: str) -> None:
        line = f"[{self.clock() - self.t0:6.1f}s] {msg}"
        if not self.live:
            print(line, file=self.out, flush=True)
            return
        self._start()
        self._display.console.print(line, highlight=False, markup=False)
        self._refresh()

    def _start(self) -> None:
        if self._display is None:
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self.out, force_terminal=True, soft_wrap=True)
            self._display = Live(self.render(), console=console, refresh_per_second=2, transient=True,
                                 auto_refresh=False, redirect_stdout=False, redirect_stderr=False)
            self._display.start()

    def _refresh(self) -> None:
        if self.live:
            self._start()
            self._display.update(self.render(), refresh=True)

    def time_left(self) -> float | None:
        """Seconds to go if every running and unstarted trial ran to the full budget (ASHA will stop some, so it is
        an upper estimate), at the mean seconds per trial-epoch so far (a trial's set-up counted in its first
        epoch), over the trials that run at once."""
        if not self.epoch_s:
            return None
        per_epoch = sum(self.epoch_s) / len(self.epoch_s)
        to_start = max(0, self.num_samples - self.ended - len(self.running))
        left = sum(self.epochs - r["epoch"] for r in self.running.values()) + to_start * self.epochs
        return left * per_epoch / self.slots

    def render(self) -> Any:
        """The live part: a summary line, the running trials, the best score per strategy."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        elapsed = self.clock() - self.t0
        left = self.time_left()
        done = self.ended
        head = Text(
            f"{self.title}{done}/{self.num_samples} done ({self.counts['finished']} finished, "
            f"{self.counts['stopped']} stopped early, {self.counts['failed']} failed), {len(self.running)} running"
        )
        clock = Text(f"{_clock(elapsed)} elapsed" + (f", ~{_clock(left)} left if every trial runs to the end"
                                                      if left is not None else ""))
        parts: list[Any] = [head, clock]
        if self.running:
            table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
            for col in ("running", "epoch", self.metric):
                table.add_column(col)
            for r in self.running.values():
                score = f"{r['score']:.4f}" if finite(r["score"]) else ""
                table.add_row(r["name"], f"{r['epoch']}/{self.epochs}", score)
            parts.append(table)
        if self.best:
            order = sorted(self.best.items(), key=lambda kv: (kv[1][1] >= self.epochs, self.sign * kv[1][0]),
                           reverse=True)
            best = "  ".join(f"{s} {v:.4f}" + ("" if e >= self.epochs else f" (epoch {e})") for s, (v, e) in order)
            parts.append(Text(f"best {self.metric} so far: {best}"))
        return Group(*parts)


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


def watch_commands(exp: str, local: bool) -> list[str]:
    """How to watch a sweep live with the tools people already use (printed when a sweep starts)."""
    lines = []
    if local:
        lines.append(f"  optuna-dashboard sqlite:///{exp}/study.db    (pip install optuna-dashboard)")
    lines.append(f"  tensorboard --logdir {_quote(exp)}    (pip install tensorboard)")
    return lines


def _quote(path: str) -> str:
    import shlex

    return shlex.quote(path)
