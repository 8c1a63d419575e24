"""The audio-text task's config and strategies: Xie et al.'s eight negative selections and InfoNCE."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from trainables.config import COMMON, TaskConfig
from trainables.strategies import Knob, Strategy, preset
from trainables.tasks.audio_text.data import DATASETS


def _xie(name: str, weighting: str, doc: str, **defaults: Any) -> Strategy:
    return preset(name, "cross_modal", "random_keep_last", weighting, doc, family="hinge", margin=0.5, **defaults)


# The audio-text retrieval strategies (Xie et al., ICASSP 2023, STRATEGIES.md section 3): a margin triplet loss in
# both directions; the eight selections differ in which in-batch negatives it sees. Other captions of the same clip
# are never negatives. InfoNCE over the same pairs is the comparison.
STRATEGIES: Mapping[str, Strategy] = MappingProxyType(
    {
        s.name: s
        for s in (
            preset(
                "infonce",
                "cross_modal",
                "random_keep_last",
                "all",
                "cross-modal InfoNCE, both directions, same-clip captions left out of the negatives (the comparison)",
            ),
            _xie("random_ns", "uniform_one", "random-NS: one negative drawn at random per direction"),
            _xie("full_batch_ns", "mean", "full-batch-NS: the hinge averaged over every negative"),
            _xie("hard_ns", "hard_k", "hard-NS: the highest audio-text score, per direction", select_by="cross", k=1),
            _xie(
                "semi_hard_ns",
                "semi_hard",
                "semi-hard-NS: the score nearest the positive's (Xie), or FaceNet's band below it",
                variant="nearest",
            ),
            _xie("easy_text_ns", "easy_k", "easy-text-NS: the least similar caption's clip", select_by="text", k=1),
            _xie("hard_text_ns", "hard_k", "hard-text-NS: the most similar caption's clip", select_by="text", k=1),
            _xie("easy_audio_ns", "easy_k", "easy-audio-NS: the least similar clip", select_by="audio", k=1),
            _xie("hard_audio_ns", "hard_k", "hard-audio-NS: the most similar clip", select_by="audio", k=1),
        )
    }
)

SETTINGS: Mapping[str, Knob] = MappingProxyType(
    {
        **COMMON,
        "task": Knob("setting", "what a trial trains", choices=("audio_text",)),
        "dataset": Knob("setting", "data set", choices=DATASETS),
        "n_mels": Knob("setting", "mel bands of the log-mel features", low=8, integer=True),
        "score": Knob("setting", "audio-caption score", choices=("alignment", "pooled")),
        "word_dim": Knob("setting", "word vector size of the embedded data", low=2, integer=True),
        "conv_width": Knob("setting", "audio CRNN convolution channels", low=1, integer=True),
        "gru_units": Knob("setting", "audio CRNN GRU units per direction", low=1, integer=True),
    }
)


@dataclass(frozen=True)
class AudioTextConfig(TaskConfig):
    """One trial of the audio-text retrieval task (Xie et al.): an audio CRNN trained against caption words."""

    TASK: ClassVar[str] = "audio_text"
    SETTINGS: ClassVar[Mapping[str, Knob]] = SETTINGS
    STRATEGIES: ClassVar[Mapping[str, Strategy]] = STRATEGIES
    PATHS: ClassVar[tuple[str, ...]] = ("data_root", "word_vectors")

    strategy: str = "random_ns"
    task: str = "audio_text"
    # optimisation (Adam, no weight decay, as Xie et al.)
    lr: float = 1e-3
    weight_decay: float = 0.0
    temperature: float = 0.07  # read by infonce only; the hinge strategies use `margin`
    batch_size: int = 32  # caption-level pairs
    epochs: int = 15
    seed: int = 0
    # data
    dataset: str = "synthetic"
    data_root: str | None = None
    word_vectors: str | None = None  # word2vec/GloVe text file for real captions; without it words are learned
    limit: int | None = None
    n_mels: int = 64
    # model and score
    score: str = "alignment"  # Xie's mean ReLU frame-word cosine, or `pooled` (cosine of mean embeddings)
    word_dim: int = 64  # the embedded data's word vectors (a word-vector file brings its own)
    conv_width: int = 16
    gru_units: int = 32
    # evaluation on the validation split
    eval_every: int = 1
    evaluate_test: bool = False
    # execution
    device: str = "auto"
    num_threads: int | None = None
    knobs: Mapping[str, Any] = field(default_factory=dict)
