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
  :func:`synthesize_clip`); the out-of-domain set is synthetic "scenes" made of the same sound primitives.
- ``vggsound``: a VGGSound-style local folder (layout in :func:`check_audio_visual_dataset`). Frames are read from
  folders of images only: this environment has no FFmpeg-backed video decoder (torchvision 0.26 dropped
  ``read_video``; neither PyAV nor torchcodec is installed), so an ``.mp4`` must be extracted to frames first.

Nothing is downloaded: a missing dataset raises :class:`~trainables.datasets.DatasetNotFoundError` with a
one-line fix.

- [0] Wang et al., 2022, Positive and Negative Sampling Strategies for Self-Supervised Learning on Audio-Video
  Data (github.com/shanwangshan/positive-negative-sampling-strategy)
"""

from __future__ import annotations

import colorsys
import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from trainables.datasets import IMAGE_SUFFIXES, ROLES, DatasetNotFoundError, channel_stats, read_wav, require_root
from trainables.errors import UserError

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

_FALLBACK = "or use the embedded `dataset: synthetic`"
_NO_DOWNLOAD = "nothing is downloaded at run time"
_LAYOUT = "labels.csv (clip,label,split), audio/<clip>.wav and frames/<clip>/*.png|jpg"
_OOD_LAYOUT = "labels.csv (clip,label,split) and audio/<clip>.wav"


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


# ------------------------------------------------------------------------------------------------- synthetic
#
# A class fixes a look and a sound; a clip is one random realisation of both, tied together by instance cues:
#
# - video: the class sets the shape, the hue family and the direction of motion; the clip draws position, speed,
#   size, hue/saturation jitter, background tint and pixel noise, so the class means overlap but stay apart;
# - audio: the class sets the pitch (log-spaced over 3 octaves), timbre (tone / harmonic / noise band), envelope
#   (percussive / sustained) and glide (down / flat / up); the clip draws a pitch shift of +-0.2 octave (a third
#   of an octave separates neighbouring classes), event times, levels, a noise floor and sometimes a distractor;
# - instance cues shared by both: the object lights up in the frames whose time window holds a sound event (its
#   brightness follows the audio's onsets), and its size falls as the clip's pitch shift rises (big = low). So
#   audio-video correspondence is learnable beyond the class, as real clips' synchrony is.

SHAPES = ("disc", "square", "diamond", "ring")
TIMBRES = ("tone", "harmonic", "noise")
ENVELOPES = ("percussive", "sustained")
GLIDES = (-1, 0, 1)  # octaves/2 over an event: down, flat, up
_F_LOW, _F_SPAN_OCT = 250.0, 3.0  # class pitches: 250 Hz .. 2 kHz, log-spaced
_PITCH_JITTER_OCT = 0.2
_GOLDEN = (math.sqrt(5) - 1) / 2


class ClassStyle(NamedTuple):
    """What a synthetic class fixes in each modality."""

    shape: str
    hue: float  # in [0, 1)
    angle: float  # direction of motion, radians
    f0: float  # Hz
    timbre: str
    envelope: str
    glide: int


def class_style(c: int, n_classes: int) -> ClassStyle:
    """The look and sound of class ``c``: properties cycle with different periods, so neighbours differ in many."""
    return ClassStyle(
        shape=SHAPES[c % len(SHAPES)],
        hue=c / n_classes,
        angle=2 * math.pi * ((c * _GOLDEN) % 1.0),
        f0=_F_LOW * 2 ** (_F_SPAN_OCT * c / max(n_classes - 1, 1)),
        timbre=TIMBRES[c % len(TIMBRES)],
        envelope=ENVELOPES[(c // 3) % 2],
        glide=GLIDES[(c // 2) % 3],
    )


def _class_name(style: ClassStyle, c: int) -> str:
    return f"{c:02d}-{style.shape}-{style.timbre}"


def _event(
    timbre: str, f0: float, dur: float, glide: float, envelope: str, rate: int, rng: np.random.Generator
) -> np.ndarray:
    """One sound event, peak 1: the primitive both the in-domain classes and the out-of-domain scenes are made of."""
    n = max(int(dur * rate), 8)
    t = np.arange(n) / rate
    nyquist = rate / 2
    freq = f0 * 2.0 ** (0.5 * glide * t / dur)
    phase = 2 * np.pi * np.cumsum(freq) / rate
    top = float(freq.max())
    if timbre == "tone":
        wave = np.sin(phase) + (0.2 * np.sin(2 * phase) if 2 * top < 0.9 * nyquist else 0.0)
    elif timbre == "harmonic":
        wave = sum(np.sin(k * phase) / k for k in range(1, 7) if k * top < 0.9 * nyquist)
    else:  # a noise band around f0 (+-0.6 octave)
        m = 1 << (n - 1).bit_length()  # a power of two: odd lengths make the FFT tens of times slower
        spec = np.fft.rfft(rng.standard_normal(m))
        f = np.fft.rfftfreq(m, 1 / rate)
        spec[(f < f0 / 1.5) | (f > f0 * 1.5)] = 0
        wave = np.fft.irfft(spec, m)[:n]
    if envelope == "percussive":
        env = np.exp(-t / (dur / 4)) * np.minimum(t / 0.003, 1.0)
    else:
        fade = min(int(0.01 * rate), n // 2)
        env = np.ones(n)
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, fade))
        env[:fade], env[n - fade :] = ramp, ramp[::-1]
    wave = np.asarray(wave) * env
    return wave / max(float(np.abs(wave).max()), 1e-9)


def _add(wave: np.ndarray, event: np.ndarray, start: int) -> None:
    end = min(start + len(event), len(wave))
    wave[start:end] += event[: end - start]


def _coloured_noise(n: int, tilt: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise with power ~ f^-tilt (0 white, 1 pink, 2 brown)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    spec[1:] *= f[1:] ** (-tilt / 2)
    spec[0] = 0
    x = np.fft.irfft(spec, n)
    return x / max(float(np.sqrt(np.mean(x**2))), 1e-12)


def _render(style: ClassStyle, u: float, brightness: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Frames ``(F, 3, size, size)`` uint8 of one clip: ``u`` in [0, 1] is the pitch-shift quantile (size cue)."""
    n_frames = len(brightness)
    radius = size * (0.12 + 0.14 * (1.0 - u))
    angle = style.angle + rng.uniform(-0.4, 0.4)
    speed = size * rng.uniform(0.04, 0.1) * 4 / max(n_frames, 1)  # the same path length whatever F
    centre0 = rng.uniform(0.25, 0.75, size=2) * size
    hue = (style.hue + rng.uniform(-0.05, 0.05)) % 1.0
    colour = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.8, 1.0)))
    background = rng.uniform(0.05, 0.35) + rng.uniform(-0.05, 0.05, size=3)
    noise = rng.uniform(0.03, 0.1)

    step = (np.arange(n_frames) - (n_frames - 1) / 2) * speed
    cx = centre0[0] + step * math.cos(angle)  # (F,)
    cy = centre0[1] + step * math.sin(angle)
    grid = np.arange(size) + 0.5
    dx = grid[None, None, :] - cx[:, None, None]  # (F, 1, W)
    dy = grid[None, :, None] - cy[:, None, None]  # (F, H, 1)
    if style.shape == "disc":
        edge = radius - np.hypot(dx, dy)
    elif style.shape == "square":
        edge = 0.85 * radius - np.maximum(np.abs(dx), np.abs(dy))
    elif style.shape == "diamond":
        edge = 1.2 * radius - (np.abs(dx) + np.abs(dy))
    else:  # ring
        d = np.hypot(dx, dy)
        edge = np.minimum(radius - d, d - 0.55 * radius)
    mask = np.clip(edge + 0.5, 0.0, 1.0)[:, None]  # (F, 1, H, W), anti-aliased over one pixel
    obj = colour[None, :, None, None] * brightness[:, None, None, None]
    img = background[None, :, None, None] * (1 - mask) + obj * mask
    img = img + noise * rng.standard_normal((n_frames, 3, size, size))
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def synthesize_clip(
    c: int, n_classes: int, rate: int, n_frames: int, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One clip of class ``c``: frames ``(F, 3, size, size)`` uint8 and ``CLIP_SECONDS`` of audio at ``rate``."""
    style = class_style(c, n_classes)
    n = int(round(CLIP_SECONDS * rate))
    u = float(rng.uniform())
    f0 = style.f0 * 2 ** ((u - 0.5) * 2 * _PITCH_JITTER_OCT)
    dur_lo, dur_hi = (0.06, 0.12) if style.envelope == "percussive" else (0.15, 0.3)
    k = int(rng.integers(1, 4))
    wave = rng.uniform(0.005, 0.03) * rng.standard_normal(n)
    spans = []
    for _ in range(k):
        dur = float(rng.uniform(dur_lo, dur_hi))
        start = float(rng.uniform(0.0, CLIP_SECONDS - dur))
        _add(
            wave,
            rng.uniform(0.5, 1.0) * _event(style.timbre, f0, dur, style.glide, style.envelope, rate, rng),
            int(start * rate),
        )
        spans.append((start, start + dur))
    if rng.uniform() < 0.3:  # a quiet off-class sound that the video does not show
        f = float(np.exp(rng.uniform(math.log(_F_LOW), math.log(_F_LOW * 2**_F_SPAN_OCT))))
        timbre, env = TIMBRES[int(rng.integers(3))], ENVELOPES[int(rng.integers(2))]
        _add(wave, rng.uniform(0.15, 0.3) * _event(timbre, f, 0.15, 0, env, rate, rng), int(rng.uniform(0, 0.8) * rate))
    # brightness of frame f follows how much of its time window [f, f+1) / F holds an event
    window = CLIP_SECONDS / n_frames
    edges = np.arange(n_frames + 1) * window
    span = np.array(spans)  # (k, 2): overlap of every event with every frame window
    lit = np.clip(np.minimum(span[:, 1:], edges[None, 1:]) - np.maximum(span[:, :1], edges[None, :-1]), 0, None)
    lit = lit.sum(axis=0)
    brightness = 0.3 + 0.7 * np.clip(2.0 * lit / window, 0.0, 1.0)
    return _render(style, u, brightness, size, rng), wave.astype(np.float32)


def _balanced_label(seed: int, tag: int, s: int, i: int, n_classes: int) -> int:
    """Each block of ``n_classes`` consecutive clips holds every class once: splits (and prefixes) are balanced."""
    block, pos = divmod(i, n_classes)
    return int(np.random.default_rng([seed, tag, s, block]).permutation(n_classes)[pos])


def _synthetic_splits(
    seed: int,
    limit: int | None,
    sizes: tuple[int, int, int],
    n_classes: int,
    rate: int,
    transform: torch.nn.Module,
    n_frames: int,
    size: int,
) -> tuple[list[AudioVisualSplit], tuple[str, ...]]:
    # Clip i of split s depends only on (seed, s, i): `limit` takes a prefix, `clips` grows a split at its end.
    splits = []
    for s, (role, total) in enumerate(zip(ROLES, sizes, strict=True)):
        n = min(total, limit) if limit is not None else total
        frames, waves, labels = [], [], []
        for i in range(n):
            c = _balanced_label(seed, 1, s, i, n_classes)
            f, w = synthesize_clip(c, n_classes, rate, n_frames, size, np.random.default_rng([seed, 2, s, i]))
            frames.append(f)
            waves.append(w)
            labels.append(c)
        splits.append(
            AudioVisualSplit(
                frames=torch.from_numpy(np.stack(frames)),
                mels=log_mels(torch.from_numpy(np.stack(waves)), transform),
                labels=torch.tensor(labels, dtype=torch.int64),
                clip_ids=tuple(f"syn-{role}-{i:05d}" for i in range(n)),
            )
        )
    names = tuple(_class_name(class_style(c, n_classes), c) for c in range(n_classes))
    return splits, names


# Out-of-domain "scenes": textures of many events drawn from the same primitives in other proportions, over a
# coloured background, as acoustic scenes (TAU) are mixtures of sources rather than one source.


class SceneStyle(NamedTuple):
    name: str
    events_per_s: tuple[float, float]
    timbre_p: tuple[float, float, float]  # over TIMBRES
    pitch_hz: tuple[float, float]
    dur_s: tuple[float, float]
    percussive_p: float
    glide_p: tuple[float, float, float]  # over GLIDES
    background_tilt: float  # 0 white, 1 pink, 2 brown
    background_level: tuple[float, float]


SCENES: tuple[SceneStyle, ...] = (
    SceneStyle("street", (3, 6), (0.1, 0.3, 0.6), (120, 500), (0.1, 0.3), 0.3, (0.3, 0.4, 0.3), 2.0, (0.05, 0.15)),
    SceneStyle("park", (2, 5), (0.7, 0.2, 0.1), (1500, 3200), (0.05, 0.12), 0.2, (0.1, 0.3, 0.6), 0.0, (0.01, 0.03)),
    SceneStyle("cafe", (5, 9), (0.3, 0.5, 0.2), (300, 1200), (0.05, 0.15), 0.7, (0.3, 0.4, 0.3), 1.0, (0.03, 0.08)),
    SceneStyle("rain", (12, 20), (0.0, 0.0, 1.0), (1000, 3200), (0.02, 0.05), 1.0, (0.0, 1.0, 0.0), 0.0, (0.04, 0.1)),
    SceneStyle("station", (1, 3), (0.2, 0.7, 0.1), (100, 400), (0.3, 0.6), 0.0, (0.4, 0.4, 0.2), 2.0, (0.03, 0.08)),
)


def synthesize_scene(scene: SceneStyle, rate: int, rng: np.random.Generator) -> np.ndarray:
    """``CLIP_SECONDS`` of one scene at ``rate``: a coloured background plus a Poisson-ish stream of events."""
    n = int(round(CLIP_SECONDS * rate))
    wave = rng.uniform(*scene.background_level) * _coloured_noise(n, scene.background_tilt, rng)
    k = max(1, int(round(rng.uniform(*scene.events_per_s) * CLIP_SECONDS)))
    lo, hi = math.log(scene.pitch_hz[0]), math.log(scene.pitch_hz[1])
    for _ in range(k):
        timbre = TIMBRES[int(rng.choice(3, p=scene.timbre_p))]
        glide = GLIDES[int(rng.choice(3, p=scene.glide_p))]
        envelope = "percussive" if rng.uniform() < scene.percussive_p else "sustained"
        dur = float(rng.uniform(*scene.dur_s))
        f0 = float(np.exp(rng.uniform(lo, hi)))
        f0 = min(f0, 0.45 * rate / 2 ** max(glide * 0.5, 0))  # an up-glide must stay below Nyquist
        event = rng.uniform(0.2, 1.0) * _event(timbre, f0, dur, glide, envelope, rate, rng)
        _add(wave, event, int(rng.uniform(0.0, CLIP_SECONDS - dur) * rate))
    return wave.astype(np.float32)


def _synthetic_ood(
    seed: int, limit: int | None, sizes: tuple[int, int, int], rate: int, transform: torch.nn.Module
) -> AudioOnlyData:
    splits = []
    for s, (role, total) in enumerate(zip(ROLES, sizes, strict=True)):
        n = min(total, limit) if limit is not None else total
        labels = [_balanced_label(seed, 3, s, i, len(SCENES)) for i in range(n)]
        waves = [
            synthesize_scene(SCENES[c], rate, np.random.default_rng([seed, 4, s, i])) for i, c in enumerate(labels)
        ]
        splits.append(
            AudioSplit(
                mels=log_mels(torch.from_numpy(np.stack(waves)), transform),
                labels=torch.tensor(labels, dtype=torch.int64),
                clip_ids=tuple(f"syn-scene-{role}-{i:05d}" for i in range(n)),
            )
        )
    mean, std = _mel_stats(splits[0].mels)
    return AudioOnlyData("synthetic-scenes", *splits, len(SCENES), tuple(sc.name for sc in SCENES), mean, std)


# ---------------------------------------------------------------------------------------------------- folders


class _Row(NamedTuple):
    clip: str
    label: str
    split: str


def _require_root(data_root: str | None, ood: bool = False) -> str:
    what, layout = ("ood_root", _OOD_LAYOUT) if ood else ("vggsound", _LAYOUT)
    return require_root(data_root, what, layout, _NO_DOWNLOAD, _FALLBACK)


def _read_labels(root: str, layout: str) -> list[_Row]:
    path = os.path.join(root, "labels.csv")
    if not os.path.isfile(path):
        raise DatasetNotFoundError(f"labels not found: {path} is missing (the folder must hold {layout})")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [c.strip() for c in reader.fieldnames or []]
            if not {"clip", "label", "split"} <= set(fields):
                raise UserError(f"{path} must have the columns clip, label, split; got {fields}; add a header line "
                                "`clip,label,split`")
            rows = []
            for n, raw in enumerate(reader, start=2):
                row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
                if row["split"] not in ROLES:
                    raise UserError(
                        f"{path} line {n}: split {row['split']!r} is not one of {', '.join(ROLES)}; fix that row"
                    )
                if not row["clip"] or not row["label"]:
                    raise UserError(f"{path} line {n}: empty clip or label; fill it in or drop that row")
                rows.append(_Row(row["clip"], row["label"], row["split"]))
    except (UnicodeDecodeError, csv.Error) as err:  # a binary file, or a broken quote
        raise UserError(f"{path} is not a readable UTF-8 CSV ({err}); write it as text: `clip,label,split` "
                        "then one row per clip") from None
    for role in ROLES:
        if not any(r.split == role for r in rows):
            raise UserError(f"{path} lists no {role} clip; every split (train, val, test) needs at least one row")
    return rows


def _audio_paths(root: str, rows: Sequence[_Row]) -> dict[str, str]:
    folder = os.path.join(root, "audio")
    if not os.path.isdir(folder):
        raise DatasetNotFoundError(f"audio not found: {folder}/ is missing (one <clip>.wav per labels.csv row)")
    on_disk = set(os.listdir(folder))
    missing = [r.clip for r in rows if f"{r.clip}.wav" not in on_disk]
    if missing:
        raise DatasetNotFoundError(
            f"audio incomplete: {len(missing)} clips of labels.csv have no wav in {folder}/ "
            f"(first: {os.path.join(folder, missing[0] + '.wav')}); add them or drop their rows"
        )
    return {r.clip: os.path.join(folder, f"{r.clip}.wav") for r in rows}


def _frame_dirs(root: str, rows: Sequence[_Row]) -> dict[str, str]:
    frames_dir = os.path.join(root, "frames")
    video_dir = os.path.join(root, "video")
    have = set(os.listdir(frames_dir)) if os.path.isdir(frames_dir) else set()
    out = {}
    for r in rows:
        folder = os.path.join(frames_dir, r.clip)
        if r.clip in have and os.path.isdir(folder):
            out[r.clip] = folder
            continue
        video = os.path.join(video_dir, f"{r.clip}.mp4")
        if os.path.isfile(video):
            raise DatasetNotFoundError(
                f"cannot decode {video}: no FFmpeg-backed video decoder is available here, so only frame folders "
                f"are read; extract its frames first, e.g. `ffmpeg -i {video} -vf fps=16 {folder}/%04d.jpg`"
            )
        raise DatasetNotFoundError(
            f"frames not found: {folder}/ is missing (a folder of .png/.jpg frames per labels.csv row)"
        )
    return out




def _centre_window(n: int, width: int) -> tuple[int, int]:
    """[start, end) of the centred ``width`` samples of ``n`` (all of them when shorter)."""
    start = max((n - width) // 2, 0)
    return start, min(start + width, n)


def _read_clip_audio(path: str, rate: int) -> tuple[torch.Tensor, float, float]:
    """The centred ``CLIP_SECONDS`` (zero-padded at the end if shorter) and the window's span as fractions of the
    file, so that the frames can be taken from the same time span."""
    wave = read_wav(path, rate)
    width = int(round(CLIP_SECONDS * rate))
    start, end = _centre_window(len(wave), width)
    out = torch.zeros(width, dtype=torch.float32)
    out[: end - start] = wave[start:end]
    n = max(len(wave), 1)
    return out, start / n, max(end, start + 1) / n


def _read_frames(folder: str, lo: float, hi: float, n_frames: int, size: int) -> torch.Tensor:
    """``n_frames`` frames evenly spaced over the fraction [lo, hi) of the folder's frames, resized (no crop)."""
    import torch.nn.functional as F
    from torchvision.io import ImageReadMode, read_image

    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise DatasetNotFoundError(f"frames not found: {folder}/ holds no .png/.jpg file")
    m = len(files)
    first, last = min(int(lo * m), m - 1), max(min(int(math.ceil(hi * m)) - 1, m - 1), 0)
    last = max(last, first)
    picks = np.rint(np.linspace(first, last, n_frames) if n_frames > 1 else [(first + last) / 2]).astype(int)
    images = [_read_image(os.path.join(folder, files[i]), read_image, ImageReadMode.RGB) for i in picks]
    out = []
    for img in images:
        if img.shape[-2:] != (size, size):
            img = F.interpolate(img[None].float(), size=(size, size), mode="bilinear", antialias=True)[0]
            img = img.round().clamp_(0, 255).to(torch.uint8)
        out.append(img)
    return torch.stack(out)


def _read_image(path: str, read_image: Any, mode: Any) -> torch.Tensor:
    """One frame as uint8 RGB; a file that is not a readable image is the user's to replace, in one line."""
    try:
        return read_image(path, mode=mode)
    except RuntimeError as err:
        raise UserError(f"cannot decode {path}: {str(err).splitlines()[0] if str(err) else 'not an image'}; "
                        "replace it with a readable .png/.jpg frame") from err


def _label_index(rows: Sequence[_Row]) -> tuple[dict[str, int], tuple[str, ...]]:
    names = tuple(sorted({r.label for r in rows}))
    return {name: i for i, name in enumerate(names)}, names


def _by_role(rows: Sequence[_Row], limit: int | None) -> list[list[_Row]]:
    return [[r for r in rows if r.split == role][:limit] for role in ROLES]


def _folder_splits(
    root: str, limit: int | None, rate: int, transform: torch.nn.Module, n_frames: int, size: int
) -> tuple[list[AudioVisualSplit], tuple[str, ...]]:
    rows = _read_labels(root, _LAYOUT)
    index, names = _label_index(rows)  # from every split, so a class seen only in test still has an index
    kept = [r for part in _by_role(rows, limit) for r in part]
    wavs, dirs = _audio_paths(root, kept), _frame_dirs(root, kept)
    splits = []
    for part in _by_role(rows, limit):
        waves, frames = [], []
        for r in part:
            wave, lo, hi = _read_clip_audio(wavs[r.clip], rate)
            waves.append(wave)
            frames.append(_read_frames(dirs[r.clip], lo, hi, n_frames, size))
        splits.append(
            AudioVisualSplit(
                frames=torch.stack(frames),
                mels=log_mels(torch.stack(waves), transform),
                labels=torch.tensor([index[r.label] for r in part], dtype=torch.int64),
                clip_ids=tuple(r.clip for r in part),
            )
        )
    return splits, names


def _folder_ood(root: str, limit: int | None, rate: int, transform: torch.nn.Module) -> AudioOnlyData:
    rows = _read_labels(root, _OOD_LAYOUT)
    index, names = _label_index(rows)
    wavs = _audio_paths(root, [r for part in _by_role(rows, limit) for r in part])
    splits = []
    for part in _by_role(rows, limit):
        waves = torch.stack([_read_clip_audio(wavs[r.clip], rate)[0] for r in part])
        splits.append(
            AudioSplit(
                mels=log_mels(waves, transform),
                labels=torch.tensor([index[r.label] for r in part], dtype=torch.int64),
                clip_ids=tuple(r.clip for r in part),
            )
        )
    mean, std = _mel_stats(splits[0].mels)
    return AudioOnlyData(os.path.basename(os.path.normpath(root)), *splits, len(names), names, mean, std)
