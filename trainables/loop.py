"""The epoch loop every task shares: seeding, scoring, the non-finite and collapse stops, the test split at the end,
checkpoint state. A task supplies a :class:`~trainables.task.TaskTrial`; this module never imports a task or Ray.

The sweep's trainable (:mod:`trainables.tune_entry`) and ``sweep train`` (:mod:`trainables.train`) both call
:func:`run_trial` and differ only in what they do with each epoch's metrics and state.

Determinism: every epoch draws its batches, partners and augmentations from generators seeded by (seed, epoch), so a
trial resumed from the checkpoint of epoch k continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from trainables.errors import UserError
from trainables.task import TaskTrial

# Embeddings whose per-dimension spread falls below this fraction of a uniform spread on the sphere have collapsed.
COLLAPSE_STD = 0.02

# Called once per epoch with the metrics and the full trial state; it persists the state and publishes the metrics.
Reporter = Callable[[dict[str, Any], dict[str, Any]], None]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("`device` is 'cuda' but no CUDA device is visible; use device: auto or cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def prepare(cfg: Any) -> torch.device:
    """Threads, device and seeds, before anything random is built."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    return resolve_device(cfg.device)


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> bool:
    """One step on ``loss``; none when it is not finite, so the weights stay finite and the epoch can still be
    scored honestly before the trial stops."""
    if not torch.isfinite(loss):
        return False
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return True


class EpochLog:
    """One training epoch's steps: the loss averaged over items (a last short batch counts less), the partners'
    purity where positives depend on labels, and the stop at the first non-finite loss."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.losses: list[float] = []
        self.weights: list[int] = []
        self.purities: list[float] = []
        self.non_finite: float | None = None

    def step(self, loss: torch.Tensor, items: int, purity: float | None = None) -> bool:
        """Take the step; False (and no step) when the loss is not finite: the epoch must end there."""
        if not optimizer_step(self.optimizer, loss):
            self.non_finite = float(loss.detach())
            return False
        self.losses.append(loss.item())
        self.weights.append(items)
        if purity is not None:
            self.purities.append(purity)
        return True

    def result(self) -> dict[str, Any]:
        if self.non_finite is not None:
            return {"loss": self.non_finite, "stop_reason": "non-finite loss"}
        out: dict[str, Any] = {
            "loss": float(np.average(self.losses, weights=self.weights)) if self.losses else math.nan,
            "stop_reason": "",
            "steps": len(self.losses),
        }
        if self.purities:  # the share of soft partners whose true class is the anchor's (Wang's SP70 ~0.50)
            out["positive_purity"] = float(np.average(self.purities, weights=self.weights))
        return out


def embedding_spread(z: torch.Tensor) -> float:
    """Spread of L2-normalised embeddings relative to a uniform one on the sphere (1.0 ~ uniform, 0 = collapsed):
    the collapse check's input, ``embedding_std``."""
    return float(z.std(dim=0).mean() * math.sqrt(z.shape[1]))


def collapsed(t: TaskTrial, metrics: Mapping[str, Any]) -> bool:
    """The task's own rule where it has one, else embeddings spread less than :data:`COLLAPSE_STD`."""
    rule = getattr(t, "collapsed", None)
    return rule(metrics) if rule is not None else metrics["embedding_std"] < COLLAPSE_STD


def state_of(t: TaskTrial, epoch: int) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "config": t.cfg.to_dict(),
        "model": t.model.state_dict(),
        "optimizer": t.optimizer.state_dict(),
        "rng": {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
    }


def restore(t: TaskTrial, state: Mapping[str, Any]) -> int:
    t.model.load_state_dict(state["model"])
    t.optimizer.load_state_dict(state["optimizer"])
    rng = state["rng"]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return int(state["epoch"])


def run_trial(t: TaskTrial, report: Reporter, *, state: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train the built trial ``t`` from scratch or from ``state`` (a dict from a previous report) to ``epochs``;
    return the last metrics.

    ``report(metrics, state)`` is called once per epoch, after the epoch is scored; ``state`` holds the live
    tensors (no copy per epoch), so the reporter must persist it before it returns. A non-finite loss or collapsed
    embeddings end the trial early with ``stop_reason`` set in its last metrics; they never raise. The test split
    is scored only at the last epoch, when the config asks, its scores prefixed ``test_``.
    """
    cfg = t.cfg
    done = restore(t, state) if state is not None else 0
    last: dict[str, Any] = {}
    for epoch in range(done + 1, cfg.epochs + 1):
        start = time.perf_counter()
        metrics = t.train_epoch(epoch)
        train_s = time.perf_counter() - start
        final = epoch == cfg.epochs or bool(metrics["stop_reason"])
        if final or epoch % cfg.eval_every == 0:
            metrics.update(t.evaluate("val", final))
            if not metrics["stop_reason"] and collapsed(t, metrics):
                metrics["stop_reason"] = "collapsed embeddings"
        if cfg.evaluate_test and (epoch == cfg.epochs or metrics["stop_reason"]):
            metrics.update({f"test_{k}": v for k, v in t.evaluate("test").items()})
        metrics.update(epoch=epoch, time_train_s=train_s, time_eval_s=time.perf_counter() - start - train_s)
        report(metrics, state_of(t, epoch))
        last = metrics
        if metrics["stop_reason"]:
            break
    return last


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of an epoch's metrics that a tracker plots, by their own names (the epoch is the step): what
    `sweep train` writes to TensorBoard, and what a sweep's trackers write, so that the two overlay."""
    return {k: float(v) for k, v in metrics.items()
            if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)}
