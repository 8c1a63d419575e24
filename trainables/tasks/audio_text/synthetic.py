"""The embedded ``synthetic`` audio-caption set: tones, chirps, noise bursts and clicks with templated captions and a
frozen word table, all generated from the seed, so that the task runs (and is tested) with no file to download.

Kept apart from :mod:`~trainables.tasks.audio_text.data` because the caption grammar and the signal code are the
bulk of the data code yet concern only this source.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from trainables.tasks.audio_text.data import (
    CAPTIONS_PER_CLIP,
    PAD,
    UNK,
    AudioTextData,
    AudioTextSplit,
    _encode,
    clean_caption,
    log_mel_transform,
    log_mels,
)

# A caption is built from concepts; every word belongs to exactly one concept. The table mimics Word2Vec: a word is
# its concept's unit vector plus deterministic noise, so synonyms ("beep", "tone", "whistle") have cosine ~0.8 and
# words of different concepts ~0 (concept vectors are orthonormal when word_dim allows, random otherwise).

_CONCEPTS: dict[str, tuple[str, ...]] = {
    # content: what the audio encoder can learn to see
    "tone": ("beep", "tone", "whistle"),
    "chirp": ("chirp", "sweep", "glide"),
    "rise": ("rising", "up", "upward", "ascending"),
    "fall": ("falling", "down", "downward", "descending"),
    "noise": ("hiss", "noise", "static", "whoosh", "burst"),
    "click": ("click", "tick", "tap", "knock"),
    "low": ("low", "deep", "bass"),
    "mid": ("medium", "mid", "middle"),
    "high": ("high", "shrill", "sharp"),
    "one": ("once", "one", "single"),
    "two": ("twice", "two"),
    "three": ("thrice", "three"),
    "repeat": ("times", "time", "repeated"),
    "then": ("then", "followed", "after", "next"),
    # function words: their own concepts, present in captions of every clip
    "article": ("a", "an"),
    "the": ("the",),
    "of": ("of",),
    "by": ("by",),
    "and": ("and",),
    "that": ("that",),
    "there": ("there",),
    "is": ("is",),
    "we": ("we",),
    "you": ("you",),
    "can": ("can",),
    "hear": ("hear",),
    "sound": ("sound",),
    "going": ("going",),
    "pitched": ("pitched",),
}
_SYNONYM_NOISE = 0.5  # |noise| / |concept|: cosine ~0.8 between synonyms
_TABLE_SEED = 20240611  # a pre-trained table does not change with the trial's seed, so neither does this one

KINDS = ("tone", "chirp_up", "chirp_down", "noise", "click")
PITCHES = ("low", "mid", "high")
_BANDS_HZ = {"low": (150.0, 300.0), "mid": (500.0, 1000.0), "high": (1500.0, 2500.0)}
_CHIRP_SPAN = 1.5  # a chirp sweeps from f / 1.5 to f * 1.5 (high band: up to 3.75 kHz, below 8 kHz's Nyquist)

_KIND_PHRASES: dict[str, tuple[tuple[str, ...], ...]] = {
    "tone": (("beep",), ("tone",), ("whistle",)),
    "chirp_up": (
        ("rising", "chirp"),
        ("chirp", "going", "up"),
        ("upward", "sweep"),
        ("sweep", "up"),
        ("ascending", "glide"),
    ),
    "chirp_down": (
        ("falling", "chirp"),
        ("chirp", "going", "down"),
        ("downward", "sweep"),
        ("sweep", "down"),
        ("descending", "glide"),
    ),
    "noise": (("hiss",), ("burst", "of", "noise"), ("noise", "burst"), ("static",), ("whoosh",)),
    "click": (("click",), ("tick",), ("tap",), ("knock",)),
}
_PITCH_WORDS = {
    "low": (("low",), ("deep",), ("bass",)),
    "mid": (("medium", "pitched"), ("mid",), ("middle",)),
    "high": (("high",), ("shrill",), ("sharp",), ("high", "pitched")),
}
_COUNT_PHRASES: dict[int, tuple[tuple[str, ...], ...]] = {
    1: ((), (), ("once",), ("one", "time")),
    2: (("twice",), ("two", "times"), ("repeated", "twice")),
    3: (("three", "times"), ("thrice",), ("repeated", "three", "times")),
}
_OPENINGS = ((), ("there", "is"), ("we", "hear"), ("you", "can", "hear"), ("the", "sound", "of"))
_CONNECTIVES = (("then",), ("followed", "by"), ("and", "then"), ("and", "after", "that"), ("next",))

_SEGMENTS_P = (0.4, 0.4, 0.2)  # 1, 2 or 3 events (kind, pitch) per clip
_COUNT_P = (0.55, 0.3, 0.15)  # each repeated 1, 2 or 3 times
_MAX_EVENTS = 4  # keeps clips near 1-2 s
_CLIPS_PER_CLASS = 3  # clips share descriptions: the class pool has a third as many entries as there are clips

Description = tuple[tuple[str, str, int], ...]  # ((kind, pitch, count), ...) in time order


def synthetic_vocab() -> tuple[str, ...]:
    """The fixed vocabulary: PAD, UNK, then every word of the caption grammar (sorted)."""
    return (PAD, UNK, *sorted({w for words in _CONCEPTS.values() for w in words}))


def synthetic_word_table(word_dim: int = 64) -> torch.Tensor:
    """The frozen table of :func:`synthetic_vocab`, standing in for Word2Vec (which we cannot download).

    Each word is its concept's vector plus small noise, normalised: synonyms are close, unrelated words nearly
    orthogonal, which is what Word2Vec gives for this vocabulary and what makes caption-caption (S_tt) selections
    meaningful. UNK is a concept of its own; PAD is zero.
    """
    rng = np.random.default_rng(_TABLE_SEED)
    n_concepts = len(_CONCEPTS) + 1  # + UNK
    basis = rng.standard_normal((word_dim, max(n_concepts, 1)))
    if n_concepts <= word_dim:
        basis, _ = np.linalg.qr(basis)  # orthonormal columns
    concepts = (basis / np.linalg.norm(basis, axis=0, keepdims=True)).T  # (n_concepts, word_dim)
    word_concept = {w: c for c, words in enumerate(_CONCEPTS.values()) for w in words}
    vocab = synthetic_vocab()
    table = np.zeros((len(vocab), word_dim))
    for i, word in enumerate(vocab):
        if word == PAD:
            continue
        concept = concepts[-1] if word == UNK else concepts[word_concept[word]]
        noise = rng.standard_normal(word_dim) / math.sqrt(word_dim)
        vec = concept + _SYNONYM_NOISE * noise
        table[i] = vec / np.linalg.norm(vec)
    return torch.from_numpy(table.astype(np.float32))


def _description_pool(seed: int, size: int) -> list[Description]:
    """``size`` distinct descriptions; no event follows itself (it would read as a repetition)."""
    rng = np.random.default_rng([seed, 1])
    pool: list[Description] = []
    seen: set[Description] = set()
    while len(pool) < size:
        n_seg = int(rng.choice(3, p=_SEGMENTS_P)) + 1
        desc = tuple(
            (KINDS[int(rng.integers(len(KINDS)))], PITCHES[int(rng.integers(3))], int(rng.choice(3, p=_COUNT_P)) + 1)
            for _ in range(n_seg)
        )
        if sum(c for _, _, c in desc) > _MAX_EVENTS or desc in seen:
            continue
        if any(desc[i][:2] == desc[i + 1][:2] for i in range(n_seg - 1)):
            continue
        pool.append(desc)
        seen.add(desc)
    return pool


def _caption(desc: Description, rng: np.random.Generator) -> str:
    """One templated caption of ``desc``, synonyms and phrasing drawn from ``rng``."""

    def pick(options: Sequence[tuple[str, ...]]) -> list[str]:
        return list(options[int(rng.integers(len(options)))])

    words = pick(_OPENINGS)
    for i, (kind, pitch, count) in enumerate(desc):
        if i:
            words[-1] += ","
            words += pick(_CONNECTIVES)
        phrase = pick(_PITCH_WORDS[pitch]) + pick(_KIND_PHRASES[kind])
        words += ["an" if phrase[0][0] in "aeiou" else "a", *phrase, *pick(_COUNT_PHRASES[count])]
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def _event(kind: str, freq: float, dur: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """One event's waveform, peak ~1, with short fades so that onsets do not click."""
    n = max(int(dur * rate), 1)
    t = np.arange(n) / rate
    if kind == "tone":
        wave = np.sin(2 * np.pi * freq * t)
        if 2 * freq < rate / 2:
            wave += 0.3 * np.sin(2 * np.pi * 2 * freq * t)
    elif kind in ("chirp_up", "chirp_down"):
        ratio = _CHIRP_SPAN**2 if kind == "chirp_up" else _CHIRP_SPAN**-2
        f0 = freq / _CHIRP_SPAN if kind == "chirp_up" else freq * _CHIRP_SPAN
        k = math.log(ratio) / dur  # exponential sweep f(t) = f0 * exp(k t)
        wave = np.sin(2 * np.pi * f0 * np.expm1(k * t) / k)
    elif kind == "noise":
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n, 1 / rate)
        spec[(f < freq / 1.6) | (f > freq * 1.6)] = 0  # band-limited around the pitch
        wave = np.fft.irfft(spec, n)
        wave /= max(np.abs(wave).max(), 1e-9)
    else:  # click: a damped resonance at the pitch
        wave = np.sin(2 * np.pi * freq * t) * np.exp(-t / 0.008)
        return wave
    fade = min(int(0.008 * rate), n // 2)
    if fade:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, fade))
        wave[:fade] *= ramp
        wave[-fade:] *= ramp[::-1]
    return wave / max(np.abs(wave).max(), 1e-9)


def _synth_clip(desc: Description, rate: int, rng: np.random.Generator) -> np.ndarray:
    """One realisation of ``desc``: pitch within its band, durations, gaps and levels drawn from ``rng``."""
    parts = [np.zeros(int(rng.uniform(0.05, 0.25) * rate))]
    for s, (kind, pitch, count) in enumerate(desc):
        if s:
            parts.append(np.zeros(int(rng.uniform(0.12, 0.3) * rate)))
        lo, hi = _BANDS_HZ[pitch]
        freq = float(np.exp(rng.uniform(math.log(lo), math.log(hi))))
        dur = 0.04 if kind == "click" else float(rng.uniform(0.12, 0.25))
        level = float(rng.uniform(0.3, 0.9))
        for r in range(count):
            if r:
                parts.append(np.zeros(int(rng.uniform(0.05, 0.12) * rate)))
            parts.append(level * _event(kind, freq, dur, rate, rng))
    parts.append(np.zeros(int(rng.uniform(0.05, 0.25) * rate)))
    wave = np.concatenate(parts)
    return wave + rng.uniform(0.002, 0.01) * rng.standard_normal(len(wave))  # a noise floor, as any recording


def _load_synthetic(
    seed: int, limit: int | None, clips: tuple[int, int, int], rate: int, n_mels: int, word_dim: int
) -> AudioTextData:
    if len(clips) != 3 or any(int(c) < 1 for c in clips):
        raise ValueError(f"clips must be three positive sizes (train, val, test), got {clips}")
    if rate < 8000:
        raise ValueError(f"the synthetic data needs sample_rate >= 8000 (its highest chirp is 3.75 kHz), got {rate}")
    # Clip i of a split and the pool depend only on (seed, split, i) and `clips`: `limit` takes a prefix.
    pool = _description_pool(seed, max(1, math.ceil(sum(clips) / _CLIPS_PER_CLASS)))
    vocab = synthetic_vocab()
    index = {w: i for i, w in enumerate(vocab)}
    transform = log_mel_transform(rate, n_mels)
    splits = []
    for s, (role, size) in enumerate(zip(("train", "val", "test"), clips, strict=True)):
        n = min(int(size), limit) if limit is not None else int(size)
        waves, classes, texts = [], [], []
        for i in range(n):
            rng = np.random.default_rng([seed, 2, s, i])
            c = int(rng.integers(len(pool)))
            waves.append(torch.from_numpy(_synth_clip(pool[c], rate, rng).astype(np.float32)))
            classes.append(c)
            texts += [_caption(pool[c], rng) for _ in range(CAPTIONS_PER_CLIP)]
        ids = tuple(f"syn-{role}-{i:05d}" for i in range(n))
        splits.append(_split(log_mels(waves, transform), texts, ids, classes, index))
    table = synthetic_word_table(word_dim)
    return AudioTextData("synthetic", *splits, vocab, table, False, rate, n_mels)


def _split(
    mels: list[torch.Tensor], texts: list[str], ids: Sequence[str], classes: Sequence[int], index: dict[str, int]
) -> AudioTextSplit:
    """A split whose captions come in groups of ``CAPTIONS_PER_CLIP`` per clip, in clip order."""
    words, lengths = _encode([clean_caption(t) for t in texts], index)
    return AudioTextSplit(
        mels=tuple(mels),
        mel_lengths=torch.tensor([m.shape[0] for m in mels], dtype=torch.int64),
        captions=words,
        caption_lengths=lengths,
        caption_clip=torch.arange(len(texts), dtype=torch.int64) // CAPTIONS_PER_CLIP,
        clip_ids=tuple(ids),
        clip_class=torch.tensor(list(classes), dtype=torch.int64),
        texts=tuple(texts),
    )
