"""Downstream scores of a frozen encoder: feature extraction, linear probe, weighted kNN.

Pure functions with no I/O, deterministic given their inputs, so a trial's score can be recomputed and tested
in milliseconds. Items labelled -1 (unlabelled) are ignored by both probes.

- :func:`linear_probe_accuracy` is a multinomial logistic regression on standardised frozen features, solved
  full-batch with L-BFGS from a zero start. It is convex, so the answer does not depend on the order of
  minibatches or an initialisation seed, and it is fast enough to run every epoch. (HCL's linear.py instead
  trains a Linear layer with Adam for 100 epochs on augmented images; that is a finalist-scale protocol.)
- :func:`knn_accuracy` is HCL's / DCL's weighted kNN monitor (k = 200, weights exp(s / t) on cosine s).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    x_uint8: torch.Tensor,
    transform: Callable[[torch.Tensor], torch.Tensor],
    *,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Features ``(n, d)`` (float32, on the CPU) of a uint8 batch, with the backbone in eval mode.

    ``transform`` maps a uint8 chunk (on ``device``) to the backbone's input, e.g. ``make_eval_transform``.
    The backbone must already be on ``device``. Every module's train/eval flag is restored afterwards, so
    calling this between training steps leaves BatchNorm in the state it was.
    """
    modes = [(m, m.training) for m in backbone.modules()]
    backbone.eval()
    try:
        chunks = [
            backbone(transform(chunk.to(device, non_blocking=True))).float().cpu()
            for chunk in x_uint8.split(batch_size)
        ]
    finally:
        for module, mode in modes:
            module.training = mode
    if not chunks:
        raise ValueError("extract_features got an empty batch")
    return torch.cat(chunks).flatten(1)


def _labelled(x: torch.Tensor, y: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"{what}: expected features (n, d) and labels (n,), got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    keep = y >= 0
    if not bool(keep.any()):
        raise ValueError(f"{what}: no labelled items (all labels are -1)")
    return x[keep].float(), y[keep].long()


def linear_probe_accuracy(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    eval_x: torch.Tensor,
    eval_y: torch.Tensor,
    *,
    epochs: int = 100,
    lr: float = 1.0,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> float:
    """Accuracy in [0, 1] on ``eval`` of a softmax classifier fitted on frozen ``train`` features.

    Features are standardised with the train statistics; the objective is mean cross-entropy plus
    ``weight_decay / 2 * ||W||^2`` (bias not decayed), minimised by full-batch L-BFGS (strong-Wolfe line
    search, at most ``epochs`` iterations, ``lr`` its initial step). ``seed`` is kept for a stable call
    signature: the problem is convex and solved from zero weights, so the result does not depend on it.
    """
    del seed
    train_x, train_y = _labelled(train_x, train_y, "train")
    eval_x, eval_y = _labelled(eval_x, eval_y, "eval")
    num_classes = int(max(train_y.max(), eval_y.max())) + 1
    with torch.no_grad():
        mean = train_x.mean(0, keepdim=True)
        std = train_x.std(0, keepdim=True, unbiased=False).clamp_min(1e-6)
        xs, es = (train_x - mean) / std, (eval_x - mean) / std
    weight = torch.zeros(xs.shape[1], num_classes, device=xs.device, requires_grad=True)
    bias = torch.zeros(num_classes, device=xs.device, requires_grad=True)
    optimiser = torch.optim.LBFGS(
        [weight, bias],
        lr=lr,
        max_iter=epochs,
        history_size=10,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = (
            nn.functional.cross_entropy(xs @ weight + bias, train_y)
            + 0.5 * weight_decay * weight.pow(2).sum()
        )
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(closure)
    with torch.no_grad():
        pred = (es @ weight + bias).argmax(1)
    return float((pred == eval_y).float().mean())


@torch.no_grad()
def knn_accuracy(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    eval_x: torch.Tensor,
    eval_y: torch.Tensor,
    *,
    k: int = 200,
    temperature: float = 0.5,
    chunk_size: int = 1024,
) -> float:
    """HCL's weighted kNN accuracy in [0, 1].

    Cosine similarity on L2-normalised features; the top-``k`` neighbours in the train bank (``k`` clipped to
    its size) each vote for their class with weight exp(s / temperature); the class with the largest vote
    wins (ties go to the lower class index).
    """
    if k < 1 or temperature <= 0:
        raise ValueError(f"k must be >= 1 and temperature > 0, got {k} and {temperature}")
    train_x, train_y = _labelled(train_x, train_y, "train")
    eval_x, eval_y = _labelled(eval_x, eval_y, "eval")
    num_classes = int(max(train_y.max(), eval_y.max())) + 1
    bank = nn.functional.normalize(train_x, dim=1)
    k = min(k, bank.shape[0])
    correct = 0
    for feats, labels in zip(
        eval_x.split(chunk_size), eval_y.split(chunk_size), strict=True
    ):  # bounds the (m, n) matrix
        sim = nn.functional.normalize(feats, dim=1) @ bank.T
        top_sim, top_idx = sim.topk(k, dim=1)
        votes = torch.zeros(feats.shape[0], num_classes, device=feats.device)
        # exp((s - 1) / t) = exp(s / t) / e^(1/t): same vote, no overflow at small temperatures
        votes.scatter_add_(1, train_y[top_idx], ((top_sim - 1.0) / temperature).exp())
        correct += int((votes.argmax(1) == labels).sum())
    return correct / eval_y.shape[0]
