"""The audio-visual trial: every strategy trains and scores, batches are composed as claimed, soft partners have
the purity their labels imply (resuming and the test split: the task contract, test_tasks.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import trainables.tasks.audio_visual.trial as av
from trainables.sampling import SAMPLERS
from trainables.tasks import TASKS, parse_config

AUDIO_VISUAL_STRATEGIES = TASKS["audio_visual"].strategies

TINY = {
    "task": "audio_visual",
    "epochs": 1,
    "limit": 40,
    "audio_width": 4,
    "video_width": 4,
    "n_mels": 16,
    "batch_size": 20,
    "probe_epochs": 5,
    "finetune_epochs": 1,
    "num_threads": 1,
}


@pytest.mark.parametrize("strategy", sorted(AUDIO_VISUAL_STRATEGIES))
def test_every_strategy_trains_and_scores_in_and_out_of_domain(strategy, collect):
    rows, _ = collect({**TINY, "strategy": strategy})
    (row,) = rows
    assert math.isfinite(row["loss"]) and row["stop_reason"] in ("", "collapsed embeddings")
    for key in ("linear_acc", "finetune_acc", "ood_linear_acc", "ood_finetune_acc"):
        assert 0.0 <= row[key] <= 1.0, key
    soft = AUDIO_VISUAL_STRATEGIES[strategy].positive == "soft_class"
    assert ("positive_purity" in row) == soft


def test_batches_have_the_composition_each_sampler_claims(monkeypatch):
    seen = []
    real = av.av_infonce

    def spy(a, v, temperature):
        seen.append(a.shape[0])
        return real(a, v, temperature)

    monkeypatch.setattr(av, "av_infonce", spy)
    cfg = parse_config({**TINY, "strategy": "easy_negative"})
    trial = av.build(cfg)
    labels = trial.data.train.labels
    trial.train_epoch(1)
    assert set(seen) == {trial.data.num_classes}  # one clip per class: B = the number of classes

    for sampler, check in (
        ("one_per_class", lambda b: sorted(labels[b].tolist()) == list(range(trial.data.num_classes))),
        ("single_class", lambda b: len(set(labels[b].tolist())) == 1),
    ):
        batches = SAMPLERS[sampler](labels.numpy(), 20, np.random.default_rng(0))
        assert batches and all(check(b) for b in batches), sampler


@pytest.mark.parametrize(("strategy", "knobs", "expected"), [
    ("random", {}, None),
    ("soft_positive", {"sp_ratio": 1.0}, 1.0),  # true labels: every partner shares the class
    ("sp70", {"label_accuracy": 0.707}, 0.5),  # noise on both ends: ~0.5, as Wang et al.'s SP70
])
def test_soft_partners_have_the_purity_their_labels_imply(strategy, knobs, expected, collect):
    rows, _ = collect({**TINY, "limit": None, "strategy": strategy, **knobs, "audio_width": 2, "video_width": 2})
    purity = rows[0].get("positive_purity")
    if expected is None:
        assert purity is None
    else:
        assert purity == pytest.approx(expected, abs=0.08)
