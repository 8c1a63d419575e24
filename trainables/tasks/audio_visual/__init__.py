"""The audio-visual correspondence task (Wang et al.): audio and frame encoders trained by one cross-modal InfoNCE
under easy/hard-negative batches or soft positives, scored by the audio branch on audio classification."""

from __future__ import annotations

from trainables.task import Task, lazy
from trainables.tasks.audio_visual.config import AudioVisualConfig
from trainables.tasks.audio_visual.data import check_audio_visual_dataset

TASK = Task(
    name="audio_visual",
    doc="audio-video correspondence; the audio branch's linear probe, in-domain and out-of-domain",
    config=AudioVisualConfig,
    build=lazy("trainables.tasks.audio_visual.trial:build"),  # models load only when a trial runs
    check_data=lambda cfg: check_audio_visual_dataset(cfg.dataset, cfg.data_root, cfg.ood_root),
    metric="linear_acc",  # in-domain linear probe of the audio branch (Wang et al.'s column 1)
    mode="max",
    columns=("linear_acc", "finetune_acc", "ood_linear_acc", "ood_finetune_acc"),
    shown=("linear_acc", "ood_linear_acc", "finetune_acc", "ood_finetune_acc"),
    smoke={"limit": 60, "audio_width": 4, "video_width": 4, "n_mels": 16, "batch_size": 20, "probe_epochs": 10,
           "finetune_epochs": 1},
    parts={
        "positive": ("cross_modal", "soft_class"),
        "sampler": ("random", "one_per_class", "single_class"),
        "weighting": ("all",),
        "family": ("softmax",),
    },
)
