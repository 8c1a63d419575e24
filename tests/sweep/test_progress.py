"""The live display driven by a fake clock and synthetic trial events: what a terminal shows, what a pipe gets."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

from sweep.progress import Progress
from trainables.tune_entry import TRIAL_KEY

METRIC = "linear_acc"


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _trial(n: int, strategy: str) -> SimpleNamespace:
    return SimpleNamespace(trial_id=f"t{n}", config={TRIAL_KEY: n, "strategy": strategy, "lr": 0.001,
                                                      "temperature": 0.5}, last_result={}, path=f"/x/{n}")


def _drive(progress: Progress, clock: Clock) -> None:
    """Two trials at a time: #0 infonce runs to the end, #1 hard is stopped at epoch 2, #2 starts."""
    a, b = _trial(0, "infonce"), _trial(1, "hard")
    progress.on_trial_start(0, [], a)
    progress.on_trial_start(0, [], b)
    for epoch in (1, 2):
        clock.t += 10
        progress.on_trial_result(0, [], a, {"epoch": epoch, METRIC: 0.5 + 0.1 * epoch})
        progress.on_trial_result(0, [], b, {"epoch": epoch, METRIC: 0.4 + 0.05 * epoch})
    b.last_result = {"epoch": 2, METRIC: 0.5}
    progress.on_trial_complete(0, [], b)
    progress.on_trial_start(0, [], _trial(2, "hard"))
    for epoch in (3, 4):
        clock.t += 10
        progress.on_trial_result(0, [], a, {"epoch": epoch, METRIC: 0.5 + 0.1 * epoch})
    a.last_result = {"epoch": 4, METRIC: 0.9}
    progress.on_trial_complete(0, [], a)


def test_a_pipe_gets_one_plain_line_per_event_and_nothing_redrawn():
    out, clock = io.StringIO(), Clock()
    progress = Progress(4, 4, METRIC, out=out, clock=clock)
    assert not progress.live  # a StringIO is not a terminal
    _drive(progress, clock)
    lines = out.getvalue().splitlines()
    events = [re.match(r"\[\s*[\d.]+s\] (\w+)\s+(?:\d+/\d+ )?#(\d+)", line).groups() for line in lines]
    assert events == [("start", "0"), ("start", "1"), ("done", "1"), ("start", "2"), ("done", "0")]
    assert lines[2] == "[  20.0s] done    1/4 #1 hard: stopped early at epoch 2/4, linear_acc 0.5000"
    assert lines[4] == "[  40.0s] done    2/4 #0 infonce: finished at epoch 4/4, linear_acc 0.9000"
    assert "\x1b" not in out.getvalue()  # no terminal codes in a log file


def test_a_terminal_shows_counts_running_trials_best_per_strategy_and_time_left():
    out, clock = io.StringIO(), Clock()
    progress = Progress(4, 4, METRIC, out=out, clock=clock, live=True)
    progress.slots = 2
    a, b = _trial(0, "infonce"), _trial(1, "hard")
    progress.on_trial_start(0, [], a)
    progress.on_trial_start(0, [], b)
    clock.t += 10
    progress.on_trial_result(0, [], a, {"epoch": 1, METRIC: 0.6})
    progress.on_trial_result(0, [], b, {"epoch": 1, METRIC: 0.45})
    text = _plain(progress)
    assert "0/4 done (0 finished, 0 stopped early, 0 failed), 2 running\n00:10 elapsed" in text
    # at 10 s per trial-epoch, 2 at a time: (3 + 3) epochs left of the running ones + 2 trials x 4 to start
    assert progress.time_left() == (3 + 3 + 2 * 4) * 10 / 2 and "~01:10 left if every trial runs to the end" in text
    assert re.search(r"#0 infonce\s+1/4\s+0.6000", text) and re.search(r"#1 hard\s+1/4\s+0.4500", text)
    assert "best linear_acc so far: infonce 0.6000 (epoch 1)  hard 0.4500 (epoch 1)" in text
    b.last_result = {"epoch": 1, METRIC: 0.45}
    progress.on_trial_complete(0, [], b)
    clock.t += 30
    progress.on_trial_result(0, [], a, {"epoch": 4, METRIC: 0.8})
    text = _plain(progress)
    assert "1/4 done (0 finished, 1 stopped early, 0 failed), 1 running\n00:40 elapsed" in text
    assert "best linear_acc so far: infonce 0.8000  hard 0.4500 (epoch 1)" in text  # full budget shown bare
    progress.close()
    written = out.getvalue()
    assert "start  #0 infonce" in written and "done    1/4 #1 hard" in written  # events scroll above the display


def test_the_best_per_strategy_follows_the_rankings_order_full_budget_first():
    progress = Progress(4, 4, METRIC, out=io.StringIO(), clock=Clock())
    t = _trial(0, "sp50")
    progress.on_trial_start(0, [], t)
    progress.on_trial_result(0, [], t, {"epoch": 1, METRIC: 0.95})
    progress.on_trial_result(0, [], t, {"epoch": 4, METRIC: 0.9})  # lower, but at the full budget: it counts
    assert progress.best == {"sp50": (0.9, 4)}
    minimise = Progress(4, 4, "loss", out=io.StringIO(), clock=Clock(), mode="min")
    minimise.on_trial_start(0, [], t)
    minimise.on_trial_result(0, [], t, {"epoch": 4, "loss": 0.3})
    minimise.on_trial_result(0, [], t, {"epoch": 4, "loss": 0.2})
    assert minimise.best == {"sp50": (0.2, 4)}


def _plain(progress: Progress) -> str:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(progress.render())
    return console.file.getvalue()


def test_a_live_display_pickles_as_tune_saves_its_callbacks():
    """Tune pickles the callbacks with the experiment's state; a terminal and a live display must not stop it."""
    import cloudpickle

    out, clock = io.StringIO(), Clock()
    progress = Progress(4, 4, METRIC, out=out, clock=clock, live=True, searched=lambda n: ["lr"])
    progress.on_trial_start(0, [], _trial(0, "infonce"))
    restored = cloudpickle.loads(cloudpickle.dumps(progress))
    assert restored.running == progress.running and restored._display is None
    progress.close()
