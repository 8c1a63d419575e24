"""1-D signals for the signal task, as whole float32 tensors ``(n, C, L)`` standardised with the train split's stats.

- ``mnist1d`` (embedded, the default): MNIST-1D (Greydanus 2020), generated offline by the ``mnist1d`` package from
  its ten digit templates with its default settings (5,000 signals of length 40, the dataset's own seed 42, so
  these are the signals the paper uses). A linear classifier on the raw signals scores about 34% and a small CNN
  about 94%, so how good an encoder is shows in its linear probe, unlike on the 8x8 digits, where a probe on random
  features already scores about 97%. Split 70/15/15, stratified, by the trial's seed.
- ``npz``: a local ``.npz`` file (``--data-root`` names the file, or a folder holding ``signals.npz``) with ``x``
  (n, L) or (n, C, L) and integer labels ``y`` (n,), and optionally an official test split ``x_test``/``y_test``
  (then the validation split is held out of ``x``). Nothing is downloaded at run time.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np
import torch

from trainables.datasets import TEST_FRACTION, DatasetNotFoundError, holdout, stratified_head, three_way_split
from trainables.errors import UserError
from trainables.files import write_atomic

DATASETS: tuple[str, ...] = ("mnist1d", "npz")
NPZ_FILE = "signals.npz"
_NPZ_LAYOUT = f"a {NPZ_FILE} (or the .npz file itself) with arrays x (n, L) or (n, C, L) and integer labels y (n,)"


@dataclass(frozen=True)
class SignalSplit:
    """One split: ``signals`` float32 ``(n, C, L)``, ``labels`` int64 ``(n,)``."""

    signals: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.signals.dtype != torch.float32 or self.signals.ndim != 3:
            raise ValueError(f"SignalSplit.signals must be a float32 (n, C, L) tensor, got {self.signals.dtype} "
                             f"{tuple(self.signals.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.signals.shape[0],):
            raise ValueError(f"SignalSplit.labels must be int64 of shape ({self.signals.shape[0]},), got "
                             f"{self.labels.dtype} {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class SignalData:
    name: str
    train: SignalSplit  # what the contrastive loss sees, and the probes' fit
    val: SignalSplit
    test: SignalSplit
    num_classes: int

    @property
    def channels(self) -> int:
        return int(self.train.signals.shape[1])

    @property
    def length(self) -> int:
        return int(self.train.signals.shape[-1])


def load_signal_data(name: str, root: str | None = None, *, seed: int = 0, val_fraction: float = 0.15,
                     limit: int | None = None) -> SignalData:
    """Load dataset ``name`` split by role, deterministically in ``seed``; ``limit`` keeps at most that many items
    per split, class proportions kept (smoke tests)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if name == "mnist1d":
        x, y = mnist1d_signals()
        x_test = y_test = None
    else:
        x, y, x_test, y_test = _read_npz(_npz_path(root))
    if x_test is None:
        train, val, test = three_way_split(y, seed, val_fraction)
        parts = [(x, y, train), (x, y, val), (x, y, test)]
    else:
        keep, held = holdout(y, val_fraction, seed)
        parts = [(x, y, keep), (x, y, held), (x_test, y_test, np.arange(len(y_test)))]
    chosen = [(a, b, idx[stratified_head(b[idx], limit)]) for a, b, idx in parts]
    mean, std = _stats(chosen[0][0][chosen[0][2]])
    train, val, test = (
        SignalSplit(torch.from_numpy(((a[idx] - mean) / std).astype(np.float32)), torch.from_numpy(b[idx]))
        for a, b, idx in chosen
    )
    return SignalData(name, train, val, test, int(max(y.max(), -1 if y_test is None else y_test.max())) + 1)


@functools.lru_cache(maxsize=1)
def mnist1d_signals() -> tuple[np.ndarray, np.ndarray]:
    """MNIST-1D's 5,000 signals ``(n, 1, 40)`` and labels, as its package generates them (its own seed 42; numpy's
    global random state, which the package reseeds, is restored afterwards); read-only (``load_signal_data`` copies
    what it keeps). Generating takes about 2 s, which every fresh worker process would pay before its first epoch,
    so the result is kept in a file (:func:`mnist1d_cache_file`) and made once per process at most."""
    cache = mnist1d_cache_file()
    try:
        with np.load(cache) as saved:
            x, y = saved["x"], saved["y"]
        if x.shape != (5000, 1, 40) or y.shape != (5000,):
            raise ValueError(f"{cache} holds arrays of the wrong shape")
    except (OSError, ValueError, KeyError):  # absent, unreadable or damaged: make them (and the file) again
        x, y = _generate_mnist1d()
        try:
            write_atomic(cache, lambda f: np.savez(f, x=x, y=y))
        except OSError:
            pass  # a read-only home: generate each time
    x.flags.writeable = y.flags.writeable = False
    return x, y


def mnist1d_cache_file() -> str:
    """Where the generated signals are kept: the user's cache folder (``$XDG_CACHE_HOME`` or ``~/.cache``), under a
    name that changes with the ``mnist1d`` version (which fixes its default settings), so a stale file is never
    read. The version is read from the package's metadata: importing ``mnist1d`` alone takes 0.6 s."""
    from importlib.metadata import version

    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "contrastive-sweeps", f"mnist1d-{version('mnist1d')}.npz")


def _generate_mnist1d() -> tuple[np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    state = np.random.get_state()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(state)
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float64)[:, None, :]
    y = np.concatenate([data["y"], data["y_test"]]).astype(np.int64)
    return x, y


def _stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of the train split, shaped to broadcast over (n, C, L)."""
    mean = x.mean(axis=(0, 2), keepdims=True)
    std = np.maximum(x.std(axis=(0, 2), keepdims=True), 1e-6)
    return mean, std


def _npz_path(root: str | None) -> str:
    if root is None:
        raise DatasetNotFoundError(f"npz needs --data-root: give {_NPZ_LAYOUT}, or use the embedded `dataset: mnist1d`")
    path = os.path.expanduser(str(root))
    if os.path.isdir(path):
        path = os.path.join(path, NPZ_FILE)
    if not os.path.isfile(path):
        raise DatasetNotFoundError(f"npz signals not found at {path}: expected {_NPZ_LAYOUT}; nothing is downloaded "
                                   "at run time")
    return path


def _read_npz(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path} as an .npz file ({exc}); give {_NPZ_LAYOUT}") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise UserError(f"{path} lacks the array {missing[0]!r}; give {_NPZ_LAYOUT}")
    out: list[np.ndarray | None] = []
    for xk, yk in (("x", "y"), ("x_test", "y_test")):
        if xk not in arrays:
            out += [None, None]
            continue
        x, y = arrays[xk], arrays.get(yk)
        x = x[:, None, :] if x.ndim == 2 else x
        if x.ndim != 3 or not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
            raise UserError(f"{path}: {xk} must be finite numbers of shape (n, L) or (n, C, L), got {x.dtype} "
                            f"{arrays[xk].shape}")
        if y is None or y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer) or (y < 0).any():
            raise UserError(f"{path}: {yk} must be non-negative integer labels of shape ({len(x)},)")
        out += [x.astype(np.float64), y.astype(np.int64)]
    x, y, x_test, y_test = out
    if x_test is not None and x_test.shape[1:] != x.shape[1:]:
        raise UserError(f"{path}: x_test's signals are {x_test.shape[1:]}, x's {x.shape[1:]}; they must match")
    if len(x) * TEST_FRACTION < 3 and x_test is None:
        raise UserError(f"{path} holds {len(x)} signals: too few to hold out validation and test splits")
    return x, y, x_test, y_test


def check_signal_dataset(name: str, root: str | None) -> None:
    """Fail fast, before a sweep starts, when the data is not where the user said (nothing is read)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if name == "npz":
        _npz_path(root)
