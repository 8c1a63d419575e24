"""The temporal object-similarity task (Aubret et al., STRATEGIES.md section 5): build a trial, train, score a split.

Training frames are visited as one sequence of object clips that stays in a room and switches with probability
``p_change_room`` (built once per trial from its seed, as the paper caches it). ``time`` contrasts each frame with a
neighbour up to ``delta`` steps away (crop-only views: the positive may be the next object in the same room);
``classic`` contrasts two SimCLR augmentations of one frame from the same pool. Both use NT-Xent at t = 0.1; with
``label_weight`` > 0, Aubret's label alignment adds an NT-Xent between the first view's image embedding and an
embedded one-hot category (image-image and label-label pairs are negatives too, same-category duplicates not masked).

Scores: odd-one-out at the category, context and object levels on unseen objects, read out at the backbone
(``ooo_*``) and at the projector output (``proj_ooo_*``); the sweep ranks on ``ooo_mean``, the backbone's mean over
the three levels (the levels a split cannot form triplets for are left out of the mean).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainables.accel import Accel
from trainables.augment import SimCLRAugment, make_eval_transform
from trainables.evaluation import extract_features
from trainables.loop import EpochLog, embedding_spread, epoch_seed, prepare
from trainables.losses import weighted_loss
from trainables.models import ContrastiveModel, ProjectionHead
from trainables.sampling import SAMPLERS
from trainables.strategies import WEIGHTING_KNOBS
from trainables.tasks.temporal import LEVELS
from trainables.tasks.temporal.config import TemporalConfig
from trainables.tasks.temporal.data import TemporalData, load_temporal
from trainables.tasks.temporal.odd_one_out import odd_one_out_all
from trainables.tasks.temporal.sequence import Sequence, sequence_from_frames, temporal_positives


def _same_frame(seq: Sequence, rng: np.random.Generator) -> np.ndarray:
    """`classic`: the partner is the frame itself, seen through a second augmentation."""
    return np.arange(len(seq.frames))


# The positive constructors over the sequence of views: (sequence, rng, **knobs) -> partner position of each position.
POSITIVES = {
    "temporal": lambda seq, rng, delta, **_: temporal_positives(seq, delta, rng),  # the sequence's knobs built it
    "same_instance": _same_frame,
}


class LabelAlignment(torch.nn.Module):
    """Aubret et al.'s "language" branch: an MLP over the one-hot category, and an image MLP over backbone features."""

    def __init__(self, n_categories: int, feature_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.n_categories = n_categories
        self.image = ProjectionHead(feature_dim, hidden_dim, out_dim)
        self.label = ProjectionHead(n_categories, hidden_dim, out_dim)

    def forward(self, h: torch.Tensor, category: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image(h), self.label(F.one_hot(category, self.n_categories).float())


class TemporalModel(torch.nn.Module):
    def __init__(self, contrastive: ContrastiveModel, labels: LabelAlignment) -> None:
        super().__init__()
        self.contrastive, self.labels = contrastive, labels


@dataclass
class TemporalTrial:
    cfg: TemporalConfig
    data: TemporalData
    model: TemporalModel
    optimizer: torch.optim.Optimizer
    accel: Accel
    sequence: Sequence
    augment: SimCLRAugment

    @property
    def device(self) -> torch.device:
        return self.accel.device

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        cfg, seq, split = self.cfg, self.sequence, self.data.train
        rng = np.random.default_rng([cfg.seed, epoch])
        gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
        spec = cfg.strategy_spec
        # the sequence's views, labelled by category for a sampler that groups by label
        batches = SAMPLERS[spec.sampler](split.labels[seq.frames].numpy(), cfg.batch_size, rng,
                                         **cfg.part_knobs("sampler"))
        partners = POSITIVES[spec.positive](seq, rng, **cfg.part_knobs("positive"))
        weighting_knobs = {k: cfg.knobs[k] for k in WEIGHTING_KNOBS[spec.weighting]}
        net, labels = self.model.contrastive, self.model.labels
        net.train()
        labels.train()
        log = EpochLog(self.optimizer)
        for pos in batches:
            anchors, others = seq.frames[pos], seq.frames[partners[pos]]
            x = torch.cat([self.augment(split.frames[anchors], gen), self.augment(split.frames[others], gen)])
            aligned = cfg.knobs["label_weight"] > 0
            with self.accel.autocast():
                h, z = net(self.accel.images(x))
                if aligned:
                    y, e = labels(h[: len(pos)], split.labels[anchors].to(self.device))
            z1, z2 = z.float().chunk(2)  # the losses in fp32
            loss = weighted_loss(z1, z2, spec.weighting, cfg.temperature, **weighting_knobs)
            if aligned:
                loss = loss + cfg.knobs["label_weight"] * weighted_loss(
                    y.float(), e.float(), "all", cfg.label_temperature
                )
            if not log.step(loss, len(pos)):
                break
        return log.result()

    @torch.no_grad()
    def evaluate(self, split: str = "val", final: bool = True) -> dict[str, float]:
        d = getattr(self.data, split)
        net = self.model.contrastive
        with self.accel.autocast():
            h = extract_features(net.backbone, d.frames, self.eval_transform, device=self.device)
        net.eval()
        z = F.normalize(net.head(h.to(self.device)).float(), dim=1).cpu()
        out: dict[str, float] = {}
        for prefix, emb in (("", h), ("proj_", z)):
            scores = odd_one_out_all(emb.numpy(), d.room.numpy(), d.labels.numpy(), d.obj.numpy(),
                                     np.random.default_rng([self.cfg.seed, 11]))
            out.update({prefix + k: float(v) for k, v in scores.items()})
        levels = [out[k] for k in LEVELS if math.isfinite(out[k])]
        out["ooo_mean"] = float(np.mean(levels)) if levels else math.nan
        if split == "val":
            out["embedding_std"] = embedding_spread(z)
        return out

    @property
    def eval_transform(self) -> Any:
        return make_eval_transform(self.data.frame_mean, self.data.frame_std)


def build(cfg: TemporalConfig) -> TemporalTrial:
    accel = Accel.resolve(prepare(cfg), cfg.precision)
    data = load_temporal(
        cfg.dataset, cfg.data_root, seed=cfg.seed, limit=cfg.limit, room_map=cfg.room_map,
        context_json=cfg.context_json, image_size=cfg.image_size, objects_per_category=cfg.objects_per_category,
    )
    train = data.train
    knobs = cfg.knobs
    temporal = cfg.strategy_spec.positive == "temporal"
    # `classic` draws from the same frame pool: the paper builds the sequence (and its 80% subset) in either mode.
    sequence = sequence_from_frames(
        train.obj.numpy(), train.labels.numpy(), train.frame_index.numpy(), dict(enumerate(data.category_room)),
        crop_number=knobs.get("crop_number", 7.0), p_change_room=knobs.get("p_change_room", 0.1),
        chunk_ratio=knobs.get("chunk_ratio", 0.8), rng=np.random.default_rng([cfg.seed, 3]),
    )
    channels, size = train.frames.shape[1], train.frames.shape[-1]
    net = ContrastiveModel.build("small_resnet", channels, width=cfg.width, hidden_dim=cfg.proj_hidden_dim,
                                 out_dim=cfg.proj_dim)
    labels = LabelAlignment(data.n_categories, net.feature_dim, cfg.proj_hidden_dim, cfg.proj_dim)
    model = accel.module(TemporalModel(net, labels))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if temporal:  # time contrast: crops only, no colour, flip or blur (STRATEGIES.md 5(b))
        augment = SimCLRAugment(size, channels, data.frame_mean, data.frame_std, crop_scale=(0.5, 1.0), flip_p=0.0,
                                jitter_p=0.0, grey_p=0.0, blur_p=0.0)
    else:  # the paper's SimCLR baseline: crop 0.5-1, flip 0.5, ColorJitter(0.8, 0.8, 0.8, 0.2) at 0.8, grey 0.2
        augment = SimCLRAugment(size, channels, data.frame_mean, data.frame_std, strength=2.0, crop_scale=(0.5, 1.0),
                                flip_p=0.5, jitter_p=0.8, grey_p=0.2, blur_p=0.0)
    return TemporalTrial(cfg, data, model, optimizer, accel, sequence, augment)
