"""The image task's trial (HCL, DCL, SimCLR and Wang et al.'s samplers on images): two augmented views per item,
the strategy's batch sampler, positive constructor and negative weighting, scored by a linear probe and kNN."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainables.accel import Accel
from trainables.augment import make_augment, make_eval_transform
from trainables.evaluation import extract_features, knn_accuracy, linear_probe_accuracy
from trainables.loop import EpochLog, embedding_spread, epoch_seed, prepare
from trainables.losses import two_view_loss
from trainables.models import ContrastiveModel
from trainables.sampling import SAMPLERS, Positives, positive_purity
from trainables.tasks.image.config import ImageConfig
from trainables.tasks.image.data import ImageData, load_image_data


@dataclass
class ImageTrial:
    cfg: ImageConfig
    data: ImageData
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
            return extract_features(self.model.backbone, self.data.pretrain.images, self.eval_transform,
                                    device=self.device).numpy()

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        cfg, spec = self.cfg, self.cfg.strategy_spec
        rng = np.random.default_rng([cfg.seed, epoch])
        gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
        labels = self.data.pretrain.labels.numpy()
        batches = SAMPLERS[spec.sampler](labels, cfg.batch_size, rng, **cfg.part_knobs("sampler"))
        partners_of = self.positives.epoch(epoch, self._features)
        self.model.train()
        log = EpochLog(self.optimizer)
        for idx in batches:
            partners = partners_of(idx, rng)
            x = self.data.pretrain.images
            x = torch.cat([self.augment(x[idx], gen), self.augment(x[partners], gen)])
            with self.accel.autocast():
                _, z = self.model(self.accel.images(x))
            z1, z2 = z.float().chunk(2)  # the loss in fp32: its log-sum-exps are where precision matters
            loss = two_view_loss(z1, z2, cfg.strategy, cfg.temperature, **cfg.loss_knobs)
            purity = positive_purity(idx, partners, labels) if self.positives.by_label else None
            if not log.step(loss, len(idx), purity):
                break
        return log.result()

    def evaluate(self, split: str = "val", final: bool = True) -> dict[str, float]:
        """Probe and kNN fitted on the train split, scored on ``split``."""
        cfg, data = self.cfg, self.data
        scored = getattr(data, split)
        with self.accel.autocast():
            train_h = extract_features(self.model.backbone, data.train.images, self.eval_transform, device=self.device)
            h = extract_features(self.model.backbone, scored.images, self.eval_transform, device=self.device)
        out = {
            "linear_acc": linear_probe_accuracy(train_h, data.train.labels, h, scored.labels, epochs=cfg.probe_epochs,
                                                seed=cfg.seed),
            "knn_acc": knn_accuracy(train_h, data.train.labels, h, scored.labels, k=cfg.knn_k),
        }
        if split == "val":
            with torch.no_grad():
                self.model.eval()
                out["embedding_std"] = embedding_spread(F.normalize(self.model.head(h.to(self.device)).float(),
                                                                    dim=1).cpu())
        return out


def build(cfg: ImageConfig) -> ImageTrial:
    accel = Accel.resolve(prepare(cfg), cfg.precision)
    data = load_image_data(cfg.dataset, cfg.data_root, seed=cfg.seed, image_size=cfg.image_size, limit=cfg.limit)
    channels, size = data.pretrain.images.shape[1], data.pretrain.images.shape[-1]
    model = accel.module(ContrastiveModel.build(
        cfg.encoder, channels, width=cfg.width, hidden_dim=cfg.proj_hidden_dim, out_dim=cfg.proj_dim
    ))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    positives = Positives(cfg.strategy_spec.positive, cfg.part_knobs("positive"), data.pretrain.labels.numpy(),
                          data.num_classes, cfg.seed)
    return ImageTrial(cfg, data, model, optimizer, accel, make_augment(size, channels, data.mean, data.std),
                      make_eval_transform(data.mean, data.std), positives)
