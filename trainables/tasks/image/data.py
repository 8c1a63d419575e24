"""Image data for the contrastive image task, as whole uint8 tensors.

Every loader returns the same :class:`ImageData`: four splits held in memory as ``uint8`` tensors of shape
``(n, C, H, W)`` plus ``int64`` labels. Keeping the images as one tensor (not a Dataset of PIL images) lets
the train loop index batches and augment them on the device in one vectorised call (see
``trainables.augment``), which is what makes small CPU trials fast.

The splits have fixed roles so that a sweep can never rank on the test set:

- ``pretrain``: what the contrastive objective sees (labels may be -1 = unlabelled);
- ``train``: labelled images for the downstream probe (kNN bank / linear classifier);
- ``val``: the split the sweep ranks on, held out from the official training data;
- ``test``: the official test split, used for finalists only.

Nothing is downloaded: a missing dataset raises :class:`DatasetNotFoundError` with a one-line fix.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from trainables.datasets import (
    TEST_FRACTION,
    DatasetNotFoundError,
    channel_stats,
    holdout,
    stratified_head,
    three_way_split,
)
from trainables.errors import UserError

DATASETS: tuple[str, ...] = ("digits", "cifar10", "cifar100", "stl10", "imagefolder")

# HCL (and DCL) normalise every dataset with these CIFAR-10 statistics (image/utils.py); we keep them for the
# torchvision datasets so that numbers stay comparable with the papers.
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2023, 0.1994, 0.2010)

_FALLBACK = "or use the embedded `dataset: digits`"
_NO_DOWNLOAD = "download it yourself; nothing is downloaded at run time"


@dataclass(frozen=True)
class ImageSplit:
    """One split: ``images`` uint8 ``(n, C, H, W)``, ``labels`` int64 ``(n,)`` with -1 for unlabelled items."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"ImageSplit.images must be a uint8 (n, C, H, W) tensor, got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"ImageSplit.labels must be int64 of shape ({self.images.shape[0]},), got {self.labels.dtype} "
                f"{tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class ImageData:
    """A dataset split by role; ``mean``/``std`` are per-channel normalisation stats in [0, 1] units."""

    name: str
    pretrain: ImageSplit
    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])



def load_image_data(
    name: str,
    root: str | None = None,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    image_size: int | None = None,
    limit: int | None = None,
) -> ImageData:
    """Load dataset ``name`` and split it by role, deterministically in ``seed``.

    Args:
        name: one of :data:`DATASETS`. ``digits`` is embedded (scikit-learn) and ignores ``root``.
        root: folder holding the dataset (the torchvision layout, or class sub-folders for ``imagefolder``).
        seed: seeds the stratified validation (and, for digits / imagefolder, test) hold-out.
        val_fraction: share of the official training data held out as ``val``.
        image_size: resize every split to this square size (default: native; 64 for ``imagefolder``).
        limit: keep at most this many items per split (smoke tests), class proportions kept.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit}")
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size}")
    if name == "digits":
        data = _load_digits(seed, val_fraction, limit)
    elif name in ("cifar10", "cifar100"):
        data = _load_cifar(name, _require_root(name, root), seed, val_fraction, limit)
    elif name == "stl10":
        data = _load_stl10(_require_root(name, root), seed, val_fraction, limit)
    else:
        return _load_imagefolder(_require_root(name, root), seed, val_fraction, image_size or 64, limit)
    if image_size is not None and image_size != data.image_size:
        data = _resize_data(data, image_size)
    return data


# --------------------------------------------------------------------------------------------------- loaders


def _load_digits(seed: int, val_fraction: float, limit: int | None) -> ImageData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)  # (n, 1, 8, 8)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    train_idx, val_idx, test_idx = three_way_split(y.numpy(), seed, val_fraction)
    train, val, test = (_take(x, y, idx, limit) for idx in (train_idx, val_idx, test_idx))
    mean, std = channel_stats(train.images, floor=1e-6)
    return ImageData("digits", train, train, val, test, 10, mean, std)


def _load_cifar(name: str, root: str, seed: int, val_fraction: float, limit: int | None) -> ImageData:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    try:
        official_train = cls(root, train=True, download=False)
        official_test = cls(root, train=False, download=False)
    except RuntimeError as err:
        raise _not_found(name, root, cls.base_folder, _cifar_files(cls)) from err
    x_train, y_train = _hwc_to_tensor(official_train.data), _labels(official_train.targets)
    keep, held = holdout(y_train.numpy(), val_fraction, seed)
    train, val = _take(x_train, y_train, keep, limit), _take(x_train, y_train, held, limit)
    x_test, y_test = _hwc_to_tensor(official_test.data), _labels(official_test.targets)
    test = _take(x_test, y_test, np.arange(len(y_test)), limit)
    return ImageData(name, train, train, val, test, len(official_train.classes), CIFAR10_MEAN, CIFAR10_STD)


def _load_stl10(root: str, seed: int, val_fraction: float, limit: int | None) -> ImageData:
    from torchvision.datasets import STL10

    files = [f for f, _ in STL10.train_list + STL10.test_list]
    try:
        labelled = STL10(root, split="train", download=False)
        unlabelled = STL10(root, split="unlabeled", download=False)
        official_test = STL10(root, split="test", download=False)
    except RuntimeError as err:
        raise _not_found("stl10", root, STL10.base_folder, files) from err
    x_lab, y_lab = torch.from_numpy(labelled.data), _labels(labelled.labels)
    keep, held = holdout(y_lab.numpy(), val_fraction, seed)
    train, val = _take(x_lab, y_lab, keep, limit), _take(x_lab, y_lab, held, limit)
    # HCL pre-trains on 'train+unlabeled'. We leave the val hold-out out of it, so that the split the sweep
    # ranks on is never seen in training (0.5% of the 105k images; labels of the labelled part are kept).
    x_unl = torch.from_numpy(unlabelled.data)
    pre_y = torch.cat([y_lab[torch.from_numpy(keep)], torch.full((x_unl.shape[0],), -1, dtype=torch.int64)])
    rows = torch.from_numpy(stratified_head(pre_y.numpy(), limit))  # choose first, copy only what is kept
    lab_rows, unl_rows = rows[rows < len(keep)], rows[rows >= len(keep)] - len(keep)
    pre_x = torch.empty((len(rows), *x_lab.shape[1:]), dtype=torch.uint8)  # filled in place: one 2.9 GB copy
    torch.index_select(x_lab, 0, torch.from_numpy(keep)[lab_rows], out=pre_x[: len(lab_rows)])
    torch.index_select(x_unl, 0, unl_rows, out=pre_x[len(lab_rows) :])
    pretrain = ImageSplit(pre_x, pre_y[rows])
    y_test = _labels(official_test.labels)
    test = _take(torch.from_numpy(official_test.data), y_test, np.arange(len(y_test)), limit)
    return ImageData("stl10", pretrain, train, val, test, 10, CIFAR10_MEAN, CIFAR10_STD)


def _load_imagefolder(root: str, seed: int, val_fraction: float, size: int, limit: int | None) -> ImageData:
    from torchvision.datasets import ImageFolder

    try:
        folder = ImageFolder(root)
    except (FileNotFoundError, RuntimeError) as err:
        raise DatasetNotFoundError(
            f"imagefolder has no usable images under {root}: expected one sub-folder of images per class "
            f"({type(err).__name__}: {str(err).splitlines()[0]}), {_FALLBACK}"
        ) from err
    y = _labels(folder.targets)
    too_few = (f"imagefolder under {root} has too few images to split into train, val and test ({len(y)} images in "
               f"{len(folder.classes)} classes); add images to its class folders")
    try:
        train_idx, val_idx, test_idx = three_way_split(y.numpy(), seed, val_fraction)
    except ValueError as err:  # scikit-learn: a split of so few items would be empty
        if val_fraction + TEST_FRACTION >= 1.0:  # the caller's val_fraction, not the user's folder
            raise
        raise UserError(too_few) from err
    # Split on the labels first and decode only the images that are kept: `limit` then costs what it keeps.
    splits = []
    for idx in (train_idx, val_idx, test_idx):
        idx = idx[stratified_head(y.numpy()[idx], limit)]
        x = (
            torch.stack([_load_image(folder.samples[i][0], size) for i in idx])
            if len(idx)
            else torch.empty((0, 3, size, size), dtype=torch.uint8)
        )
        splits.append(ImageSplit(x, y[torch.from_numpy(idx)]))
    if any(len(split) == 0 for split in splits):
        raise UserError(too_few)
    train, val, test = splits
    mean, std = channel_stats(train.images, floor=1e-6)
    return ImageData("imagefolder", train, train, val, test, len(folder.classes), mean, std)


# --------------------------------------------------------------------------------------------------- helpers




def _require_root(name: str, root: str | None) -> str:
    expected = _EXPECTED[name]
    if root is None:
        what = (
            "a folder with one sub-folder of images per class"
            if name == "imagefolder"
            else f"the folder that holds {expected} ({_NO_DOWNLOAD})"
        )
        raise DatasetNotFoundError(f"{name} needs a data root: pass {what}, {_FALLBACK}")
    root = os.path.expanduser(str(root))
    if not os.path.isdir(root):
        raise _missing_root(name, root, expected)
    return root


_EXPECTED = {
    "cifar10": "cifar-10-batches-py/",
    "cifar100": "cifar-100-python/",
    "stl10": "stl10_binary/",
    "imagefolder": "one sub-folder of images per class",
}


def _missing_root(name: str, root: str, expected: str) -> DatasetNotFoundError:
    hint = "" if name == "imagefolder" else f"; {_NO_DOWNLOAD}"
    return DatasetNotFoundError(
        f"{name} not found under {root}: the folder does not exist (expected {expected} in it{hint}), "
        f"{_FALLBACK}"
    )


def _cifar_files(cls: type) -> list[str]:
    return [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]


def _not_found(name: str, root: str, folder: str, files: Sequence[str]) -> DatasetNotFoundError:
    """Name the first missing file, or say that the files are there but fail torchvision's md5 check."""
    missing = [f for f in files if not os.path.isfile(os.path.join(root, folder, f))]
    if not os.path.isdir(os.path.join(root, folder)):
        what = f"expected {folder}/ there"
    elif missing:
        what = f"expected {folder}/ with {', '.join(files)} (missing: {', '.join(missing)})"
    else:
        what = f"{folder}/ is there but fails torchvision's md5 check (corrupt or partial copy)"
    return DatasetNotFoundError(f"{name} not found under {root}: {what} ({_NO_DOWNLOAD}), {_FALLBACK}")


def _labels(values: Sequence[int] | np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.int64))


def _hwc_to_tensor(data: np.ndarray) -> torch.Tensor:
    """(N, H, W, C) uint8 array -> contiguous (N, C, H, W) tensor, in one copy."""
    return torch.from_numpy(np.ascontiguousarray(data.transpose(0, 3, 1, 2)))


def _take(x: torch.Tensor, y: torch.Tensor, idx: np.ndarray, limit: int | None) -> ImageSplit:
    """The items ``idx`` (then limited) as a contiguous split; the identity selection is not copied."""
    idx = np.asarray(idx, dtype=np.int64)[stratified_head(y.numpy()[idx], limit)]
    if len(idx) == len(y) and np.array_equal(idx, np.arange(len(y))):
        return ImageSplit(x.contiguous(), y)
    idx_t = torch.from_numpy(idx)
    return ImageSplit(x[idx_t], y[idx_t])




def _resize_uint8(x: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Antialiased bilinear resize of a uint8 batch to ``size``², in chunks to bound float memory."""
    if x.shape[0] == 0:
        return x.new_empty((0, x.shape[1], size, size))
    out = [
        F.interpolate(part.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        .round_()
        .clamp_(0, 255)
        .to(torch.uint8)
        for part in x.split(chunk)
    ]
    return torch.cat(out)


def _resize_data(data: ImageData, size: int) -> ImageData:
    cache: dict[int, ImageSplit] = {}

    def resize(split: ImageSplit) -> ImageSplit:  # pretrain is train for most datasets: resize it once
        if id(split) not in cache:
            cache[id(split)] = ImageSplit(_resize_uint8(split.images, size), split.labels)
        return cache[id(split)]

    return ImageData(
        data.name,
        resize(data.pretrain),
        resize(data.train),
        resize(data.val),
        resize(data.test),
        data.num_classes,
        data.mean,
        data.std,
    )


def _load_image(path: str, size: int) -> torch.Tensor:
    """Decode an image as RGB, resize its shorter side to ``size`` and centre-crop a square (aspect kept)."""
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    try:
        with Image.open(path) as img:
            x = TF.pil_to_tensor(img.convert("RGB"))
    except OSError as err:  # PIL's UnidentifiedImageError, a truncated file; a storage fault has an errno
        if err.errno is not None:
            raise
        raise UserError(f"cannot decode {path}: {str(err).splitlines()[0] if str(err) else 'not an image'}; "
                        "replace or remove it (imagefolder reads every image of every class folder)") from err
    x = TF.resize(x, size, antialias=True)
    return TF.center_crop(x, [size, size]).contiguous()


def check_dataset(name: str, root: str | None) -> None:
    """Fail fast, before a sweep starts, when a dataset's folder is not where the user said (no data read)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if name == "digits":
        return
    root = _require_root(name, root)
    if name != "imagefolder" and not os.path.isdir(os.path.join(root, _EXPECTED[name].rstrip("/"))):
        raise DatasetNotFoundError(
            f"{name} not found under {root}: expected {_EXPECTED[name]} there ({_NO_DOWNLOAD}), {_FALLBACK}"
        )
