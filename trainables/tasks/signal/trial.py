"""The signal task's trial: the shared two-view trial (:mod:`trainables.two_view`) on standardised 1-D signals, with
MNIST-1D's own nuisances as the views (:mod:`trainables.tasks.signal.augment`) and a 1-D CNN."""

from __future__ import annotations

import torch

from trainables.accel import Accel
from trainables.loop import prepare
from trainables.sampling import Positives
from trainables.tasks.signal.augment import SignalAugment, identity
from trainables.tasks.signal.config import SignalConfig
from trainables.tasks.signal.data import load_signal_data
from trainables.tasks.signal.models import build_model
from trainables.two_view import TwoViewTrial


def build(cfg: SignalConfig) -> TwoViewTrial:
    accel = Accel.resolve(prepare(cfg), cfg.precision)
    data = load_signal_data(cfg.dataset, cfg.data_root, seed=cfg.seed, limit=cfg.limit)
    model = accel.module(build_model(data.channels, width=cfg.width, hidden_dim=cfg.proj_hidden_dim,
                                     out_dim=cfg.proj_dim))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    positives = Positives(cfg.strategy_spec.positive, cfg.part_knobs("positive"), data.train.labels.numpy(),
                          data.num_classes, cfg.seed)
    train = (accel.resident(data.train.signals), data.train.labels)
    splits = {"pretrain": train, "train": train, "val": (accel.resident(data.val.signals), data.val.labels),
              "test": (accel.resident(data.test.signals), data.test.labels)}
    return TwoViewTrial(cfg, splits, model, optimizer, accel, SignalAugment(), identity, positives)
