"""The temporal object-similarity task (Aubret et al.): an image encoder trained on sequences of object views, where
a temporal neighbour (possibly the next object in the same room) is the positive, scored by odd-one-out."""

from __future__ import annotations

from trainables.task import Figure, Task, lazy
from trainables.tasks.temporal.config import TemporalConfig
from trainables.tasks.temporal.data import check_temporal_dataset

LEVELS = ("ooo_category", "ooo_context", "ooo_object")

TASK = Task(
    name="temporal",
    doc="time-based contrast of object views; odd-one-out at the category, context and object levels",
    config=TemporalConfig,
    build=lazy("trainables.tasks.temporal.trial:build"),  # models load only when a trial runs
    check_data=lambda cfg: check_temporal_dataset(cfg.dataset, cfg.data_root, cfg.context_json),
    metric="ooo_mean",  # odd-one-out at the backbone, mean of the category/context/object levels
    mode="max",
    columns=(*LEVELS, *("proj_" + level for level in LEVELS)),
    shown=("ooo_mean", *LEVELS),
    smoke={"objects_per_category": 10, "width": 4, "proj_hidden_dim": 32, "proj_dim": 16, "batch_size": 32},
    parts={
        "positive": ("temporal", "same_instance"),
        "sampler": ("random_keep_last",),
        "weighting": ("all",),
        "family": ("softmax_labels",),
    },
    figures=(Figure("p_change_room", LEVELS),),  # Aubret et al.'s figure: the levels against room switching
)
