"""Xie et al.'s eight negative selections, and InfoNCE for comparison, on the embedded audio-caption data."""

from __future__ import annotations

from typing import Any

import optuna

from search_spaces._study import Study
from trainables.tasks import TASKS

FIXED: dict[str, Any] = {
    "task": "audio_text",
    "dataset": "synthetic",
    "epochs": 12,
    "batch_size": 32,  # caption-level pairs, as the paper
    "limit": 150,  # training clips (750 captions): about 5 s an epoch on one CPU core; validation keeps its 100
}


def space(trial: optuna.Trial) -> dict[str, Any]:
    """Scientific: the selection. Nuisance: lr, and the margin (hinge) or the temperature (InfoNCE). Hardness knob:
    semi-hard's rule, Xie's nearest score or FaceNet's band."""
    strategy = trial.suggest_categorical("strategy", list(TASKS["audio_text"].strategies))
    trial.suggest_float("lr", 3e-4, 3e-3, log=True)
    if strategy == "infonce":
        trial.suggest_float("temperature", 0.02, 0.5, log=True)
    else:
        trial.suggest_float("margin", 0.05, 1.0, log=True)  # the paper's 0.5 inside
    if strategy == "semi_hard_ns":
        trial.suggest_categorical("variant", ["nearest", "band"])
    return dict(FIXED)


STUDY = Study(
    name="audio_text_negatives",
    description="Xie et al.'s eight negative selections + InfoNCE on embedded audio-caption data; ranks by map_mean",
    space=space,
    metric="map_mean",
    num_samples=27,
)
