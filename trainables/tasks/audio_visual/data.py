"""Audio-video clips for the audio-visual correspondence task (Wang et al.), as whole tensors in memory.

Every loader returns the same :class:`AudioVisualData`: three in-domain splits of clips, each a few RGB frames
(``uint8 (N, F, 3, H, W)``) paired with a fixed-length log-mel spectrogram (``float32 (N, T, n_mels)``) and a
label, plus an audio-only out-of-domain set (:class:`AudioOnlyData`) with classes of its own. Only the audio branch
is scored downstream, as in the paper; the frames exist for pre-training.

The splits have fixed roles so that a sweep can never rank on the test set:

- ``train``: what pre-training sees (Wang pre-trains on VGGSound train; ``pretrain`` is the same split) and what
  the in-domain probe trains on;
- ``val``: the split the sweep ranks on;
- ``test``: reported for finalists only.

Datasets:

- ``synthetic`` (default, embedded): moving shapes paired with sounds, generated from the seed (see
  :func:`~trainables.tasks.audio_visual.synthetic.synthesize_clip`); the out-of-domain set is synthetic "scenes"
  made of the same sound primitives.
- ``vggsound`` (:mod:`~trainables.tasks.audio_visual.vggsound`): a VGGSound-style local folder (layout in
  :func:`check_audio_visual_dataset`). Frames are read from folders of images only: this environment has no
  FFmpeg-backed video decoder (torchvision 0.26 dropped ``read_video``; neither PyAV nor torchcodec is installed),
  so an ``.mp4`` must be extracted to frames first.

This module holds what both sources share: the types, the entry points and the log-mel features. The sources
import it, and it imports them inside the entry points only, so the import graph stays acyclic.

Nothing is downloaded: a missing dataset raises :class:`~trainables.datasets.DatasetNotFoundError` with a
one-line fix.

- [0] Wang et al., 2022, Positive and Negative Sampling Strategies for Self-Supervised Learning on Audio-Video
  Data (github.com/shanwangshan/positive-negative-sampling-strategy)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from trainables.datasets import channel_stats

DATASETS: tuple[str, ...] = ("synthetic", "vggsound")
DEFAULT_SAMPLE_RATE = {"synthetic": 8000, "vggsound": 16000}  # VGGSound audio is 16 kHz, as Wang uses it
DEFAULT_CLIPS = (400, 100, 100)  # synthetic in-domain clips per split (train, val, test)
DEFAULT_OOD_CLIPS = (150, 50, 50)  # synthetic out-of-domain clips per split
DEFAULT_CLASSES = 10
CLIP_SECONDS = 1.0  # Wang's audio input is 1 s

# Features as Wang et al. (librosa defaults at 16 kHz): n_fft 512 = 32 ms, hop 160 = 10 ms, Hann window, Slaney mel
# scale and filter norm, 0 Hz .. Nyquist. As in their code the mel is a MAGNITUDE mel (power 1) passed through
# librosa's power_to_db (10 log10, floor 1e-10, top_db 100 per clip): half the usual dB scale, kept for fidelity.
# Their 128 bands are the pretext default there; 64 (their TAU setting) is ours, to keep CPU trials small.
WINDOW_S, HOP_S, TOP_DB, AMIN = 0.032, 0.010, 100.0, 1e-10

# ----------------------------------------------------------------------------------------------------- types


@dataclass(frozen=True, eq=False)
class AudioVisualSplit:
    """One in-domain split; row i of every field is clip i.

    Attributes:
        frames: RGB frames, evenly spaced over the clip. Shape: (N, F, 3, H, W), uint8.
        mels: log-mel spectrogram, T fixed. Shape: (N, T, n_mels), float32, not normalised.
        labels: class index. Shape: (N,), int64.
        clip_ids: a name per clip (the CSV's ``clip``, ``syn-<split>-<i>`` for the synthetic data).
    """

    frames: torch.Tensor
    mels: torch.Tensor
    labels: torch.Tensor
    clip_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        n = int(self.labels.shape[0])
        if self.frames.dtype != torch.uint8 or self.frames.ndim != 5 or self.frames.shape[0] != n:
            raise ValueError(f"frames must be uint8 (N, F, 3, H, W) with N={n}, got {tuple(self.frames.shape)}")
        _check_audio(self.mels, self.labels, self.clip_ids)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True, eq=False)
class AudioSplit:
    """One audio-only split: ``mels`` float32 (N, T, n_mels), ``labels`` int64 (N,), ``clip_ids``."""

    mels: torch.Tensor
    labels: torch.Tensor
    clip_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_audio(self.mels, self.labels, self.clip_ids)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _check_audio(mels: torch.Tensor, labels: torch.Tensor, clip_ids: Sequence[str]) -> None:
    n = int(labels.shape[0]) if labels.ndim == 1 else -1
    if labels.dtype != torch.int64 or n < 0 or len(clip_ids) != n:
        raise ValueError(f"labels must be int64 (N,) with one clip id each, got {labels.dtype} {tuple(labels.shape)}")
    if mels.dtype != torch.float32 or mels.ndim != 3 or mels.shape[0] != n:
        raise ValueError(f"mels must be float32 (N, T, n_mels) with N={n}, got {mels.dtype} {tuple(mels.shape)}")


def _normalise(mels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (mels - mean.to(mels.device)) / std.to(mels.device)


@dataclass(frozen=True, eq=False)
class AudioOnlyData:
    """The out-of-domain downstream set: audio-only splits with classes of their own and their own mel statistics
    (as Wang standardises TAU with TAU's statistics, not VGGSound's)."""

    name: str
    train: AudioSplit
    val: AudioSplit
    test: AudioSplit
    num_classes: int
    class_names: tuple[str, ...]
    mel_mean: torch.Tensor  # (n_mels,) per-band mean of the train split
    mel_std: torch.Tensor  # (n_mels,)

    def normalise_mels(self, mels: torch.Tensor) -> torch.Tensor:
        """Per-band standardisation with this set's train statistics."""
        return _normalise(mels, self.mel_mean, self.mel_std)


@dataclass(frozen=True, eq=False)
class AudioVisualData:
    """A dataset split by role, with the statistics the encoders normalise their inputs with.

    ``frame_mean`` / ``frame_std`` are per-channel in [0, 1] units (the ``mean`` / ``std`` arguments of
    ``trainables.tasks.audio_visual.models.FrameEncoder``); ``mel_mean`` / ``mel_std`` are per mel band,
    ``(n_mels,)``. Both come from the train split only. ``ood`` is None when a real dataset is loaded without
    ``ood_root``.
    """

    name: str
    train: AudioVisualSplit
    val: AudioVisualSplit
    test: AudioVisualSplit
    ood: AudioOnlyData | None
    num_classes: int
    class_names: tuple[str, ...]
    frame_mean: tuple[float, float, float]
    frame_std: tuple[float, float, float]
    mel_mean: torch.Tensor
    mel_std: torch.Tensor
    sample_rate: int
    n_mels: int

    @property
    def pretrain(self) -> AudioVisualSplit:
        """The clips pre-training sees: the train split, as Wang pre-trains on VGGSound train."""
        return self.train

    @property
    def ood_classes(self) -> int:
        return 0 if self.ood is None else self.ood.num_classes

    @property
    def frames_per_clip(self) -> int:
        return int(self.train.frames.shape[1])

    @property
    def frame_size(self) -> int:
        return int(self.train.frames.shape[-1])

    @property
    def n_time(self) -> int:
        return int(self.train.mels.shape[1])

    def normalise_mels(self, mels: torch.Tensor) -> torch.Tensor:
        """Per-band standardisation with the in-domain train statistics."""
        return _normalise(mels, self.mel_mean, self.mel_std)


# ----------------------------------------------------------------------------------------------- entry points


def load_audio_visual(
    name: str,
    data_root: str | None = None,
    seed: int = 0,
    limit: int | None = None,
    *,
    clips: tuple[int, int, int] | None = None,
    n_mels: int = 64,
    frames: int = 4,
    frame_size: int = 32,
    ood_root: str | None = None,
    n_classes: int = DEFAULT_CLASSES,
    ood_clips: tuple[int, int, int] | None = None,
    sample_rate: int | None = None,
) -> AudioVisualData:
    """Load dataset ``name`` with its features, deterministically in ``seed``.

    Args:
        name: one of :data:`DATASETS`. ``synthetic`` is embedded and ignores ``data_root``.
        data_root: the VGGSound-style folder.
        seed: generates the synthetic clips (real data is read as listed, so the seed does not change it).
        limit: keep at most this many clips per split (the first ones, out-of-domain splits too): smoke tests.
        clips: synthetic in-domain clips per split (train, val, test); default :data:`DEFAULT_CLIPS`.
        n_mels: mel bands.
        frames: frames per clip, evenly spaced over the clip.
        frame_size: frames are square, this many pixels a side (real frames are resized without a crop, as Wang).
        ood_root: a labelled audio folder for the out-of-domain score; without it the synthetic scenes are used
            for ``synthetic`` and ``ood`` is None for ``vggsound``.
        n_classes: synthetic in-domain classes.
        ood_clips: synthetic out-of-domain clips per split; default :data:`DEFAULT_OOD_CLIPS`.
        sample_rate: rate the audio is made at or resampled to (default 8 kHz synthetic, 16 kHz vggsound).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown audio-visual dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit}")
    if n_mels < 1 or frames < 1 or frame_size < 8:
        raise ValueError(f"n_mels and frames must be >= 1 and frame_size >= 8, got {n_mels}, {frames}, {frame_size}")
    rate = DEFAULT_SAMPLE_RATE[name] if sample_rate is None else int(sample_rate)
    if rate < (8000 if name == "synthetic" else 1000):  # only the synthetic sounds need 8 kHz
        raise ValueError(f"sample_rate {rate} is too low (the synthetic sounds reach 3.3 kHz: use >= 8000)")
    if ood_clips is not None and (name != "synthetic" or ood_root is not None):
        raise ValueError("ood_clips sizes the synthetic scenes only; use limit to take fewer clips of ood_root")
    # The sources import this module's types, so they are imported here and not at the top.
    from trainables.tasks.audio_visual.synthetic import _synthetic_ood, _synthetic_splits
    from trainables.tasks.audio_visual.vggsound import _folder_ood, _folder_splits, _require_root

    transform = log_mel_transform(rate, n_mels)
    if name == "synthetic":
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        sizes = _sizes("clips", clips or DEFAULT_CLIPS)
        splits, class_names = _synthetic_splits(seed, limit, sizes, n_classes, rate, transform, frames, frame_size)
    else:
        if clips is not None:
            raise ValueError("clips sizes the synthetic data only; use limit to take fewer vggsound clips")
        root = _require_root(data_root)
        splits, class_names = _folder_splits(root, limit, rate, transform, frames, frame_size)
    if ood_root is not None:
        ood: AudioOnlyData | None = _folder_ood(_require_root(ood_root, ood=True), limit, rate, transform)
    elif name == "synthetic":
        ood = _synthetic_ood(seed, limit, _sizes("ood_clips", ood_clips or DEFAULT_OOD_CLIPS), rate, transform)
    else:
        ood = None
    train = splits[0]
    frame_mean, frame_std = channel_stats(train.frames, dim=2)
    mel_mean, mel_std = _mel_stats(train.mels)
    return AudioVisualData(
        name, *splits, ood, len(class_names), class_names, frame_mean, frame_std, mel_mean, mel_std, rate, n_mels
    )


def check_audio_visual_dataset(name: str, data_root: str | None, ood_root: str | None = None) -> None:
    """Fail fast, before a sweep starts, when the dataset is not where the user said (nothing is decoded).

    VGGSound-style layout (what the VGGSound download becomes once the clips are cut and their frames extracted)::

        data_root/labels.csv              clip,label,split   (split: train / val / test; label: a class name)
        data_root/audio/<clip>.wav        any rate and channel count: mixed to mono, resampled, the centre 1 s
        data_root/frames/<clip>/*.png     or .jpg, in time order by file name, covering the wav's time span

    ``ood_root`` holds ``labels.csv`` and ``audio/<clip>.wav`` in the same form.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown audio-visual dataset {name!r}; expected one of {', '.join(DATASETS)}")
    from trainables.tasks.audio_visual.vggsound import (
        _LAYOUT,
        _OOD_LAYOUT,
        _audio_paths,
        _frame_dirs,
        _read_labels,
        _require_root,
    )

    if name == "vggsound":
        root = _require_root(data_root)
        rows = _read_labels(root, _LAYOUT)
        _audio_paths(root, rows)
        _frame_dirs(root, rows)
    if ood_root is not None:
        root = _require_root(ood_root, ood=True)
        _audio_paths(root, _read_labels(root, _OOD_LAYOUT))


def _sizes(what: str, sizes: Sequence[int]) -> tuple[int, int, int]:
    if len(sizes) != 3 or any(int(s) < 1 for s in sizes):
        raise ValueError(f"{what} must be three positive sizes (train, val, test), got {tuple(sizes)}")
    return int(sizes[0]), int(sizes[1]), int(sizes[2])


# ------------------------------------------------------------------------------------------------- features


def log_mel_transform(sample_rate: int, n_mels: int = 64) -> torch.nn.Module:
    """Wang's mel spectrogram at ``sample_rate`` (librosa's defaults): magnitude, Slaney scale and filter norm."""
    import torchaudio

    n_fft = 1 << max(int(round(WINDOW_S * sample_rate)) - 1, 1).bit_length()  # 512 at 16 kHz, 256 at 8 kHz
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate,
        n_fft=n_fft,
        hop_length=int(round(HOP_S * sample_rate)),
        f_min=0.0,
        f_max=sample_rate / 2,
        n_mels=n_mels,
        power=1.0,
        pad_mode="constant",  # librosa >= 0.10
        norm="slaney",
        mel_scale="slaney",
    )


def log_mels(waves: torch.Tensor, transform: torch.nn.Module, chunk: int = 128) -> torch.Tensor:
    """Waveforms ``(N, n)`` -> ``(N, n // hop, n_mels)`` float32 in Wang's "dB" (see :data:`TOP_DB`).

    The STFT's last frame (``1 + n // hop`` in all) is dropped so that 1 s gives Wang's 100 frames.
    """
    hop = int(transform.hop_length)
    n_frames = waves.shape[1] // hop
    out = []
    with torch.no_grad():
        for start in range(0, waves.shape[0], chunk):
            spec = transform(waves[start : start + chunk].float())[..., :n_frames]  # (b, n_mels, T)
            db = 10.0 * torch.log10(spec.clamp_min(AMIN))
            db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - TOP_DB)
            out.append(db.transpose(1, 2).contiguous())
    n_mels = int(transform.n_mels)
    return torch.cat(out) if out else torch.zeros((0, n_frames, n_mels), dtype=torch.float32)


def _mel_stats(mels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = mels.reshape(-1, mels.shape[-1]).double()
    return flat.mean(dim=0).float(), flat.std(dim=0).clamp_min(1e-3).float()
