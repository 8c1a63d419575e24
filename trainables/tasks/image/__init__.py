"""The image task: an encoder trained on two augmented views per image (HCL, DCL, SimCLR; Wang et al.'s batch
samplers and soft positives on images), scored by a linear probe and kNN on held-out labelled images."""

from __future__ import annotations

from trainables.task import Task, lazy
from trainables.tasks.image.config import ImageConfig
from trainables.tasks.image.data import check_dataset

TASK = Task(
    name="image",
    doc="two-view contrast on images; linear probe and kNN accuracy",
    config=ImageConfig,
    build=lazy("trainables.tasks.image.trial:build"),  # models load only when a trial runs
    check_data=lambda cfg: check_dataset(cfg.dataset, cfg.data_root),
    metric="linear_acc",
    mode="max",
    columns=("linear_acc", "knn_acc"),
    shown=("linear_acc", "knn_acc"),
    smoke={"limit": 200, "width": 8, "proj_hidden_dim": 32, "proj_dim": 16, "probe_epochs": 20, "batch_size": 32},
    parts={
        "positive": ("same_instance", "soft_class"),
        "sampler": ("random", "one_per_class", "single_class"),
        "weighting": ("all", "debiased", "importance", "semi_hard"),
        "family": ("softmax",),
    },
)
