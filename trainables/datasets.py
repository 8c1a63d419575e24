"""What every task's data loaders share: the one-line missing-dataset error, the data-root check, the split roles,
stratified splits and subsets, WAV reading and per-channel statistics. A loader of a real dataset reads only from a
local path: nothing is downloaded at run time."""

from __future__ import annotations

import os

import numpy as np
import torch

from trainables.errors import UserError

ROLES: tuple[str, ...] = ("train", "val", "test")  # the labelled splits; the sweep ranks on val, test is for finalists
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TEST_FRACTION = 0.15  # data without an official test split: 70/15/15 with a val_fraction of 0.15


class DatasetNotFoundError(UserError):
    """A dataset's files are not where the user said; the message is one line naming the fix."""


def require_root(data_root: str | None, name: str, layout: str, no_download: str, fallback: str) -> str:
    """The dataset folder the user gave, expanded; a one-line DatasetNotFoundError when there is none or it is not a
    folder. ``layout`` describes what the folder must hold."""
    if data_root is None:
        raise DatasetNotFoundError(
            f"{name} needs a data root: pass the folder that holds {layout} ({no_download}), {fallback}"
        )
    root = os.path.expanduser(str(data_root))
    if not os.path.isdir(root):
        raise DatasetNotFoundError(
            f"{name} not found under {root}: the folder does not exist (expected {layout} in it; {no_download})"
        )
    return root


def read_wav(path: str, rate: int) -> torch.Tensor:
    """Mono float32 at ``rate``; soundfile, because torchaudio 2.11's loader needs torchcodec and FFmpeg."""
    import soundfile
    import torchaudio

    try:
        data, native = soundfile.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, TypeError, ValueError) as err:  # soundfile's LibsndfileError is a RuntimeError
        raise UserError(f"cannot decode {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}; "
                        "replace it with a readable .wav file") from err
    wave = torch.from_numpy(data.mean(axis=1))
    return torchaudio.functional.resample(wave, int(native), rate) if int(native) != rate else wave


def channel_stats(x: torch.Tensor, dim: int = 1, floor: float = 1e-3) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of a uint8 batch in [0, 1] units, the channels on axis ``dim``; float64 sums are
    exact enough for any size, and ``floor`` keeps a constant channel from dividing by zero."""
    flat = x.transpose(0, dim).reshape(x.shape[dim], -1).double() / 255.0
    return tuple(flat.mean(1).tolist()), tuple(flat.std(1).clamp_min(floor).tolist())


def holdout(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (keep, held) indices in shuffled order; falls back to unstratified on tiny classes."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    try:
        keep, held = train_test_split(idx, test_size=fraction, random_state=seed, stratify=y)
    except ValueError:  # a class with a single member, or fewer held-out slots than classes
        keep, held = train_test_split(idx, test_size=fraction, random_state=seed)
    return np.asarray(keep), np.asarray(held)


def three_way_split(
    y: np.ndarray, seed: int, val_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified train / val / test positions for data without an official test split (TEST_FRACTION held out)."""
    if val_fraction + TEST_FRACTION >= 1.0:
        raise ValueError(
            f"val_fraction must be < {1 - TEST_FRACTION} here (a {TEST_FRACTION} test split is "
            f"held out too), got {val_fraction}"
        )
    rest, test = holdout(y, TEST_FRACTION, seed)
    keep, held = holdout(y[rest], val_fraction / (1.0 - TEST_FRACTION), seed)
    return rest[keep], rest[held], test


def stratified_head(y: np.ndarray, limit: int | None) -> np.ndarray:
    """Positions of ``limit`` items of ``y`` chosen so that class proportions are kept.

    Each item gets the key (rank within its class + 1/2) / class size; taking the smallest keys interleaves
    the classes in proportion. The kept positions are returned in their original (already shuffled) order.
    """
    n = len(y)
    if limit is None or limit >= n:
        return np.arange(n)
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    rank = np.empty(n, dtype=np.int64)
    for c in range(len(counts)):
        members = np.flatnonzero(inverse == c)
        rank[members] = np.arange(len(members))
    key = (rank + 0.5) / counts[inverse]
    return np.sort(np.argsort(key, kind="stable")[:limit])
