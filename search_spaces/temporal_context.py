"""Aubret et al.'s time-based contrast against single-frame SimCLR, across the sequence knobs, with and without the
label alignment, on the embedded objects-in-rooms data; ranks by odd-one-out on unseen objects."""

from __future__ import annotations

from typing import Any

import optuna

from search_spaces._study import Study
from trainables.tasks import TASKS

FIXED: dict[str, Any] = {
    "task": "temporal",
    "dataset": "synthetic",
    "epochs": 10,
    "batch_size": 64,
}


def space(trial: optuna.Trial) -> dict[str, Any]:
    """Scientific: the strategy, and for `time` the sequence's knobs (p_change_room, crop_number, delta); the label
    alignment on or off for both. Nuisance: lr, temperature."""
    strategy = trial.suggest_categorical("strategy", list(TASKS["temporal"].strategies))
    trial.suggest_float("lr", 3e-4, 3e-3, log=True)
    trial.suggest_float("temperature", 0.05, 0.5, log=True)  # the paper's 0.1 inside
    if strategy == "time":
        trial.suggest_float("p_change_room", 0.0, 0.5)  # the paper's 0.1 inside
        trial.suggest_float("crop_number", 1.0, 15.0)  # 7
        trial.suggest_int("delta", 1, 4)  # 2
    trial.suggest_categorical("label_weight", [0.0, 1.0])  # the switch: off, or the paper's weight 1
    return dict(FIXED)


STUDY = Study(
    name="temporal_context",
    description="time-based contrast vs SimCLR over p_change_room, crop_number, delta, label alignment; ranks by "
    "ooo_mean",
    space=space,
    num_samples=20,
)
