"""The default study: every image strategy on the embedded digits, an equal share of trials each."""

from __future__ import annotations

from typing import Any

import optuna

from search_spaces._study import Study, suggest_knobs
from trainables.tasks import TASKS

# Hardness knobs swept per strategy. Presets (sp50, sp70, pl_sp) keep theirs fixed: that is what makes them presets.
SWEPT = {
    "debiased": ("tau_plus",),
    "hard": ("tau_plus", "beta"),
    "semi_hard": ("variant", "margin"),
    "soft_positive": ("sp_ratio",),
    "hard_negative": ("class_order",),
}
RANGES = {
    "tau_plus": ("float", 0.0, 0.2),  # DCL/HCL sweep {0, 0.05, 0.1}; 1/#classes = 0.1 here
    "beta": ("float", 0.0, 4.0),  # HCL's STL-10 sweep spans {0 .. 6}; best near 1
    "variant": ("choice", ("band", "nearest")),
    "margin": ("float", 0.05, 0.5),
    "sp_ratio": ("float", 0.25, 1.0),
    "class_order": ("choice", ("fixed", "shuffled")),
}
FIXED: dict[str, Any] = {
    "dataset": "digits",
    "epochs": 12,
    "batch_size": 128,
    "encoder": "small_resnet",
    "width": 16,
    "proj_hidden_dim": 128,
    "proj_dim": 64,
}


def space(trial: optuna.Trial) -> dict[str, Any]:
    """Scientific: strategy. Nuisance: lr, temperature. Conditional: the strategy's hardness knobs."""
    strategy = trial.suggest_categorical("strategy", list(TASKS["image"].strategies))
    trial.suggest_float("lr", 3e-4, 1e-2, log=True)
    trial.suggest_float("temperature", 0.1, 1.0, log=True)
    suggest_knobs(trial, strategy, SWEPT, RANGES)
    return dict(FIXED)


STUDY = Study(
    name="digits",
    description="every image strategy on scikit-learn's digits (embedded, no download); ranks by linear_acc",
    space=space,
    num_samples=30,
)
