"""The audio-visual task's config and strategies: Wang et al.'s batch compositions and soft positives."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from trainables.config import COMMON, TaskConfig
from trainables.strategies import SOFT_DEFAULTS, Knob, Strategy, preset
from trainables.tasks.audio_visual.data import DATASETS


def _wang(name: str, positive: str, sampler: str, doc: str, **defaults: Any) -> Strategy:
    return preset(name, positive, sampler, "all", doc, **defaults)


# The audio-visual strategies (Wang et al., STRATEGIES.md section 4): one cross-modal InfoNCE for all of them; they
# differ in how a batch is composed and in which clip's video is the positive for audio i.
STRATEGIES: Mapping[str, Strategy] = MappingProxyType(
    {
        s.name: s
        for s in (
            _wang("random", "cross_modal", "random", "random batches; the positive is the clip's own video"),
            _wang("easy_negative", "cross_modal", "one_per_class", "one clip per class per batch: no same-class "
                  "negative"),
            _wang("hard_negative", "cross_modal", "single_class", "every batch from one class: every negative is "
                  "same-class", class_order="fixed"),
            _wang("soft_positive", "soft_class", "random", "the positive video is another clip of the same label "
                  "with probability sp_ratio", sp_ratio=1.0, label_source="true", **SOFT_DEFAULTS),
            _wang("sp50", "soft_class", "random", "soft_positive with sp_ratio 0.5 (Wang et al.'s SP50)",
                  sp_ratio=0.5, label_source="true", **SOFT_DEFAULTS),
            _wang("sp70", "soft_class", "random", "soft_positive on labels corrupted to 70.7% accuracy (SP70)",
                  sp_ratio=1.0, label_source="noisy", **{**SOFT_DEFAULTS, "label_accuracy": 0.707}),
            _wang("pl_sp", "soft_class", "random", "soft_positive on k-means pseudo-labels of the current visual "
                  "embeddings (standing in for Wang et al.'s ImageNet predictions)", sp_ratio=1.0,
                  label_source="pseudo", **SOFT_DEFAULTS),
        )
    }
)

SETTINGS: Mapping[str, Knob] = MappingProxyType(
    {
        **COMMON,
        "task": Knob("setting", "what a trial trains", choices=("audio_visual",)),
        "dataset": Knob("setting", "data set", choices=DATASETS),
        "n_mels": Knob("setting", "mel bands of the log-mel features", low=8, integer=True),
        "frames": Knob("setting", "video frames per clip", low=1, integer=True),
        "frame_size": Knob("setting", "square frame size in pixels", low=8, integer=True),
        "audio_width": Knob("setting", "audio CNN base width", low=1, integer=True),
        "video_width": Knob("setting", "frame CNN base width", low=1, integer=True),
        "proj_dim": Knob("setting", "projection size of the InfoNCE heads", low=2, integer=True),
        "probe_epochs": Knob("setting", "linear probe iterations", low=1, integer=True),
        "finetune_epochs": Knob("setting", "fine-tuning epochs of the audio branch", low=1, integer=True),
    }
)


@dataclass(frozen=True)
class AudioVisualConfig(TaskConfig):
    """One trial of the audio-visual correspondence task (Wang et al.): audio and frame encoders trained by one
    cross-modal InfoNCE, scored by the audio branch on audio classification."""

    TASK: ClassVar[str] = "audio_visual"
    SETTINGS: ClassVar[Mapping[str, Knob]] = SETTINGS
    STRATEGIES: ClassVar[Mapping[str, Strategy]] = STRATEGIES
    PATHS: ClassVar[tuple[str, ...]] = ("data_root", "ood_root")

    strategy: str = "random"
    task: str = "audio_visual"
    lr: float = 1e-3
    weight_decay: float = 1e-5  # Adam, as Wang et al. (their lr 1e-4 suits their 100 GPU epochs, not ours)
    temperature: float = 0.07
    batch_size: int = 64
    epochs: int = 12
    seed: int = 0
    dataset: str = "synthetic"
    data_root: str | None = None
    ood_root: str | None = None  # a labelled audio set for the out-of-domain score (vggsound-style layout)
    limit: int | None = None
    n_mels: int = 64
    frames: int = 4
    frame_size: int = 32
    audio_width: int = 16
    video_width: int = 8
    proj_dim: int = 128
    probe_epochs: int = 50  # passes of the linear probe over the cached training features
    finetune_epochs: int = 2  # fine-tuning passes of the audio branch, at the last epoch only
    eval_every: int = 1
    evaluate_test: bool = False
    device: str = "auto"
    num_threads: int | None = None
    knobs: Mapping[str, Any] = field(default_factory=dict)
