"""The embedded ``synthetic`` audio-visual set: moving shapes paired with sounds for the in-domain splits and
acoustic "scenes" for the out-of-domain score, generated from the seed so that the task runs with no file.

Kept apart from :mod:`~trainables.tasks.audio_visual.data` because the renderer and the sound synthesis are the
bulk of the data code yet concern only this source.
"""

from __future__ import annotations

import colorsys
import math
from typing import NamedTuple

import numpy as np
import torch

from trainables.datasets import ROLES
from trainables.tasks.audio_visual.data import (
    CLIP_SECONDS,
    AudioOnlyData,
    AudioSplit,
    AudioVisualSplit,
    _mel_stats,
    log_mels,
)

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
