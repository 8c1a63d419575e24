"""Wang et al.'s audio-visual sampling strategies on the embedded clips; ranks by the audio branch's linear probe."""

from __future__ import annotations

from typing import Any

import optuna

from search_spaces._study import Study, suggest_knobs
from trainables.tasks import TASKS

# Hardness knobs swept per strategy; sp50 and pl_sp keep their preset values (that is what makes them presets).
SWEPT = {
    "soft_positive": ("sp_ratio",),
    "sp70": ("label_accuracy",),
    "hard_negative": ("class_order",),
}
RANGES = {
    "sp_ratio": ("float", 0.25, 1.0),  # Wang's SP50 and SP at 0.5 and 1.0
    "label_accuracy": ("float", 0.3, 1.0),  # Wang's SP70 at 0.707
    "class_order": ("choice", ("fixed", "shuffled")),
}
FIXED: dict[str, Any] = {
    "task": "audio_visual",
    "dataset": "synthetic",
    "epochs": 8,
    "batch_size": 64,
}


def space(trial: optuna.Trial) -> dict[str, Any]:
    """Scientific: the strategy. Nuisance: lr, temperature. Conditional: the strategy's hardness knob."""
    strategy = trial.suggest_categorical("strategy", list(TASKS["audio_visual"].strategies))
    trial.suggest_float("lr", 3e-4, 3e-3, log=True)
    trial.suggest_float("temperature", 0.03, 0.3, log=True)  # Wang's 0.07 inside
    suggest_knobs(trial, strategy, SWEPT, RANGES)
    return dict(FIXED)


STUDY = Study(
    name="av_sampling",
    description="Wang et al.'s audio-visual samplers and soft positives on embedded clips; ranks by linear_acc",
    space=space,
    num_samples=21,
)
