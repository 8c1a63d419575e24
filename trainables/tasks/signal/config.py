"""The signal task's config: its settings and their defaults (the two-view presets are the shared ones)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from trainables.config import COMMON, PRECISION, TaskConfig
from trainables.strategies import TWO_VIEW_STRATEGIES, Knob, Strategy
from trainables.tasks.signal.data import DATASETS

SETTINGS: Mapping[str, Knob] = MappingProxyType(
    {
        **COMMON,
        "task": Knob("setting", "what a trial trains", choices=("signal",)),
        "batch_size": Knob("setting", "items per batch (two views each)", low=2, integer=True),
        "dataset": Knob("setting", "data set", choices=DATASETS),
        "precision": PRECISION,
        "width": Knob("setting", "1-D CNN width (features: 4 x width)", low=1, integer=True),
        "proj_hidden_dim": Knob("setting", "projection head hidden size", low=1, integer=True),
        "proj_dim": Knob("setting", "projection size", low=2, integer=True),
        "probe_epochs": Knob("setting", "linear probe iterations", low=1, integer=True),
        "knn_k": Knob("setting", "neighbours of the kNN score", low=1, integer=True),
    }
)


@dataclass(frozen=True)
class SignalConfig(TaskConfig):
    """One trial of the signal task. Field defaults are the project's defaults; search spaces override them."""

    TASK: ClassVar[str] = "signal"
    SETTINGS: ClassVar[Mapping[str, Knob]] = SETTINGS
    STRATEGIES: ClassVar[Mapping[str, Strategy]] = TWO_VIEW_STRATEGIES

    strategy: str = "infonce"
    task: str = "signal"
    # optimisation (Adam as in HCL/DCL)
    lr: float = 1e-3
    weight_decay: float = 1e-6
    temperature: float = 0.2
    batch_size: int = 256
    epochs: int = 10
    seed: int = 0
    # data
    dataset: str = "mnist1d"
    data_root: str | None = None
    limit: int | None = None  # keep only the first `limit` items of each split (smoke tests)
    # model
    width: int = 32
    proj_hidden_dim: int = 128
    proj_dim: int = 64
    # evaluation on the validation split, every epoch in a sweep (the epoch is ASHA's time unit)
    probe_epochs: int = 100
    knn_k: int = 200
    eval_every: int = 1
    evaluate_test: bool = False  # also score the test split at the last epoch: finalists only (`sweep confirm`)
    # execution
    device: str = "auto"
    precision: str = "auto"
    num_threads: int | None = None
    # strategy knobs, resolved against the strategy's preset defaults (read-only)
    knobs: Mapping[str, Any] = field(default_factory=dict)
