"""The audio-visual correspondence task (Wang et al., STRATEGIES.md section 4): build a trial, train, score a split.

Every strategy trains with the same cross-modal InfoNCE (t = 0.07 by default, mean of both directions); they differ
only in how a batch is composed (random, one clip per class, a single class) and in which clip's video is the
positive for audio i (its own, or with probability ``sp_ratio`` another clip of the same true, noisy or pseudo
label). The epoch loop, checkpoints and the collapse check are :func:`trainables.loop.run_trial`'s.

Scores, on the audio branch only (as the paper): a linear probe every scored epoch and a fine-tune at the last one,
in-domain (the clips' own classes) and out-of-domain (a second labelled audio set). Fine-tuning costs seconds, so
it is left to the final epoch; ASHA ranks on the probe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainables.loop import EpochLog, embedding_spread, prepare
from trainables.sampling import SAMPLERS, Positives, positive_purity
from trainables.tasks.audio_visual.config import AudioVisualConfig
from trainables.tasks.audio_visual.data import AudioVisualData, load_audio_visual
from trainables.tasks.audio_visual.downstream import fine_tune, linear_probe
from trainables.tasks.audio_visual.models import AVModel, av_infonce

EVAL_CHUNK = 128


@dataclass
class AudioVisualTrial:
    cfg: AudioVisualConfig
    data: AudioVisualData
    model: AVModel
    optimizer: torch.optim.Optimizer
    device: torch.device
    mels: torch.Tensor  # the training clips' log-mels, standardised with the train split's statistics
    positives: Positives

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        cfg, spec, split = self.cfg, self.cfg.strategy_spec, self.data.train
        rng = np.random.default_rng([cfg.seed, epoch])
        labels = split.labels.numpy()
        batches = SAMPLERS[spec.sampler](labels, cfg.batch_size, rng, **cfg.part_knobs("sampler"))
        # Pseudo-labels come from the current *visual* embeddings, standing in for Wang's ImageNet predictions.
        partners_of = self.positives.epoch(epoch, lambda: self._video_features().numpy())
        self.model.train()
        log = EpochLog(self.optimizer)
        for idx in batches:
            if len(idx) < 2:  # one clip has no negative
                continue
            partners = partners_of(idx, rng)
            a, v = self.model(self.mels[idx].to(self.device), split.frames[partners].to(self.device))
            loss = av_infonce(a, v, cfg.temperature)
            purity = positive_purity(idx, partners, labels) if self.positives.by_label else None
            if not log.step(loss, len(idx), purity):
                break
        return log.result()

    @torch.no_grad()
    def _video_features(self) -> torch.Tensor:
        was = self.model.training
        self.model.eval()
        frames = self.data.train.frames
        out = [self.model.video(frames[i : i + EVAL_CHUNK].to(self.device)).float().cpu()
               for i in range(0, len(frames), EVAL_CHUNK)]
        self.model.train(was)
        return torch.cat(out)

    def evaluate(self, split: str = "val", final: bool = True) -> dict[str, float]:
        """Audio classification with the audio branch: linear probe, and at the last epoch fine-tune, in-domain
        and out-of-domain; the validation projections' spread feeds the collapse check."""
        cfg, data = self.cfg, self.data
        common = {"seed": cfg.seed, "device": self.device}
        out: dict[str, float] = {}
        sets = [("", data, data.num_classes)]
        if data.ood is not None:
            sets.append(("ood_", data.ood, data.ood.num_classes))
        for prefix, d, classes in sets:
            train = (d.normalise_mels(d.train.mels), d.train.labels)
            scored = getattr(d, split)
            target = (d.normalise_mels(scored.mels), scored.labels)
            out[prefix + "linear_acc"] = linear_probe(
                self.model.audio, train, target, epochs=cfg.probe_epochs, num_classes=classes, **common
            )
            if final:
                out[prefix + "finetune_acc"] = fine_tune(
                    self.model.audio, train, target, epochs=cfg.finetune_epochs, num_classes=classes, **common
                )
        if split == "val":
            out["embedding_std"] = self._audio_spread()
        return out

    @torch.no_grad()
    def _audio_spread(self) -> float:
        """Spread of the normalised audio projections on validation (1.0 ~ uniform on the sphere, 0 = collapsed)."""
        self.model.eval()
        mels = self.data.normalise_mels(self.data.val.mels)
        z = torch.cat([
            F.normalize(self.model.audio_head(self.model.audio(mels[i : i + EVAL_CHUNK].to(self.device))), dim=1)
            .float().cpu()
            for i in range(0, len(mels), EVAL_CHUNK)
        ])
        return embedding_spread(z)


def build(cfg: AudioVisualConfig) -> AudioVisualTrial:
    device = prepare(cfg)
    data = load_audio_visual(
        cfg.dataset, cfg.data_root, seed=cfg.seed, limit=cfg.limit, n_mels=cfg.n_mels, frames=cfg.frames,
        frame_size=cfg.frame_size, ood_root=cfg.ood_root,
    )
    model = AVModel.build(
        audio_width=cfg.audio_width, video_width=cfg.video_width, proj_dim=cfg.proj_dim,
        mean=data.frame_mean, std=data.frame_std,
    ).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    positives = Positives(cfg.strategy_spec.positive, cfg.part_knobs("positive"), data.train.labels.numpy(),
                          data.num_classes, cfg.seed)
    return AudioVisualTrial(cfg, data, model, optimizer, device, data.normalise_mels(data.train.mels), positives)
