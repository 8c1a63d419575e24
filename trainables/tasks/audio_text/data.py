"""Audio-caption data for the audio-text retrieval task (Xie et al.), as log-mel tensors and word ids in memory.

Every loader returns the same :class:`AudioTextData`: three splits of clips (log-mel ``(T, n_mels)`` each) with
their captions (padded word ids), a vocabulary and its word-vector table. Training runs over caption-level
pairs, each caption with its clip, as in the paper; :meth:`AudioTextSplit.batch` builds one padded batch.

The splits have fixed roles so that a sweep can never rank on the test set:

- ``train``: what the contrastive objective sees (Clotho ``development``);
- ``val``: the split the sweep ranks on (Clotho ``validation``);
- ``test``: reported for finalists only (Clotho ``evaluation``).

Datasets:

- ``synthetic`` (default, embedded, :mod:`~trainables.tasks.audio_text.synthetic`): clips of tones, chirps, noise
  bursts and clicks generated from the seed, each with five templated captions that say the same thing in different
  words, and a frozen word table in which synonyms are close: a stand-in for the paper's Word2Vec, which cannot be
  downloaded here. It needs no file.
- ``clotho`` (:mod:`~trainables.tasks.audio_text.clotho`): Clotho v2 from a local folder (see
  :func:`check_audio_text_dataset` for the layout), with frozen vectors from a word2vec/GloVe text file, or without
  one a table to be learned (``trainable_words``).

This module holds what both sources share: the types, the entry points, the log-mel features and caption cleaning.
The sources import it, and it imports them inside the entry points only, so the import graph stays acyclic.

Nothing is downloaded: a missing dataset raises :class:`~trainables.datasets.DatasetNotFoundError` with a
one-line fix.

- [0] Xie et al., 2023, On Negative Sampling for Contrastive Audio-Text Retrieval, arXiv:2211.04070
- [1] Drossos et al., 2020, Clotho: an Audio Captioning Dataset, arXiv:1910.09387
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from trainables.datasets import DatasetNotFoundError
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
        from trainables.tasks.audio_text.synthetic import _load_synthetic  # it imports this module: not at the top

        return _load_synthetic(seed, limit, clips or DEFAULT_CLIPS, rate, n_mels, word_dim)
    if clips is not None:
        raise ValueError("clips sizes the synthetic data only; use limit to take fewer Clotho clips")
    from trainables.tasks.audio_text.clotho import _load_clotho, _require_root

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
    from trainables.tasks.audio_text.clotho import CLOTHO_SPLITS, _clotho_paths, _require_root

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

