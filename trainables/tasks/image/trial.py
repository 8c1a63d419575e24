"""The image task's trial: the shared two-view trial (:mod:`trainables.two_view`) on uint8 images, augmented by
SimCLR/HCL's recipe per sample on the batch (:mod:`trainables.augment`)."""

from __future__ import annotations

import torch

from trainables.accel import Accel
from trainables.augment import make_augment, make_eval_transform
from trainables.loop import prepare
from trainables.models import ContrastiveModel
from trainables.sampling import Positives
from trainables.tasks.image.config import ImageConfig
from trainables.tasks.image.data import load_image_data
from trainables.two_view import TwoViewTrial


def build(cfg: ImageConfig) -> TwoViewTrial:
    accel = Accel.resolve(prepare(cfg), cfg.precision)
    data = load_image_data(cfg.dataset, cfg.data_root, seed=cfg.seed, image_size=cfg.image_size, limit=cfg.limit)
    channels, size = data.pretrain.images.shape[1], data.pretrain.images.shape[-1]
    model = accel.module(ContrastiveModel.build(
        cfg.encoder, channels, width=cfg.width, hidden_dim=cfg.proj_hidden_dim, out_dim=cfg.proj_dim
    ))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    positives = Positives(cfg.strategy_spec.positive, cfg.part_knobs("positive"), data.pretrain.labels.numpy(),
                          data.num_classes, cfg.seed)
    resident = {id(s.images): accel.resident(s.images) for s in (data.pretrain, data.train, data.val, data.test)}
    splits = {role: (resident[id(s.images)], s.labels) for role, s in
              (("pretrain", data.pretrain), ("train", data.train), ("val", data.val), ("test", data.test))}
    return TwoViewTrial(cfg, splits, model, optimizer, accel, make_augment(size, channels, data.mean, data.std),
                        make_eval_transform(data.mean, data.std), positives)
