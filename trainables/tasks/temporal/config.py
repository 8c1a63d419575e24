"""The temporal task's config and strategies: Aubret et al.'s time-based and classic contrast."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from trainables.config import COMMON, PRECISION, TaskConfig
from trainables.strategies import Knob, Strategy, preset
from trainables.tasks.temporal.data import DATASETS

# The temporal object-similarity strategies (Aubret et al., STRATEGIES.md section 5): NT-Xent at t = 0.1 either on
# temporal neighbours in a sequence of object views that moves through rooms, or on two augmentations of one frame;
# the label alignment is a switch (label_weight 0 or 1) on either.
STRATEGIES: Mapping[str, Strategy] = MappingProxyType(
    {
        s.name: s
        for s in (
            preset("time", "temporal", "random_keep_last", "all", "time-based contrast: the positive is a frame up to "
                    "delta steps away in the sequence, possibly the next object in the same room",
                    family="softmax_labels", delta=2, crop_number=7.0, p_change_room=0.1, chunk_ratio=0.8,
                    label_weight=0.0),
            preset("classic", "same_instance", "random_keep_last", "all", "SimCLR on single frames: two "
                    "augmentations of one view", family="softmax_labels", label_weight=0.0),
        )
    }
)

SETTINGS: Mapping[str, Knob] = MappingProxyType(
    {
        **COMMON,
        "task": Knob("setting", "what a trial trains", choices=("temporal",)),
        "dataset": Knob("setting", "data set", choices=DATASETS),
        "room_map": Knob("setting", "category -> room assignment", choices=("balanced", "random")),
        "precision": PRECISION,
        "objects_per_category": Knob("setting", "objects per category of the embedded data", low=10, integer=True),
        "label_temperature": Knob("setting", "temperature of the label alignment", low=0.0, low_open=True),
        "image_size": Knob("setting", "resize frames to this square size", low=8, integer=True, optional=True),
        "width": Knob("setting", "small_resnet width", low=1, integer=True),
        "proj_hidden_dim": Knob("setting", "projection head hidden size", low=1, integer=True),
        "proj_dim": Knob("setting", "projection size", low=2, integer=True),
    }
)


@dataclass(frozen=True)
class TemporalConfig(TaskConfig):
    """One trial of the temporal object-similarity task (Aubret et al.): an image encoder trained on sequences of
    object views, scored by odd-one-out on unseen objects."""

    TASK: ClassVar[str] = "temporal"
    SETTINGS: ClassVar[Mapping[str, Knob]] = SETTINGS
    STRATEGIES: ClassVar[Mapping[str, Strategy]] = STRATEGIES
    PATHS: ClassVar[tuple[str, ...]] = ("data_root", "context_json")

    strategy: str = "time"
    task: str = "temporal"
    lr: float = 1e-3  # AdamW, as the paper
    weight_decay: float = 1e-6
    temperature: float = 0.1
    label_temperature: float = 0.1
    batch_size: int = 64
    epochs: int = 10
    seed: int = 0
    dataset: str = "synthetic"
    data_root: str | None = None
    context_json: str | None = None  # MVImgNet's category -> room JSON (categories mapped to "Uncertain" dropped)
    room_map: str = "balanced"  # or `random`: a balanced random assignment, the paper's control
    objects_per_category: int = 20  # embedded data: 16 train, 2 validation, 2 test objects per category
    limit: int | None = None
    image_size: int | None = None
    width: int = 16
    proj_hidden_dim: int = 128
    proj_dim: int = 64
    eval_every: int = 1
    evaluate_test: bool = False
    device: str = "auto"
    precision: str = "auto"
    num_threads: int | None = None
    knobs: Mapping[str, Any] = field(default_factory=dict)
