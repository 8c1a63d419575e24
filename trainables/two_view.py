"""The two-view trial that the image and signal tasks share (HCL, DCL, SimCLR and Wang et al.'s samplers and soft
positives): two augmented views per item, the strategy's batch sampler, positive constructor and negative weighting,
scored by a linear probe and kNN on the frozen backbone's features.

A task gives it its data as tensors (items and labels per split role), its augmentation and evaluation transform
and its model; everything else, including the four-part strategy dispatch, is the same for images and 1-D signals.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainables.accel import Accel
from trainables.evaluation import extract_features, knn_accuracy, linear_probe_accuracy
from trainables.loop import EpochLog, embedding_spread, epoch_seed
from trainables.losses import two_view_loss
from trainables.models import ContrastiveModel
from trainables.sampling import SAMPLERS, Positives, positive_purity

Split = tuple[torch.Tensor, torch.Tensor]  # items (n, ...) and int64 labels (n,), -1 for an unlabelled item


@dataclass
class TwoViewTrial:
    cfg: Any  # a task config with the two-view settings: strategy, temperature, batch_size, probe_epochs, knn_k
    # "pretrain" (what the loss sees), "train" (the probes' fit), "val", "test"; items may be resident on the GPU
    # (Accel.resident), labels stay on the CPU
    splits: Mapping[str, Split]
    model: ContrastiveModel
    optimizer: torch.optim.Optimizer
    accel: Accel
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor]
    eval_transform: Callable[[torch.Tensor], torch.Tensor]
    positives: Positives

    @property
    def device(self) -> torch.device:
        return self.accel.device

    def _features(self) -> np.ndarray:
        with self.accel.autocast():
            return extract_features(self.model.backbone, self.splits["pretrain"][0], self.eval_transform,
                                    device=self.device).numpy()

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        cfg, spec = self.cfg, self.cfg.strategy_spec
        rng = np.random.default_rng([cfg.seed, epoch])
        gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
        x, y = self.splits["pretrain"]
        labels = y.numpy()
        batches = SAMPLERS[spec.sampler](labels, cfg.batch_size, rng, **cfg.part_knobs("sampler"))
        partners_of = self.positives.epoch(epoch, self._features)
        self.model.train()
        log = EpochLog(self.optimizer)
        for idx in batches:
            partners = partners_of(idx, rng)
            views = torch.cat([self.augment(x[_on(idx, x)], gen), self.augment(x[_on(partners, x)], gen)])
            with self.accel.autocast():
                _, z = self.model(self.accel.images(views))
            z1, z2 = z.float().chunk(2)  # the loss in fp32: its log-sum-exps are where precision matters
            loss = two_view_loss(z1, z2, cfg.strategy, cfg.temperature, **cfg.loss_knobs)
            purity = positive_purity(idx, partners, labels) if self.positives.by_label else None
            if not log.step(loss, len(idx), purity):
                break
        return log.result()

    def evaluate(self, split: str = "val", final: bool = True) -> dict[str, float]:
        """Probe and kNN fitted on the train split, scored on ``split``."""
        cfg = self.cfg
        (train_x, train_y), (x, y) = self.splits["train"], self.splits[split]
        with self.accel.autocast():
            train_h = extract_features(self.model.backbone, train_x, self.eval_transform, device=self.device)
            h = extract_features(self.model.backbone, x, self.eval_transform, device=self.device)
        out = {
            "linear_acc": linear_probe_accuracy(train_h, train_y, h, y, epochs=cfg.probe_epochs, seed=cfg.seed),
            "knn_acc": knn_accuracy(train_h, train_y, h, y, k=cfg.knn_k),
        }
        if split == "val":
            with torch.no_grad():
                self.model.eval()
                out["embedding_std"] = embedding_spread(F.normalize(self.model.head(h.to(self.device)).float(),
                                                                    dim=1).cpu())
        return out


def _on(idx: np.ndarray, x: torch.Tensor) -> torch.Tensor:
    """Batch positions as an index on ``x``'s device: items resident on a GPU are gathered there."""
    return torch.from_numpy(np.asarray(idx, dtype=np.int64)).to(x.device, non_blocking=True)
