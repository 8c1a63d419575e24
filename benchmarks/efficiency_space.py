"""The studies of ``benchmarks/search_efficiency.py``: the seed papers' grid and the same space searched.

Four image strategies on the embedded digits, lr and temperature fixed at the project's defaults (``ImageConfig``:
lr 1e-3, temperature 0.5, both inside the ``digits`` study's ranges), everything else as the ``digits`` study fixes it.

- ``GRID_INFONCE``, ``GRID_DEBIASED``, ``GRID_HARD``, ``GRID_SOFT_POSITIVE``: the reference, every configuration
  trained to the full budget (FIFO). A ``Study.grid`` is one Cartesian product (Optuna's GridSampler), and the 12
  configurations are four products, not one, so the grid is four studies run one after another:
  infonce; debiased x tau_plus {0.05, 0.1, 0.2}; hard x beta {0.5, 1, 2} x tau_plus {0, 0.1}; soft_positive x
  sp_ratio {0.5, 1}.
- ``RANDOM`` (random search + FIFO), ``TPE`` (TPE + FIFO), ``TPE_ASHA`` (TPE + ASHA, the project's default): 12
  trials over the same four strategies (assigned round-robin by the sweep, so 3 each) with each knob a continuous
  range covering the grid's values (one range per knob in every branch, as ``suggest_knobs`` wants: tau_plus spans
  [0, 0.2] under debiased and hard alike).

Usage: ``sweep run --space benchmarks/efficiency_space.py:TPE_ASHA --epochs 8 --max-concurrent 2 --seed 0``
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import optuna

from search_spaces._study import Study, suggest_knobs
from search_spaces.digits import FIXED as DIGITS_FIXED

STRATEGIES = ("infonce", "debiased", "hard", "soft_positive")
LR, TEMPERATURE = 1e-3, 0.5
FIXED: dict[str, Any] = {**DIGITS_FIXED, "lr": LR, "temperature": TEMPERATURE}

# The reference grid, per strategy: its knobs and their values (a product per strategy).
GRIDS: dict[str, dict[str, tuple[float, ...]]] = {
    "infonce": {},
    "debiased": {"tau_plus": (0.05, 0.1, 0.2)},
    "hard": {"beta": (0.5, 1.0, 2.0), "tau_plus": (0.0, 0.1)},
    "soft_positive": {"sp_ratio": (0.5, 1.0)},
}
GRID_SIZES = {s: math.prod(len(v) for v in g.values()) for s, g in GRIDS.items()}
BUDGET = sum(GRID_SIZES.values())  # 12 trials: the grid's size, and the budget of every search

# The searched space: the same knobs per strategy, each a range from the grid's smallest value to its largest.
SWEPT = {s: tuple(g) for s, g in GRIDS.items() if g}
RANGES = {
    "tau_plus": ("float", 0.0, 0.2),
    "beta": ("log", 0.5, 2.0),  # the grid doubles beta: a log scale
    "sp_ratio": ("float", 0.5, 1.0),
}


def searched(trial: optuna.Trial) -> dict[str, Any]:
    """Scientific: strategy (round-robin). Conditional: the strategy's knobs in ranges. Fixed: lr, temperature."""
    strategy = trial.suggest_categorical("strategy", list(STRATEGIES))
    suggest_knobs(trial, strategy, SWEPT, RANGES)
    return dict(FIXED)


def grid_point(strategy: str, trial: optuna.Trial) -> dict[str, Any]:
    """One strategy's grid: the GridSampler hands out each point of the product once."""
    trial.suggest_categorical("strategy", [strategy])
    for knob, values in GRIDS[strategy].items():
        trial.suggest_categorical(knob, list(values))
    return dict(FIXED)


def _grid_study(strategy: str) -> Study:
    knobs = " x ".join(f"{k} {{{', '.join(f'{v:g}' for v in vs)}}}" for k, vs in GRIDS[strategy].items())
    return Study(
        name=f"grid_{strategy}",
        description=f"reference grid: {strategy}{' x ' + knobs if knobs else ''}, lr {LR:g}, t {TEMPERATURE:g}, "
        "every configuration to the full budget",
        space=partial(grid_point, strategy),
        num_samples=GRID_SIZES[strategy],
        scheduler="fifo",
        grid={"strategy": (strategy,), **GRIDS[strategy]},
    )


GRID_INFONCE = _grid_study("infonce")
GRID_DEBIASED = _grid_study("debiased")
GRID_HARD = _grid_study("hard")
GRID_SOFT_POSITIVE = _grid_study("soft_positive")
GRID_STUDIES = {"GRID_INFONCE": GRID_INFONCE, "GRID_DEBIASED": GRID_DEBIASED, "GRID_HARD": GRID_HARD,
                "GRID_SOFT_POSITIVE": GRID_SOFT_POSITIVE}

_SEARCHED = "the grid's four strategies (3 trials each), knobs in ranges covering the grid, lr and t fixed"
RANDOM = Study(name="random_fifo", description=f"random search + FIFO over {_SEARCHED}", space=searched,
               num_samples=BUDGET, scheduler="fifo", sampler="random")
TPE = Study(name="tpe_fifo", description=f"TPE + FIFO over {_SEARCHED}", space=searched,
            num_samples=BUDGET, scheduler="fifo", sampler="tpe")
TPE_ASHA = Study(name="tpe_asha", description=f"TPE + ASHA over {_SEARCHED}", space=searched,
                 num_samples=BUDGET, scheduler="asha", sampler="tpe")
