"""A task defined outside the project, in a few lines: two Gaussian classes in R^4 and a linear encoder.

The extension test registers it in a fixture and runs it through `sweep train` and a smoke sweep, untouched project
files being the point: a new task is one folder (here one module) with one Task record, plus one registry entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from trainables.config import COMMON, TaskConfig
from trainables.loop import EpochLog, embedding_spread, epoch_seed, prepare
from trainables.losses import two_view_loss
from trainables.strategies import TWO_VIEW_STRATEGIES, Knob
from trainables.task import Task

STRATEGIES = MappingProxyType({k: TWO_VIEW_STRATEGIES[k] for k in ("infonce", "debiased")})


@dataclass(frozen=True)
class ToyConfig(TaskConfig):
    TASK: ClassVar[str] = "toy"
    SETTINGS: ClassVar[Mapping[str, Knob]] = MappingProxyType(
        {**COMMON, "task": Knob("setting", "what a trial trains", choices=("toy",))})
    STRATEGIES: ClassVar[Mapping[str, Any]] = STRATEGIES

    strategy: str = "infonce"
    task: str = "toy"
    lr: float = 1e-2
    weight_decay: float = 0.0
    temperature: float = 0.5
    batch_size: int = 32
    epochs: int = 3
    seed: int = 0
    limit: int | None = None
    eval_every: int = 1
    evaluate_test: bool = False
    device: str = "cpu"
    num_threads: int | None = None
    data_root: str | None = None
    knobs: Mapping[str, Any] = field(default_factory=dict)


def _split(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 4)) + 2.0 * y[:, None]
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


@dataclass
class ToyTrial:
    cfg: ToyConfig
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]]

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        x, _ = self.splits["train"]
        gen = torch.Generator().manual_seed(epoch_seed(self.cfg.seed, epoch))
        log = EpochLog(self.optimizer)
        for idx in torch.randperm(len(x), generator=gen).split(self.cfg.batch_size):
            views = [x[idx] + 0.1 * torch.randn(x[idx].shape, generator=gen) for _ in range(2)]
            loss = two_view_loss(self.model(views[0]), self.model(views[1]), self.cfg.strategy,
                                 self.cfg.temperature, **self.cfg.loss_knobs)
            if not log.step(loss, len(idx)):
                break
        return log.result()

    @torch.no_grad()
    def evaluate(self, split: str, final: bool = True) -> dict[str, float]:
        (xt, yt), (x, y) = self.splits["train"], self.splits[split]
        zt, z = F.normalize(self.model(xt), dim=1), F.normalize(self.model(x), dim=1)
        centroids = torch.stack([zt[yt == c].mean(0) for c in (0, 1)])
        out = {"acc": float(((z @ centroids.T).argmax(1) == y).float().mean())}
        if split == "val":
            out["embedding_std"] = embedding_spread(z)
        return out


def build(cfg: ToyConfig) -> ToyTrial:
    prepare(cfg)
    model = torch.nn.Linear(4, 8)
    splits = {name: _split(cfg.seed * 3 + i, 64) for i, name in enumerate(("train", "val", "test"))}
    return ToyTrial(cfg, model, torch.optim.Adam(model.parameters(), lr=cfg.lr), splits)


TASK = Task(
    name="toy", doc="two Gaussian classes; nearest-centroid accuracy", config=ToyConfig, build=build,
    check_data=lambda cfg: None, metric="acc", mode="max", columns=("acc",), shown=("acc",), smoke={"epochs": 2},
    parts={"positive": ("same_instance",), "sampler": ("random",), "weighting": ("all", "debiased"),
           "family": ("softmax",)},
)


def space(trial: Any) -> dict[str, Any]:
    """The toy task's search space: a strategy, a learning rate, and DCL's tau_plus where it applies."""
    strategy = trial.suggest_categorical("strategy", list(STRATEGIES))
    trial.suggest_float("lr", 1e-3, 1e-1, log=True)
    if strategy == "debiased":
        trial.suggest_float("tau_plus", 0.01, 0.2)
    return {"task": "toy"}
