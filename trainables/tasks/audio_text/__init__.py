"""The audio-text retrieval task (Xie et al.): an audio CRNN trained against caption words under one of eight
negative selections of a margin triplet loss (or InfoNCE), scored by retrieval mAP and R@k both ways."""

from __future__ import annotations

from trainables.task import Task, lazy
from trainables.tasks.audio_text.config import AudioTextConfig
from trainables.tasks.audio_text.data import check_audio_text_dataset

TASK = Task(
    name="audio_text",
    doc="audio-caption retrieval; mean of text->audio and audio->text mAP",
    config=AudioTextConfig,
    build=lazy("trainables.tasks.audio_text.trial:build"),  # models load only when a trial runs
    check_data=lambda cfg: check_audio_text_dataset(cfg.dataset, cfg.data_root, cfg.word_vectors),
    metric="map_mean",  # mean of text->audio and audio->text mAP over the full ranking
    mode="max",
    columns=("t2a_map", "t2a_r1", "t2a_r5", "t2a_r10", "a2t_map", "a2t_r1", "a2t_r5", "a2t_r10"),
    shown=("map_mean", "t2a_r1", "a2t_r1"),
    smoke={"limit": 30, "conv_width": 4, "gru_units": 8, "n_mels": 16, "batch_size": 16},
    parts={
        "positive": ("cross_modal",),
        "sampler": ("random_keep_last",),
        "weighting": ("all", "uniform_one", "mean", "hard_k", "easy_k", "semi_hard"),
        "family": ("softmax", "hinge"),
    },
)
