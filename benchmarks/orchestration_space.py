"""The fixed 16-trial grid of ``benchmarks/orchestration.py``: what Ray Tune costs over a plain loop.

Every trial runs to the full budget (``scheduler="fifo"``), the grid fixes the configurations (4 strategies of the
same cost class: random batches, same-instance positives x 2 learning rates x 2 temperatures), so the sweep and the
plain loop run exactly the same trials. The trial itself is the default sweep's (``search_spaces.digits.FIXED``:
the embedded digits, small ResNet of width 16) at 4 epochs.

Used as ``sweep run --space benchmarks/orchestration_space.py:STUDY`` (16 trials) or ``:SMOKE_STUDY`` (4 trials, with
``--smoke-test``: seconds).
"""

from __future__ import annotations

from typing import Any

import optuna

from search_spaces import Study
from search_spaces.digits import FIXED as DIGITS_FIXED

EPOCHS = 4
GRID: dict[str, tuple[Any, ...]] = {
    "strategy": ("infonce", "debiased", "hard", "semi_hard"),
    "lr": (1e-3, 3e-3),
    "temperature": (0.2, 0.5),
}
SMOKE_GRID: dict[str, tuple[Any, ...]] = {"strategy": ("infonce", "hard"), "lr": (1e-3,), "temperature": (0.2, 0.5)}
FIXED: dict[str, Any] = {**DIGITS_FIXED, "epochs": EPOCHS}


def _space(grid: dict[str, tuple[Any, ...]]) -> Any:
    def space(trial: optuna.Trial) -> dict[str, Any]:
        for name, values in grid.items():
            trial.suggest_categorical(name, list(values))
        return dict(FIXED)

    return space


def space(trial: optuna.Trial) -> dict[str, Any]:
    """The 16-point grid; everything else fixed (the knobs of debiased, hard and semi_hard at their defaults)."""
    return _space(GRID)(trial)


def smoke_space(trial: optuna.Trial) -> dict[str, Any]:
    """The 4-point grid of the smoke check."""
    return _space(SMOKE_GRID)(trial)


def grid_points(grid: dict[str, tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Every point of ``grid``, in a fixed order."""
    points: list[dict[str, Any]] = [{}]
    for name, values in grid.items():
        points = [{**p, name: v} for p in points for v in values]
    return points


def _study(name: str, description: str, space_fn: Any, grid: dict[str, tuple[Any, ...]]) -> Study:
    return Study(name=name, description=description, space=space_fn, num_samples=len(grid_points(grid)),
                 scheduler="fifo", grid=grid)


STUDY = _study("orchestration", "benchmark: 16 fixed digits trials (4 strategies x 2 lr x 2 temperatures), 4 epochs, "
               "FIFO", space, GRID)
SMOKE_STUDY = _study("orchestration_smoke", "benchmark smoke check: 4 fixed trials, FIFO", smoke_space, SMOKE_GRID)
