"""What every task's data loaders share: the one-line missing-dataset error, the data-root check, the split roles,
WAV reading and per-channel statistics. A loader of a real dataset reads only from a local path: nothing is
downloaded at run time."""

from __future__ import annotations

import os

import torch

from trainables.errors import UserError

ROLES: tuple[str, ...] = ("train", "val", "test")  # the labelled splits; the sweep ranks on val, test is for finalists
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


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
