"""Downstream scores of the audio-visual task: Wang's classifier on the audio branch, probed or fine-tuned.

Wang's head is pooled audio features -> Dropout(0.5) -> Linear(C), trained with Adam (lr 1e-4, wd 1e-4, batch 64)
for up to 99 epochs of ~475 steps and kept at its lowest validation loss. Here it is cut to run every epoch of a
sweep on a CPU (the sweep scores the validation split every epoch and the test split for finalists only), which
takes three departures, each because the budget is tens to hundreds of steps instead of tens of thousands:

- Both standardise the pooled features before the head (the probe with train-split statistics, the fine-tune with
  its first batch's, then fixed). Max-pooled BatchNorm-ReLU features share a large offset with a small spread, and
  a short Adam run on them measures that scale rather than separability. A Linear can absorb the affine map, so the
  classifier family is unchanged.
- The linear probe extracts features once with the backbone in eval mode. Wang's probe leaves the model in train
  mode, so the "frozen" backbone's BatchNorm running statistics keep moving and its features follow each batch;
  that pitfall is avoided on purpose.
- The fine-tune recomputes BatchNorm running statistics over the train clips before scoring (``update_bn``-style),
  since after a dozen steps the momentum averages still hold the statistics of the earlier weights.

Defaults, timed for 400 train and 200 eval clips of 50-100 x 64 mels at ``AudioCNN(16)`` on one thread of a busy
CPU: :func:`linear_probe` runs 50 epochs (300 Adam steps at lr 1e-3, ~0.3 s) after one feature extraction (~0.1-0.2 s
per 100 clips), 0.8-1.7 s in all; :func:`fine_tune` runs 2 epochs (12 steps at lr 3e-3) in 3.5-6.5 s, linear in
epochs and clips. Neither selects a checkpoint on the eval split: the head after the last epoch is scored. There is
no augmentation (Wang trains on random 1 s crops and tests on full clips).

Inputs are log-mel ``(n, T, n_mels)`` with integer labels ``(n,)``, used as given (already standardised) unless
``mel_mean`` and ``mel_std`` are passed, per mel bin (n_mels,) as Wang's mean_std npz or scalars; then
``(mels - mel_mean) / mel_std`` is applied here. All randomness (head initialisation, batch order, dropout masks)
comes from one generator seeded with ``seed``, never the global RNG, so a score is a function of its arguments
(bitwise on a CPU at a fixed thread count; cuDNN may differ in the last bits).

- [0] Wang et al., 2022, Positive and Negative Sampling Strategies for Self-Supervised Learning on Audio-Video
  Data (github.com/shanwangshan/positive-negative-sampling-strategy)
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainables.evaluation import extract_features

Split = tuple[Tensor, Tensor]  # (mels (n, T, n_mels), labels (n,))

_EVAL_CHUNK = 256  # clips per forward pass when extracting features or scoring


def linear_probe(
    audio_encoder: nn.Module,
    train_split: Split,
    eval_split: Split,
    *,
    epochs: int = 50,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 64,
    dropout: float = 0.5,
    seed: int = 0,
    num_classes: int | None = None,
    mel_mean: Tensor | float | None = None,
    mel_std: Tensor | float | None = None,
    device: str | torch.device | None = None,
) -> float:
    """Top-1 accuracy in [0, 1] on ``eval_split`` of Dropout + Linear trained on the frozen encoder's features.

    Features of both splits are extracted once in eval mode (every module's train/eval flag is restored after), so
    the encoder's parameters and BatchNorm running statistics are unchanged. ``device`` defaults to the encoder's;
    an encoder on another device is copied there, never moved. Adam's ``weight_decay`` is the coupled L2 of Wang's
    optimiser, on weight and bias alike.

    Args:
        audio_encoder: maps mels (b, T, n_mels) to pooled features (b, d), e.g. ``AVModel.audio``.
        train_split: ``(mels, labels)``, labels in [0, C). Shapes: (n, T, n_mels), (n,).
        eval_split: the same for scoring; T may differ from train's. Shapes: (m, T', n_mels), (m,).
        epochs: passes over the train split in shuffled batches of ``batch_size``, the last partial batch dropped
            (Wang's ``drop_last``) unless it is the only one.
        num_classes: C; by default 1 + the largest label of either split.

    Raises:
        ValueError: malformed splits or labels, or a hyperparameter out of range.
    """
    dev = _resolve_device(audio_encoder, device)
    (train_x, train_y), (eval_x, eval_y) = _check_splits(train_split, eval_split)
    classes = _check_args(train_y, eval_y, epochs, lr, weight_decay, batch_size, dropout, num_classes)
    encoder = audio_encoder if _device_of(audio_encoder) == dev else copy.deepcopy(audio_encoder).to(dev)

    def transform(x: Tensor) -> Tensor:
        return _standardise(x, mel_mean, mel_std)

    train_h = extract_features(encoder, train_x, transform, batch_size=_EVAL_CHUNK, device=dev).to(dev)
    eval_h = extract_features(encoder, eval_x, transform, batch_size=_EVAL_CHUNK, device=dev).to(dev)
    mean = train_h.mean(0, keepdim=True)
    std = train_h.std(0, keepdim=True, unbiased=False).clamp_min(1e-6)
    train_h, eval_h = (train_h - mean) / std, (eval_h - mean) / std
    gen = torch.Generator().manual_seed(seed)
    head = _head(train_h.shape[1], classes, gen).to(dev)
    optimiser = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    train_y = train_y.to(dev)
    with torch.enable_grad():
        for _ in range(epochs):
            for idx in _batches(train_y.shape[0], batch_size, gen):
                idx = idx.to(dev)
                loss = F.cross_entropy(head(_dropout(train_h[idx], dropout, gen)), train_y[idx])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
    with torch.no_grad():
        pred = head(eval_h).argmax(1).cpu()
    return float((pred == eval_y).float().mean())


def fine_tune(
    audio_encoder: nn.Module,
    train_split: Split,
    eval_split: Split,
    *,
    epochs: int = 2,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 64,
    dropout: float = 0.5,
    seed: int = 0,
    num_classes: int | None = None,
    mel_mean: Tensor | float | None = None,
    mel_std: Tensor | float | None = None,
    device: str | torch.device | None = None,
) -> float:
    """Top-1 accuracy in [0, 1] on ``eval_split`` after training a deep copy of the encoder with Dropout + Linear.

    The copy trains in train mode and is scored in eval mode with dropout off; ``audio_encoder`` keeps its
    parameters, buffers and mode, since the trial goes on pre-training it and scores it again next epoch. Every
    parameter of the copy trains, even one the caller had frozen. lr is 3e-3 (Wang: 1e-4) so that a dozen steps
    move a randomly initialised head; ``device`` defaults to the encoder's. Arguments are as in
    :func:`linear_probe`.

    Raises:
        ValueError: malformed splits or labels, or a hyperparameter out of range.
    """
    dev = _resolve_device(audio_encoder, device)
    (train_x, train_y), (eval_x, eval_y) = _check_splits(train_split, eval_split)
    classes = _check_args(train_y, eval_y, epochs, lr, weight_decay, batch_size, dropout, num_classes)
    encoder = copy.deepcopy(audio_encoder).to(dev)
    encoder.requires_grad_(True)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # the feature size, from one clip (in eval mode: one clip has no batch statistics)
        encoder.eval()
        dim = encoder(_standardise(train_x[:1].to(dev), mel_mean, mel_std)).flatten(1).shape[1]
    head = _head(dim, classes, gen).to(dev)
    optimiser = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=lr, weight_decay=weight_decay)
    encoder.train()
    shift: Tensor | None = None
    scale: Tensor | None = None
    with torch.enable_grad():
        for _ in range(epochs):
            for idx in _batches(train_y.shape[0], batch_size, gen):
                h = encoder(_standardise(train_x[idx].to(dev), mel_mean, mel_std)).flatten(1)
                if shift is None or scale is None:  # fixed from here on: the first batch's feature statistics
                    shift = h.detach().mean(0)
                    scale = h.detach().std(0, unbiased=False).clamp_min(1e-6)
                h = (h - shift) / scale
                loss = F.cross_entropy(head(_dropout(h, dropout, gen)), train_y[idx].to(dev))
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
    assert shift is not None and scale is not None  # at least one batch ran
    _recalibrate_batchnorm(encoder, train_x, mel_mean, mel_std, dev)
    encoder.eval()
    with torch.no_grad():
        pred = torch.cat([
            head((encoder(_standardise(chunk.to(dev), mel_mean, mel_std)).flatten(1) - shift) / scale).argmax(1).cpu()
            for chunk in eval_x.split(_EVAL_CHUNK)
        ])
    return float((pred == eval_y).float().mean())


@torch.no_grad()
def _recalibrate_batchnorm(
    encoder: nn.Module, mels: Tensor, mean: Tensor | float | None, std: Tensor | float | None, dev: torch.device
) -> None:
    """Running statistics recomputed as exact averages over the train clips at the final weights.

    After tens of steps the momentum averages still mix in the statistics of earlier weights (and, for an encoder
    that never trained, BatchNorm's initial 0 / 1), and eval mode then scores with mismatched statistics. Wang's
    hundreds of steps per epoch make this moot there. Each chunk's batch statistics are averaged with equal weight,
    as ``torch.optim.swa_utils.update_bn`` does.
    """
    norms = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    encoder.train()
    for chunk in mels.split(_EVAL_CHUNK):
        encoder(_standardise(chunk.to(dev), mean, std))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum


def _device_of(module: nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _resolve_device(module: nn.Module, device: str | torch.device | None) -> torch.device:
    dev = _device_of(module) if device is None else torch.device(device)
    if dev.type == "cuda" and dev.index is None:  # so that "cuda" equals the encoder's cuda:0
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _check_splits(train_split: Split, eval_split: Split) -> tuple[Split, Split]:
    out = []
    for name, split in (("train_split", train_split), ("eval_split", eval_split)):
        if len(split) != 2:
            raise ValueError(f"`{name}` must be a pair (mels, labels)")
        mels, labels = split
        if mels.ndim not in (3, 4) or labels.ndim != 1 or mels.shape[0] != labels.shape[0] or mels.shape[0] < 1:
            raise ValueError(f"`{name}` must hold mels (n, T, n_mels) and labels (n,) with n >= 1; got "
                             f"{tuple(mels.shape)} and {tuple(labels.shape)}")
        if labels.is_floating_point() or labels.is_complex() or bool((labels < 0).any()):
            raise ValueError(f"`{name}` labels must be integers >= 0")
        out.append((mels, labels.long().cpu()))
    return out[0], out[1]


def _check_args(
    train_y: Tensor,
    eval_y: Tensor,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    dropout: float,
    num_classes: int | None,
) -> int:
    """The number of classes, after checking the hyperparameters."""
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"`epochs` and `batch_size` must be >= 1; got {epochs} and {batch_size}")
    if not 0 < lr < math.inf or not 0 <= weight_decay < math.inf:
        raise ValueError(f"`lr` must be > 0 and `weight_decay` >= 0; got {lr} and {weight_decay}")
    if not 0 <= dropout < 1:
        raise ValueError(f"`dropout` is {dropout} but must be in [0, 1)")
    largest = int(max(train_y.max(), eval_y.max()))
    if num_classes is None:
        return largest + 1
    if num_classes <= largest:
        raise ValueError(f"`num_classes` is {num_classes} but a label is {largest}")
    return num_classes


def _standardise(x: Tensor, mean: Tensor | float | None, std: Tensor | float | None) -> Tensor:
    x = x.float()
    if mean is not None:
        x = x - (mean.to(x.device) if isinstance(mean, Tensor) else mean)
    if std is not None:
        x = x / (std.to(x.device) if isinstance(std, Tensor) else std)
    return x


def _head(in_dim: int, num_classes: int, gen: torch.Generator) -> nn.Linear:
    """Wang's Linear(C), initialised as torch's default (U(-1/sqrt(d), 1/sqrt(d))) but from ``gen``."""
    head = nn.Linear(in_dim, num_classes)
    bound = 1.0 / math.sqrt(in_dim)
    with torch.no_grad():
        head.weight.copy_(torch.rand(head.weight.shape, generator=gen).mul_(2 * bound).sub_(bound))
        head.bias.copy_(torch.rand(head.bias.shape, generator=gen).mul_(2 * bound).sub_(bound))
    return head


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[Tensor]:
    """One epoch's shuffled index batches; the last partial batch dropped unless it is the only one."""
    chunks = list(torch.randperm(n, generator=gen).split(batch_size))
    if len(chunks) > 1 and chunks[-1].shape[0] < batch_size:
        chunks.pop()
    return chunks


def _dropout(h: Tensor, p: float, gen: torch.Generator) -> Tensor:
    """Inverted dropout with a mask from ``gen`` (drawn on the CPU: the same mask on every device)."""
    if p == 0:
        return h
    keep = (torch.rand(h.shape, generator=gen) >= p).to(h.device, h.dtype)
    return h * keep / (1.0 - p)
