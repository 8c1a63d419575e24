"""The ``vggsound`` reader: a VGGSound-style folder (``labels.csv``, ``audio/<clip>.wav``, ``frames/<clip>/``) and
the audio-only ``ood_root`` in the same form, read as listed, with one-line errors for what is missing.

Kept apart from :mod:`~trainables.tasks.audio_visual.data` so that the layout, its checks and the decoding live
with the one source that needs them.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from trainables.datasets import IMAGE_SUFFIXES, ROLES, DatasetNotFoundError, read_wav, require_root
from trainables.errors import UserError
from trainables.tasks.audio_visual.data import (
    CLIP_SECONDS,
    AudioOnlyData,
    AudioSplit,
    AudioVisualSplit,
    _mel_stats,
    log_mels,
)

_FALLBACK = "or use the embedded `dataset: synthetic`"
_NO_DOWNLOAD = "nothing is downloaded at run time"
_LAYOUT = "labels.csv (clip,label,split), audio/<clip>.wav and frames/<clip>/*.png|jpg"
_OOD_LAYOUT = "labels.csv (clip,label,split) and audio/<clip>.wav"


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
