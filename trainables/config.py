"""The trial configuration: every default in one place, every value checked before any compute is spent.

A config arrives as a flat dict (from a search space, a YAML/JSON file, or a resumed checkpoint). Strategy knobs
(``tau_plus``, ``beta``, ``sp_ratio``, ...) sit at the top level beside the general settings, spelled as in
:data:`trainables.strategies.KNOBS`. An unknown key, an unknown strategy, a knob that the chosen strategy does not
have or a value out of range (NaN or an infinity included, a fraction for an integer setting, a seed outside
[0, 2**32 - 1]) raises :class:`~trainables.errors.UserError` naming the key and what it accepts: a misspelt knob must
fail the trial at once, not run a default configuration for hours.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from trainables.accel import PRECISIONS
from trainables.data import DATASETS
from trainables.errors import UserError
from trainables.models import ENCODERS
from trainables.strategies import KNOBS, Knob, Strategy, get_strategy

TASKS = ("image", "audio_text", "audio_visual", "temporal")
SEED_MAX = 2**32 - 1
MAX_THREADS = 1024  # torch.set_num_threads takes a C int; far more threads than cores only thrashes
DEVICES = ("auto", "cpu", "cuda")
AUDIO_TEXT_DATASETS = ("synthetic", "clotho")
AUDIO_VISUAL_DATASETS = ("synthetic", "vggsound")
TEMPORAL_DATASETS = ("synthetic", "mvimgnet")

# The score a sweep ranks on, per task, and its direction. The validation split is used; test is for finalists.
METRICS: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "image": ("linear_acc", "max"),
        "audio_text": ("map_mean", "max"),  # mean of text->audio and audio->text mAP over the full ranking
        "audio_visual": ("linear_acc", "max"),  # in-domain linear probe of the audio branch (Wang et al.'s column 1)
        "temporal": ("ooo_mean", "max"),  # odd-one-out at the backbone, mean of the category/context/object levels
    }
)
METRIC, MODE = METRICS["image"]
# The scores a report tabulates per strategy, shaped like each seed paper's table.
PAPER_COLUMNS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "image": ("linear_acc", "knn_acc"),
        "audio_text": ("t2a_map", "t2a_r1", "t2a_r5", "t2a_r10", "a2t_map", "a2t_r1", "a2t_r5", "a2t_r10"),
        "audio_visual": ("linear_acc", "finetune_acc", "ood_linear_acc", "ood_finetune_acc"),
        "temporal": ("ooo_category", "ooo_context", "ooo_object", "proj_ooo_category", "proj_ooo_context",
                     "proj_ooo_object"),
    }
)


# The general settings' rules, checked by the same code as the strategy knobs.
_COMMON: Mapping[str, Knob] = MappingProxyType(
    {
        "lr": Knob("setting", "Adam learning rate", low=0.0, low_open=True, high=10.0),
        "weight_decay": Knob("setting", "Adam weight decay", low=0.0),
        "temperature": Knob("setting", "softmax temperature", low=0.0, low_open=True, high=100.0),
        "batch_size": Knob("setting", "items per batch", low=2, integer=True),
        "epochs": Knob("setting", "full budget", low=1, integer=True),
        # numpy's legacy seed (np.random.seed, which seed_everything calls) takes 32 bits
        "seed": Knob("setting", "seeds data split, init and every epoch", low=0, high=SEED_MAX, integer=True),
        "limit": Knob("setting", "items kept per split", low=10, integer=True, optional=True),
        "eval_every": Knob("setting", "epochs between validation scores", low=1, integer=True),
        "evaluate_test": Knob("setting", "score the test split at the last epoch", choices=(False, True)),
        "device": Knob("setting", "where the trial runs", choices=DEVICES),
        "num_threads": Knob("setting", "torch CPU threads", low=1, high=MAX_THREADS, integer=True, optional=True),
    }
)
# The image encoders' compute precision: `auto` is bf16 (with channels-last) on a CUDA device that has it, fp32 on a
# CPU; see trainables.accel. The audio tasks' GRU and 1-D convolutions stay in fp32.
_PRECISION = Knob("setting", "compute precision on CUDA (a CPU computes fp32)", choices=PRECISIONS)
_IMAGE_SETTINGS: Mapping[str, Knob] = MappingProxyType(
    {
        **_COMMON,
        "task": Knob("setting", "what a trial trains", choices=("image",)),
        "batch_size": Knob("setting", "items per batch (two views each)", low=2, integer=True),
        "dataset": Knob("setting", "data set", choices=DATASETS),
        "image_size": Knob("setting", "resize to this square size", low=4, integer=True, optional=True),
        "encoder": Knob("setting", "backbone", choices=ENCODERS),
        "precision": _PRECISION,
        "width": Knob("setting", "small_resnet width", low=1, integer=True),
        "proj_hidden_dim": Knob("setting", "projection head hidden size", low=1, integer=True),
        "proj_dim": Knob("setting", "projection size", low=2, integer=True),
        "probe_epochs": Knob("setting", "linear probe iterations", low=1, integer=True),
        "knn_k": Knob("setting", "neighbours of the kNN score", low=1, integer=True),
    }
)

_AUDIO_TEXT_SETTINGS: Mapping[str, Knob] = MappingProxyType(
    {
        **_COMMON,
        "task": Knob("setting", "what a trial trains", choices=("audio_text",)),
        "dataset": Knob("setting", "data set", choices=AUDIO_TEXT_DATASETS),
        "n_mels": Knob("setting", "mel bands of the log-mel features", low=8, integer=True),
        "score": Knob("setting", "audio-caption score", choices=("alignment", "pooled")),
        "word_dim": Knob("setting", "word vector size of the embedded data", low=2, integer=True),
        "conv_width": Knob("setting", "audio CRNN convolution channels", low=1, integer=True),
        "gru_units": Knob("setting", "audio CRNN GRU units per direction", low=1, integer=True),
    }
)

_AUDIO_VISUAL_SETTINGS: Mapping[str, Knob] = MappingProxyType(
    {
        **_COMMON,
        "task": Knob("setting", "what a trial trains", choices=("audio_visual",)),
        "dataset": Knob("setting", "data set", choices=AUDIO_VISUAL_DATASETS),
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

_TEMPORAL_SETTINGS: Mapping[str, Knob] = MappingProxyType(
    {
        **_COMMON,
        "task": Knob("setting", "what a trial trains", choices=("temporal",)),
        "dataset": Knob("setting", "data set", choices=TEMPORAL_DATASETS),
        "room_map": Knob("setting", "category -> room assignment", choices=("balanced", "random")),
        "precision": _PRECISION,
        "objects_per_category": Knob("setting", "objects per category of the embedded data", low=10, integer=True),
        "label_temperature": Knob("setting", "temperature of the label alignment", low=0.0, low_open=True),
        "image_size": Knob("setting", "resize frames to this square size", low=8, integer=True, optional=True),
        "width": Knob("setting", "small_resnet width", low=1, integer=True),
        "proj_hidden_dim": Knob("setting", "projection head hidden size", low=1, integer=True),
        "proj_dim": Knob("setting", "projection size", low=2, integer=True),
    }
)


class TaskConfig:
    """What every task's config shares: parsing a flat dict, the strategy's parts and knobs, the flat form back."""

    TASK: ClassVar[str]
    SETTINGS: ClassVar[Mapping[str, Knob]]
    PATHS: ClassVar[tuple[str, ...]] = ("data_root",)

    strategy: str
    knobs: Mapping[str, Any]

    @property
    def strategy_spec(self) -> Strategy:
        return get_strategy(self.strategy, self.TASK)

    @property
    def loss_knobs(self) -> dict[str, Any]:
        return {k: self.knobs[k] for k in self.strategy_spec.loss_knobs}

    def part_knobs(self, part: str) -> dict[str, Any]:
        return {k: v for k, v in self.knobs.items() if KNOBS[k].part == part}

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> Any:
        """Validate a flat config dict; raise UserError naming the first offending key."""
        if not isinstance(config, Mapping):
            raise UserError(f"a trial config must be a mapping of settings (key: value), not {type(config).__name__}")
        general = {f.name for f in dataclasses.fields(cls)} - {"knobs"}
        unknown = [k for k in config if k not in general and k not in KNOBS]
        if unknown:
            raise UserError(
                f"unknown config key `{unknown[0]}` for task {cls.TASK!r}; valid keys are the settings "
                f"({', '.join(sorted(general))}) and the strategy knobs ({', '.join(KNOBS)})"
            )
        strategy = get_strategy(config.get("strategy", cls.strategy), cls.TASK)
        knobs = strategy.resolve({k: v for k, v in config.items() if k in KNOBS})
        _check_conditional_knobs(strategy, config, knobs)
        values = {k: v for k, v in config.items() if k in general}
        for key in cls.PATHS:
            if values.get(key) is not None and not isinstance(values[key], str):
                raise UserError(f"`{key}` is {values[key]!r} but must be a path (a string), or null (not set)")
        checked = {k: cls.SETTINGS[k].check(k, x) if k in cls.SETTINGS else x for k, x in values.items()}
        return cls(**checked, knobs=MappingProxyType(knobs))

    def to_dict(self) -> dict[str, Any]:
        """The flat form `from_dict` takes: settings that differ from nothing are all written out."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "knobs"}  # type: ignore
        out.update((k, v) for k, v in self.knobs.items() if k not in _inactive(self.knobs))
        return out


@dataclass(frozen=True)
class TrialConfig(TaskConfig):
    """One trial of the image task. Field defaults are the project's defaults; search spaces override them."""

    TASK: ClassVar[str] = "image"
    SETTINGS: ClassVar[Mapping[str, Knob]] = _IMAGE_SETTINGS

    strategy: str = "infonce"
    task: str = "image"
    # optimisation (Adam as in HCL/DCL)
    lr: float = 1e-3
    weight_decay: float = 1e-6
    temperature: float = 0.5
    batch_size: int = 128
    epochs: int = 20
    seed: int = 0
    # data
    dataset: str = "digits"
    data_root: str | None = None
    image_size: int | None = None
    limit: int | None = None  # keep only the first `limit` items of each split (smoke tests)
    # model
    encoder: str = "small_resnet"
    width: int = 32
    proj_hidden_dim: int = 512
    proj_dim: int = 128
    # evaluation on the validation split, every epoch in a sweep (the epoch is ASHA's time unit)
    probe_epochs: int = 100
    knn_k: int = 200
    eval_every: int = 1  # score every k epochs and at the last (`sweep confirm` runs to the end: the last only)
    evaluate_test: bool = False  # also score the test split at the last epoch: finalists only (`sweep confirm`)
    # execution
    device: str = "auto"
    precision: str = "auto"
    num_threads: int | None = None
    # strategy knobs, resolved against the strategy's preset defaults (read-only)
    knobs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AudioTextConfig(TaskConfig):
    """One trial of the audio-text retrieval task (Xie et al.): an audio CRNN trained against caption words."""

    TASK: ClassVar[str] = "audio_text"
    SETTINGS: ClassVar[Mapping[str, Knob]] = _AUDIO_TEXT_SETTINGS
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


@dataclass(frozen=True)
class AudioVisualConfig(TaskConfig):
    """One trial of the audio-visual correspondence task (Wang et al.): audio and frame encoders trained by one
    cross-modal InfoNCE, scored by the audio branch on audio classification."""

    TASK: ClassVar[str] = "audio_visual"
    SETTINGS: ClassVar[Mapping[str, Knob]] = _AUDIO_VISUAL_SETTINGS
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


@dataclass(frozen=True)
class TemporalConfig(TaskConfig):
    """One trial of the temporal object-similarity task (Aubret et al.): an image encoder trained on sequences of
    object views, scored by odd-one-out on unseen objects."""

    TASK: ClassVar[str] = "temporal"
    SETTINGS: ClassVar[Mapping[str, Knob]] = _TEMPORAL_SETTINGS
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


TASK_CONFIGS: Mapping[str, type] = MappingProxyType(
    {"image": TrialConfig, "audio_text": AudioTextConfig, "audio_visual": AudioVisualConfig, "temporal": TemporalConfig}
)


def parse_config(config: Mapping[str, Any]) -> Any:
    """The config of the task that ``config['task']`` names (image when absent), validated."""
    if not isinstance(config, Mapping):
        raise UserError(f"a trial config must be a mapping of settings (key: value), not {type(config).__name__}")
    task = config.get("task", "image")
    if not isinstance(task, str) or task not in TASK_CONFIGS:  # a list or a mapping is not hashable
        raise UserError(f"`task` is {task!r} but must be one of {', '.join(TASK_CONFIGS)}")
    return TASK_CONFIGS[task].from_dict(config)


# Knobs that act only under one label source; under another they would silently do nothing.
_LABEL_SOURCE_OF = {"label_accuracy": "noisy", "n_clusters": "pseudo"}


def _inactive(knobs: Mapping[str, Any]) -> set[str]:
    source = knobs.get("label_source")
    return {k for k, needed in _LABEL_SOURCE_OF.items() if k in knobs and source != needed}


def _check_conditional_knobs(strategy: Strategy, given: Mapping[str, Any], knobs: Mapping[str, Any]) -> None:
    for key in _inactive(knobs) & set(given):
        raise UserError(
            f"`{key}` applies only with label_source '{_LABEL_SOURCE_OF[key]}' (strategy "
            f"'{strategy.name}' uses '{knobs['label_source']}'); remove it or set label_source: "
            f"{_LABEL_SOURCE_OF[key]}"
        )
