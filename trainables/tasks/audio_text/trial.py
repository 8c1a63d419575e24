"""The audio-text retrieval task (Xie et al., STRATEGIES.md section 3): build a trial, train an epoch, score a split.

The epoch loop, checkpoints, the collapse check and the reporting are :func:`trainables.loop.run_trial`'s; this
module supplies what differs. A batch is B caption-level pairs (a clip may appear twice, under two captions); the
strategy's selection picks the in-batch negatives of a margin triplet loss in both directions (or InfoNCE scores
them all), and other captions of an anchor's clip are never negatives. Only the audio encoder learns when the word
table is frozen, as in the paper: the caption-caption scores that the text selections rank by then stay fixed.

Determinism: each epoch's caption order comes from a generator seeded by (seed, epoch) and random-NS draws from one
seeded the same way, so a trial resumed from epoch k's checkpoint continues as the uninterrupted run would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trainables.loop import EpochLog, embedding_spread, epoch_seed, prepare
from trainables.sampling import SAMPLERS
from trainables.tasks.audio_text.config import AudioTextConfig
from trainables.tasks.audio_text.data import AudioTextData, AudioTextSplit, load_audio_text
from trainables.tasks.audio_text.losses import frame_word_scores, hinge_loss, infonce_loss, pooled_scores
from trainables.tasks.audio_text.models import AudioTextModel, pool_embeddings
from trainables.tasks.audio_text.retrieval import retrieval_metrics

# Validation scores spread less than this (on the [0, 1] scale of a mean ReLU cosine) tell no clip from another;
# trained encoders spread them by 0.015-0.045 on the embedded data, collapsed ones by < 1e-4.
SCORE_COLLAPSE_STD = 1e-3
EVAL_CHUNK = 32  # clips scored against every caption at once: bounds the (clips x frames x captions x words) product


@dataclass
class AudioTextTrial:
    cfg: AudioTextConfig
    data: AudioTextData
    model: AudioTextModel
    optimizer: torch.optim.Optimizer
    device: torch.device

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        cfg, split, spec = self.cfg, self.data.train, self.cfg.strategy_spec
        rng = np.random.default_rng([cfg.seed, epoch])
        gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
        # a caption's clip is its label: a sampler that groups by label groups the captions of one clip
        batches = SAMPLERS[spec.sampler](split.caption_clip.numpy(), cfg.batch_size, rng, **cfg.part_knobs("sampler"))
        self.model.train()
        log = EpochLog(self.optimizer)
        for idx in batches:
            b = split.batch(idx.tolist())
            frames, words = self.model(*(x.to(self.device) for x in (b.mels, b.frame_mask, b.words, b.word_mask)))
            fmask, wmask, clips = b.frame_mask.to(self.device), b.word_mask.to(self.device), b.clips.to(self.device)
            scores = self._scores(frames, fmask, words, wmask)
            if spec.family == "softmax":
                loss = infonce_loss(scores, clips, cfg.temperature)
            else:
                knobs = dict(cfg.loss_knobs)
                margin, by = knobs.pop("margin"), knobs.get("select_by")
                context: dict[str, Any] = {"generator": gen}
                if by == "audio":  # clip-clip scores move with the encoder; caption-caption ones are fixed
                    context["S_aa"] = self._scores(frames, fmask, frames, fmask).detach()
                if by == "text":
                    context["S_tt"] = self._scores(words, wmask, words, wmask).detach()
                loss = hinge_loss(scores, clips, spec.weighting, margin=margin, **context, **knobs)
            if not log.step(loss, len(idx)):
                break
        return log.result()

    def _scores(self, a: torch.Tensor, a_mask: torch.Tensor, t: torch.Tensor, t_mask: torch.Tensor) -> torch.Tensor:
        if self.cfg.score == "pooled":
            return pooled_scores(pool_embeddings(a, a_mask), pool_embeddings(t, t_mask))
        return frame_word_scores(a, a_mask, t, t_mask)

    @torch.no_grad()
    def evaluate(self, split: str = "val", final: bool = True) -> dict[str, float]:
        """Retrieval over the whole split, each clip and caption scored unpadded against every other; the pooled
        audio embeddings' spread is the collapse check's input (1.0 ~ uniform on the sphere, 0 = collapsed)."""
        data: AudioTextSplit = getattr(self.data, split)
        self.model.eval()
        words, wmask = self.model.text(*(x.to(self.device) for x in data.text_batch(range(data.n_captions))))
        rows, pooled = [], []
        for start in range(0, data.n_clips, EVAL_CHUNK):
            mels, fmask = data.audio_batch(range(start, min(start + EVAL_CHUNK, data.n_clips)))
            frames, fmask = self.model.audio(mels.to(self.device), fmask.to(self.device))
            rows.append(self._scores(frames, fmask, words, wmask).float().cpu())
            pooled.append(pool_embeddings(frames, fmask).float().cpu())
        scores = torch.cat(rows)
        metrics = retrieval_metrics(scores, data.caption_clip)
        if split == "val":
            metrics["embedding_std"] = embedding_spread(torch.cat(pooled))
            metrics["score_std"] = float(scores.std())
        return metrics

    def collapsed(self, metrics: dict[str, Any]) -> bool:
        """Every clip scores the same against every caption: the audio frames have folded onto one direction (the
        failure Xie et al. report for hard cross-modal selection; the hinge loss then sits at 2 x margin)."""
        return metrics["score_std"] < SCORE_COLLAPSE_STD


def build(cfg: AudioTextConfig) -> AudioTextTrial:
    device = prepare(cfg)
    data = load_audio_text(
        cfg.dataset,
        cfg.data_root,
        seed=cfg.seed,
        limit=cfg.limit,
        n_mels=cfg.n_mels,
        word_dim=cfg.word_dim,
        word_vectors=cfg.word_vectors,
    )
    model = AudioTextModel.build(
        data.embeddings,
        data.n_mels,
        trainable_words=data.trainable_words,
        conv_width=cfg.conv_width,
        gru_units=cfg.gru_units,
    ).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return AudioTextTrial(cfg, data, model, optimizer, device)
