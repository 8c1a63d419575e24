"""Audio-caption data for the audio-text retrieval task (Xie et al.), as log-mel tensors and word ids in memory.

Every loader returns the same :class:`AudioTextData`: three splits of clips (log-mel ``(T, n_mels)`` each) with
their captions (padded word ids), a vocabulary and its word-vector table. Training runs over caption-level
pairs, each caption with its clip, as in the paper; :meth:`AudioTextSplit.batch` builds one padded batch.

The splits have fixed roles so that a sweep can never rank on the test set:

- ``train``: what the contrastive objective sees (Clotho ``development``);
- ``val``: the split the sweep ranks on (Clotho ``validation``);
- ``test``: reported for finalists only (Clotho ``evaluation``).

Datasets:

- ``synthetic`` (default, embedded): clips of tones, chirps, noise bursts and clicks generated from the seed, each
  with five templated captions that say the same thing in different words, and a frozen word table in which
  synonyms are close: a stand-in for the paper's Word2Vec, which cannot be downloaded here. It needs no file.
- ``clotho``: Clotho v2 from a local folder (see :func:`check_audio_text_dataset` for the layout), with frozen
  vectors from a word2vec/GloVe text file, or without one a table to be learned (``trainable_words``).

Nothing is downloaded: a missing dataset raises :class:`~trainables.datasets.DatasetNotFoundError` with a
one-line fix.

- [0] Xie et al., 2023, On Negative Sampling for Contrastive Audio-Text Retrieval, arXiv:2211.04070
- [1] Drossos et al., 2020, Clotho: an Audio Captioning Dataset, arXiv:1910.09387
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from trainables.datasets import DatasetNotFoundError, read_wav, require_root
from trainables.errors import UserError

DATASETS: tuple[str, ...] = ("synthetic", "clotho")
CAPTIONS_PER_CLIP = 5
PAD_ID, UNK_ID = 0, 1  # row 0 of every table is the zero padding vector, row 1 the unknown-word vector
PAD, UNK = "<pad>", "<unk>"

DEFAULT_SAMPLE_RATE = {"synthetic": 8000, "clotho": 16000}
DEFAULT_CLIPS = (300, 100, 100)  # synthetic clips per split (train, val, test)

# Features as Xie et al.: 40 ms window, 20 ms hop, n_fft the next power of two, 64 mel bands, 12 Hz .. 8 kHz.
WINDOW_S, HOP_S, F_MIN, F_MAX = 0.040, 0.020, 12.0, 8000.0
# The paper adds float64's spacing(1) ~ 2e-16 before the log; float32 power cannot resolve that next to real
# energies, and digital silence would then sit at -36 and dominate the input BatchNorm. 1e-8 (-18.4) bounds it.
LOG_EPS = 1e-8

# Clotho v2 (Zenodo 4783391): the caption CSVs and the folders the three audio archives extract to.
CLOTHO_SPLITS: tuple[tuple[str, str], ...] = (("train", "development"), ("val", "validation"), ("test", "evaluation"))
_FALLBACK = "or use the embedded `dataset: synthetic`"
_NO_DOWNLOAD = "download Clotho v2 from Zenodo yourself; nothing is downloaded at run time"
_LAYOUT = (
    "clotho_captions_{development,validation,evaluation}.csv and the development/ validation/ evaluation/ wav folders"
)


# ----------------------------------------------------------------------------------------------------- types


class AudioTextBatch(NamedTuple):
    """One padded batch of caption-level pairs; masks are True at real frames / words."""

    mels: torch.Tensor  # (B, T, n_mels) float32, zero past each clip's end
    frame_mask: torch.Tensor  # (B, T) bool
    words: torch.Tensor  # (B, W) int64, PAD_ID past each caption's end
    word_mask: torch.Tensor  # (B, W) bool
    clips: torch.Tensor  # (B,) int64 clip index within the split: pairs with equal clips are not negatives


@dataclass(frozen=True, eq=False)
class AudioTextSplit:
    """One split. Clips keep their own lengths (no padding in memory); captions are padded word ids.

    Attributes:
        mels: log-mel spectrogram of each clip, float32 ``(T_i, n_mels)``.
        mel_lengths: ``T_i`` per clip. Shape: (n_clips,).
        captions: word ids, ``PAD_ID`` after each caption's end. Shape: (n_captions, W_max).
        caption_lengths: words per caption, >= 1. Shape: (n_captions,).
        caption_clip: the clip (index into ``mels``) each caption describes. Shape: (n_captions,).
        clip_ids: a name per clip (Clotho's file name, ``syn-<split>-<i>`` for the synthetic data).
        clip_class: the synthetic description class of each clip, shared by clips that are described alike (so a
            caption can fit more than its own clip); -1 for real data. Shape: (n_clips,).
        texts: the raw caption strings, row-aligned with ``captions``.
    """

    mels: tuple[torch.Tensor, ...]
    mel_lengths: torch.Tensor
    captions: torch.Tensor
    caption_lengths: torch.Tensor
    caption_clip: torch.Tensor
    clip_ids: tuple[str, ...]
    clip_class: torch.Tensor
    texts: tuple[str, ...]

    def __post_init__(self) -> None:
        n, m = len(self.mels), self.captions.shape[0]
        if self.mel_lengths.shape != (n,) or len(self.clip_ids) != n or self.clip_class.shape != (n,):
            raise ValueError(f"AudioTextSplit: per-clip fields disagree with {n} clips")
        if self.caption_lengths.shape != (m,) or self.caption_clip.shape != (m,) or len(self.texts) != m:
            raise ValueError(f"AudioTextSplit: per-caption fields disagree with {m} captions")
        if m and (int(self.caption_clip.min()) < 0 or int(self.caption_clip.max()) >= n):
            raise ValueError("AudioTextSplit.caption_clip must index the split's clips")

    @property
    def n_clips(self) -> int:
        return len(self.mels)

    @property
    def n_captions(self) -> int:
        return int(self.captions.shape[0])

    def audio_batch(self, clip_idx: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips ``clip_idx`` zero-padded to the longest: ``(mels (B, T, n_mels), frame_mask (B, T))``."""
        idx = _index(clip_idx)
        lengths = self.mel_lengths[idx]
        width = int(lengths.max()) if len(idx) else 0
        n_mels = self.mels[0].shape[1] if self.mels else 0
        out = torch.zeros((len(idx), width, n_mels), dtype=torch.float32)
        for row, i in enumerate(idx.tolist()):
            out[row, : self.mels[i].shape[0]] = self.mels[i]
        return out, torch.arange(width)[None, :] < lengths[:, None]

    def text_batch(self, caption_idx: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions ``caption_idx`` cut to the longest of them: ``(words (B, W), word_mask (B, W))``."""
        idx = _index(caption_idx)
        lengths = self.caption_lengths[idx]
        width = int(lengths.max()) if len(idx) else 0
        return self.captions[idx, :width], torch.arange(width)[None, :] < lengths[:, None]

    def batch(self, caption_idx: Sequence[int] | torch.Tensor) -> AudioTextBatch:
        """Caption-level pairs ``caption_idx``, each with its clip (a clip twice in the batch is decoded twice)."""
        idx = _index(caption_idx)
        clips = self.caption_clip[idx]
        mels, frame_mask = self.audio_batch(clips)
        words, word_mask = self.text_batch(idx)
        return AudioTextBatch(mels, frame_mask, words, word_mask, clips)


@dataclass(frozen=True, eq=False)
class AudioTextData:
    """A dataset split by role, with the word table that the text encoder looks captions up in.

    ``embeddings`` is (len(vocab), word_dim), row ``PAD_ID`` zero. ``trainable_words`` says whether the caller must
    learn the table (True when no pre-trained vectors exist for the vocabulary) or keep it frozen as the paper.
    """

    name: str
    train: AudioTextSplit
    val: AudioTextSplit
    test: AudioTextSplit
    vocab: tuple[str, ...]
    embeddings: torch.Tensor
    trainable_words: bool
    sample_rate: int
    n_mels: int

    @property
    def word_dim(self) -> int:
        return int(self.embeddings.shape[1])


def _index(idx: Sequence[int] | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(idx, dtype=torch.int64).reshape(-1)


# ----------------------------------------------------------------------------------------------- entry points


def load_audio_text(
    name: str,
    data_root: str | None = None,
    seed: int = 0,
    limit: int | None = None,
    *,
    clips: tuple[int, int, int] | None = None,
    sample_rate: int | None = None,
    n_mels: int = 64,
    word_dim: int = 64,
    word_vectors: str | None = None,
) -> AudioTextData:
    """Load dataset ``name`` with its features, deterministically in ``seed``.

    Args:
        name: one of :data:`DATASETS`. ``synthetic`` is embedded and ignores ``data_root``.
        data_root: the Clotho folder.
        seed: generates the synthetic clips and captions; draws the UNK vector and a learned table's start.
        limit: keep at most this many clips per split (all their captions), the first ones (smoke tests).
        clips: synthetic clips per split (train, val, test); default :data:`DEFAULT_CLIPS`.
        sample_rate: rate the audio is made at or resampled to (default 8 kHz synthetic, 16 kHz Clotho: the
            paper's mel bands stop at 8 kHz, so 16 kHz keeps all of them at a third of 44.1 kHz's cost).
        n_mels: mel bands.
        word_dim: size of the synthetic table and of a learned Clotho table (a word-vector file brings its own).
        word_vectors: Clotho only: a word2vec/GloVe text file (``word v1 v2 ...``) of frozen word vectors.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown audio-text dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit}")
    if n_mels < 1 or word_dim < 2:
        raise ValueError(f"n_mels must be >= 1 and word_dim >= 2, got {n_mels} and {word_dim}")
    rate = DEFAULT_SAMPLE_RATE[name] if sample_rate is None else int(sample_rate)
    if name == "synthetic":
        if word_vectors is not None:
            raise UserError(_SYNTHETIC_WORD_VECTORS)
        return _load_synthetic(seed, limit, clips or DEFAULT_CLIPS, rate, n_mels, word_dim)
    if clips is not None:
        raise ValueError("clips sizes the synthetic data only; use limit to take fewer Clotho clips")
    return _load_clotho(_require_root(data_root), seed, limit, rate, n_mels, word_dim, word_vectors)


_SYNTHETIC_WORD_VECTORS = (
    "`word_vectors` applies to dataset clotho only (the synthetic data has its own word table); remove word_vectors "
    "or set dataset: clotho"
)


def check_audio_text_dataset(name: str, data_root: str | None, word_vectors: str | None = None) -> None:
    """Fail fast, before a sweep starts, when the dataset is not where the user said (no audio read).

    Clotho layout assumed (the Zenodo files, archives extracted in place, as Xie et al.'s scripts expect)::

        data_root/clotho_captions_{development,validation,evaluation}.csv   file_name, caption_1 .. caption_5
        data_root/{development,validation,evaluation}/*.wav
    """
    if name not in DATASETS:
        raise ValueError(f"unknown audio-text dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if name == "synthetic":
        if word_vectors is not None:
            raise UserError(_SYNTHETIC_WORD_VECTORS)
        return
    root = _require_root(data_root)
    for _, folder in CLOTHO_SPLITS:
        _clotho_paths(root, folder)
    if word_vectors is not None and not os.path.isfile(os.path.expanduser(word_vectors)):
        raise DatasetNotFoundError(
            f"word vectors not found: {word_vectors} is not a file (a word2vec/GloVe text file, `word v1 v2 ...`"
            " per line), or leave word_vectors unset to learn the word table"
        )


# ------------------------------------------------------------------------------------------------- features


def log_mel_transform(sample_rate: int, n_mels: int = 64) -> torch.nn.Module:
    """The paper's mel spectrogram at ``sample_rate``: librosa's Slaney mel scale and filter norm, power 2."""
    import torchaudio

    win = int(round(WINDOW_S * sample_rate))
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate,
        n_fft=1 << max(win - 1, 1).bit_length(),  # next power of two >= win
        win_length=win,
        hop_length=int(round(HOP_S * sample_rate)),
        f_min=F_MIN,
        f_max=min(F_MAX, sample_rate / 2),
        n_mels=n_mels,
        power=2.0,
        pad_mode="constant",  # librosa >= 0.10; reflection would fail on clips shorter than half a window
        norm="slaney",
        mel_scale="slaney",
    )


def log_mels(waves: Sequence[torch.Tensor], transform: torch.nn.Module, chunk: int = 64) -> list[torch.Tensor]:
    """``log(mel + LOG_EPS)`` of mono waveforms ``(n_i,)``, each ``(1 + n_i // hop, n_mels)``.

    Clips go through the STFT in zero-padded chunks: one call per chunk instead of per clip is several times
    faster on a CPU, and since the STFT pads with zeros too, every clip's frames equal those computed alone.
    """
    hop = int(transform.hop_length)
    out: list[torch.Tensor] = []
    with torch.no_grad():
        for start in range(0, len(waves), chunk):
            part = [w.float().reshape(-1) for w in waves[start : start + chunk]]
            spec = torch.log(transform(torch.nn.utils.rnn.pad_sequence(part, batch_first=True)) + LOG_EPS)
            out += [spec[i, :, : 1 + len(w) // hop].T.contiguous() for i, w in enumerate(part)]
    return out


# ------------------------------------------------------------------------------------------------------ text


_PUNCTUATION = re.compile(r"""[!"#$%&'()*+,./\\:;<=>?@\[\]^_`{|}~]""")  # Xie et al.'s set: hyphens are kept


def clean_caption(text: str) -> list[str]:
    """Lowercase, punctuation to spaces, split on whitespace, as Xie et al. (who also replace named entities by
    "NE" with nltk; we do not, to avoid the dependency: Clotho captions name few entities)."""
    return _PUNCTUATION.sub(" ", text.lower()).split()


def _encode(captions: Sequence[Sequence[str]], index: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> padded ids and lengths; an empty caption becomes one UNK so that every mean is defined."""
    ids = [[index.get(w, UNK_ID) for w in toks] or [UNK_ID] for toks in captions]
    lengths = torch.tensor([len(r) for r in ids], dtype=torch.int64)
    out = torch.full((len(ids), int(lengths.max()) if ids else 0), PAD_ID, dtype=torch.int64)
    for row, r in enumerate(ids):
        out[row, : len(r)] = torch.tensor(r, dtype=torch.int64)
    return out, lengths


def _unk_vector(table: np.ndarray, seed: int) -> np.ndarray:
    """A unit vector far from every word, as the paper's UNK (|cos| <= 0.25 to the vocabulary): best of 64 draws."""
    rng = np.random.default_rng([seed, 7])
    cand = rng.standard_normal((64, table.shape[1]))
    cand /= np.linalg.norm(cand, axis=1, keepdims=True)
    rows = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
    worst = np.abs(cand @ rows.T).max(axis=1) if len(rows) else np.zeros(len(cand))
    return cand[int(np.argmin(worst))]


# ------------------------------------------------------------------------------------------------- synthetic
#
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


# ---------------------------------------------------------------------------------------------------- clotho


def _require_root(data_root: str | None) -> str:
    return require_root(data_root, "clotho", _LAYOUT, _NO_DOWNLOAD, _FALLBACK)


def _clotho_paths(root: str, folder: str) -> tuple[str, str]:
    """(captions CSV, wav folder) of one Clotho split, or a one-line error naming the one that is missing."""
    csv_path = os.path.join(root, f"clotho_captions_{folder}.csv")
    wav_dir = os.path.join(root, folder)
    if not os.path.isfile(csv_path):
        raise DatasetNotFoundError(
            f"clotho captions not found: {csv_path} is missing (the Zenodo file of that name goes in the data root; "
            f"{_NO_DOWNLOAD}), {_FALLBACK}"
        )
    if not os.path.isdir(wav_dir):
        raise DatasetNotFoundError(
            f"clotho audio not found: {wav_dir}/ is missing (extract clotho_audio_{folder}.7z into the data root; "
            f"{_NO_DOWNLOAD}), {_FALLBACK}"
        )
    return csv_path, wav_dir


def _read_clotho_csv(path: str) -> list[tuple[str, list[str]]]:
    """(file name, captions) per row; names are stripped (some Clotho names carry stray spaces)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            cap_cols = [c for c in fields if re.fullmatch(r"caption_\d+", c)]
            cap_cols.sort(key=lambda c: int(c.split("_")[-1]))
            if "file_name" not in fields or not cap_cols:
                raise UserError(f"{path} must have the columns file_name and caption_1 .. caption_5, got {fields}; "
                                "use Clotho's own captions CSV")
            rows = []
            for n, row in enumerate(reader, start=2):
                name = (row["file_name"] or "").strip()  # a short row leaves its last cells None
                if not name:
                    raise UserError(f"{path} line {n}: empty file_name; fill it in or drop that row")
                rows.append((name, [row[c] or "" for c in cap_cols]))
            return rows
    except (UnicodeDecodeError, csv.Error) as err:  # a binary file, or a broken quote
        raise UserError(f"{path} is not a readable UTF-8 CSV ({err}); use Clotho's own captions CSV") from None




def _load_clotho(
    root: str, seed: int, limit: int | None, rate: int, n_mels: int, word_dim: int, word_vectors: str | None
) -> AudioTextData:
    rows, wavs = {}, {}
    for role, folder in CLOTHO_SPLITS:
        csv_path, wav_dir = _clotho_paths(root, folder)
        rows[role] = _read_clotho_csv(csv_path)[:limit]
        on_disk = {f.strip(): os.path.join(wav_dir, f) for f in os.listdir(wav_dir) if f.lower().endswith(".wav")}
        missing = [name for name, _ in rows[role] if name not in on_disk]
        if missing:
            raise DatasetNotFoundError(
                f"clotho audio incomplete: {len(missing)} wav files listed in {csv_path} are not in {wav_dir}/ "
                f"(first: {missing[0]}); re-extract clotho_audio_{folder}.7z there"
            )
        wavs[role] = on_disk
    tokens = {role: [clean_caption(c) for _, caps in rows[role] for c in caps] for role in rows}
    if word_vectors is None:
        # No pre-trained vectors: the table is learned from the training captions. A frozen random table would
        # make caption-caption similarity (S_tt, the text-based selections) meaningless, so it must be trained.
        vocab = (PAD, UNK, *sorted({w for toks in tokens["train"] for w in toks}))
        rng = np.random.default_rng([seed, 5])
        table = rng.standard_normal((len(vocab), word_dim))
        table /= np.linalg.norm(table, axis=1, keepdims=True)
        trainable = True
    else:
        # Frozen vectors as the paper; words of every split may be looked up (a pre-trained table is not fitted
        # on them), words the file lacks become UNK.
        wanted = {w for toks in tokens.values() for caption in toks for w in caption}
        found = read_word_vectors(word_vectors, wanted)
        if not found:
            raise UserError(f"`word_vectors` {word_vectors} holds no vector for any caption word; give a "
                            "word2vec/GloVe text file (`word v1 v2 ...` per line), or leave word_vectors unset to "
                            "learn the table")
        vocab = (PAD, UNK, *sorted(found))
        table = np.stack([np.zeros_like(next(iter(found.values())))] * 2 + [found[w] for w in vocab[2:]])
        trainable = False
    table[PAD_ID] = 0.0
    table[UNK_ID] = _unk_vector(table[2:], seed)
    index = {w: i for i, w in enumerate(vocab)}
    transform = log_mel_transform(rate, n_mels)
    splits = []
    for role, _ in CLOTHO_SPLITS:
        mels: list[torch.Tensor] = []
        for start in range(0, len(rows[role]), 32):  # bounds the waveforms held at once (Clotho clips: 15-30 s)
            part = [read_wav(wavs[role][name], rate) for name, _ in rows[role][start : start + 32]]
            mels += log_mels(part, transform, chunk=32)
        texts, ids = [], []
        caption_clip = []
        for i, (name, caps) in enumerate(rows[role]):
            texts += caps
            caption_clip += [i] * len(caps)
            ids.append(name)
        words, lengths = _encode(tokens[role], index)
        splits.append(
            AudioTextSplit(
                mels=tuple(mels),
                mel_lengths=torch.tensor([m.shape[0] for m in mels], dtype=torch.int64),
                captions=words,
                caption_lengths=lengths,
                caption_clip=torch.tensor(caption_clip, dtype=torch.int64),
                clip_ids=tuple(ids),
                clip_class=torch.full((len(ids),), -1, dtype=torch.int64),
                texts=tuple(texts),
            )
        )
    embeddings = torch.from_numpy(np.asarray(table, dtype=np.float32))
    return AudioTextData("clotho", *splits, vocab, embeddings, trainable, rate, n_mels)


def read_word_vectors(path: str, words: set[str]) -> dict[str, np.ndarray]:
    """The vectors of ``words`` in a word2vec/GloVe text file, streamed (the file may hold millions of words).

    A word2vec header line (``count dim``) is skipped. A caption word (lowercase) is taken as written when the
    file has it, else from the file's first case variant (GoogleNews vectors are case-sensitive).
    """
    found: dict[str, np.ndarray] = {}
    exact: set[str] = set()
    dim = None
    with open(os.path.expanduser(path), encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f):
            parts = line.rstrip().split(" ")
            if len(parts) < 2 or (n == 0 and len(parts) == 2 and all(p.isdigit() for p in parts)):
                continue
            key = parts[0] if parts[0] in words else parts[0].lower()
            if key not in words or key in exact or (key in found and key != parts[0]):
                continue
            if key == parts[0]:
                exact.add(key)
            try:
                vec = np.asarray(parts[1:], dtype=np.float64)
            except ValueError:
                raise UserError(f"{path} line {n + 1}: the values after the word are not all numbers; give a "
                                "word2vec/GloVe text file (`word v1 v2 ...` per line)") from None
            if dim is None:
                dim = len(vec)
            elif len(vec) != dim:
                raise UserError(f"{path} line {n + 1}: {len(vec)} values where earlier lines had {dim}; give a "
                                "word2vec/GloVe text file with one vector size")
            found[key] = vec
    return found
