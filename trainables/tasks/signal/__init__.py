"""The signal task: an encoder of 1-D signals trained on two views per signal under the same strategies as the image
task (HCL, DCL, SimCLR; Wang et al.'s samplers and soft positives), scored by a linear probe and kNN. Its embedded
data, MNIST-1D, is where strategies really differ: a probe on raw or random features is far from a trained one."""

from __future__ import annotations

from trainables.task import Task, lazy
from trainables.tasks.signal.config import SignalConfig
from trainables.tasks.signal.data import check_signal_dataset

TASK = Task(
    name="signal",
    doc="two-view contrast on 1-D signals (MNIST-1D); linear probe and kNN accuracy",
    config=SignalConfig,
    build=lazy("trainables.tasks.signal.trial:build"),  # models load only when a trial runs
    check_data=lambda cfg: check_signal_dataset(cfg.dataset, cfg.data_root),
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
