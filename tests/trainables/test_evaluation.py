"""trainables.evaluation: hand-built feature banks with known answers, probe sanity bounds, mode restoring."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainables.evaluation import extract_features, knn_accuracy, linear_probe_accuracy

# --------------------------------------------------------------------------------------------------- kNN

# four unit vectors on the plane: classes 0, 0, 1, 1 at angles 0, 30, 90, 180 degrees
BANK = torch.tensor([[1.0, 0.0], [math.cos(math.pi / 6), math.sin(math.pi / 6)], [0.0, 1.0], [-1.0, 0.0]])
BANK_Y = torch.tensor([0, 0, 1, 1])


def test_knn_k1_is_the_nearest_neighbour() -> None:
    queries = torch.tensor([[2.0, 0.1], [0.1, 3.0], [-1.0, -0.2], [0.8, 0.6]])  # norms do not matter
    assert knn_accuracy(BANK, BANK_Y, queries, torch.tensor([0, 1, 1, 0]), k=1) == 1.0
    assert knn_accuracy(BANK, BANK_Y, queries, torch.tensor([1, 0, 0, 1]), k=1) == 0.0
    assert knn_accuracy(BANK, BANK_Y, queries, torch.tensor([0, 0, 0, 0]), k=1) == 0.5


def test_knn_weighted_vote_closer_class_wins() -> None:
    """Query at 60 degrees, k=3: neighbours 30 deg (class 0), 90 deg (class 1) and 0 deg (class 0).

    The two class-1 cosines are cos 30 = 0.866 (the 90-deg vector; 180 deg is not in the top 3), the class-0
    ones cos 30 and cos 60 = 0.5, so class 0 wins with exp(0.866/t) + exp(0.5/t) > exp(0.866/t).
    With k=2 the two nearest (30 and 90 deg) tie at cos 30: the tie goes to the lower class index, 0.
    """
    query = torch.tensor([[math.cos(math.pi / 3), math.sin(math.pi / 3)]])
    assert knn_accuracy(BANK, BANK_Y, query, torch.tensor([0]), k=3) == 1.0
    assert knn_accuracy(BANK, BANK_Y, query, torch.tensor([0]), k=2) == 1.0
    # a query at 80 deg: class 1 (90 deg, cos 10) outweighs the two class-0 votes at a low temperature only
    query = torch.tensor([[math.cos(math.radians(80)), math.sin(math.radians(80))]])
    s1, s0a, s0b = math.cos(math.radians(10)), math.cos(math.radians(50)), math.cos(math.radians(80))
    for t in (0.05, 0.5, 5.0):
        class_1_wins = math.exp(s1 / t) > math.exp(s0a / t) + math.exp(s0b / t)
        assert knn_accuracy(BANK, BANK_Y, query, torch.tensor([1]), k=3, temperature=t) == float(class_1_wins)
    assert knn_accuracy(BANK, BANK_Y, query, torch.tensor([1]), k=3, temperature=0.05) == 1.0
    assert knn_accuracy(BANK, BANK_Y, query, torch.tensor([1]), k=3, temperature=5.0) == 0.0


def test_knn_k_is_clipped_and_unlabelled_items_ignored() -> None:
    query = torch.tensor([[1.0, 0.05], [0.0, -1.0]])
    # k=200 > 4 bank items: all four vote; class 0 (0 and 30 deg) wins for the first query
    assert knn_accuracy(BANK, BANK_Y, query[:1], torch.tensor([0]), k=200) == 1.0
    # -1 labels are dropped: from the bank (the 0-deg vector) and from the queries (the second one)
    bank_y = torch.tensor([-1, 0, 1, 1])
    assert knn_accuracy(BANK, bank_y, query, torch.tensor([1, -1]), k=1) == 0.0  # nearest is now 30 deg
    with pytest.raises(ValueError, match="no labelled items"):
        knn_accuracy(BANK, BANK_Y, query, torch.tensor([-1, -1]))


def test_knn_small_temperature_does_not_overflow() -> None:
    acc = knn_accuracy(BANK, BANK_Y, BANK, BANK_Y, k=4, temperature=1e-3)
    assert acc == 1.0


# ------------------------------------------------------------------------------------------ linear probe


def _blobs(n_per_class: int, classes: int, dim: int, seed: int, spread: float = 0.3):
    gen = torch.Generator().manual_seed(seed)
    centres = 3.0 * torch.randn(classes, dim, generator=torch.Generator().manual_seed(123))
    y = torch.arange(classes).repeat_interleave(n_per_class)
    return centres[y] + spread * torch.randn(len(y), dim, generator=gen), y


def test_linear_probe_separable_blobs_is_perfect() -> None:
    train_x, train_y = _blobs(100, 10, 32, seed=0)
    eval_x, eval_y = _blobs(30, 10, 32, seed=1)
    assert linear_probe_accuracy(train_x, train_y, eval_x, eval_y) == 1.0


def test_linear_probe_random_labels_is_chance() -> None:
    """Labels independent of the features: held-out accuracy ~ 1/10 (sd 0.0095 at n = 1000); bound 0.15."""
    gen = torch.Generator().manual_seed(0)
    train_x, eval_x = torch.randn(1300, 128, generator=gen), torch.randn(1000, 128, generator=gen)
    train_y, eval_y = (
        torch.randint(0, 10, (1300,), generator=gen),
        torch.randint(0, 10, (1000,), generator=gen),
    )
    acc = linear_probe_accuracy(train_x, train_y, eval_x, eval_y)
    assert 0.05 < acc < 0.15
    # while it fits its own training set well above chance (1290 weights for 1300 points, weight decay 1e-3)
    assert linear_probe_accuracy(train_x, train_y, train_x, train_y) > 0.25


def test_linear_probe_is_deterministic_and_ignores_unlabelled() -> None:
    train_x, train_y = _blobs(40, 5, 16, seed=2, spread=3.0)  # overlapping: accuracy strictly inside (0, 1)
    eval_x, eval_y = _blobs(40, 5, 16, seed=3, spread=3.0)
    first = linear_probe_accuracy(train_x, train_y, eval_x, eval_y, seed=0)
    assert 0.2 < first < 1.0
    assert linear_probe_accuracy(train_x, train_y, eval_x, eval_y, seed=5) == first
    noise_x = 100 * torch.randn(50, 16, generator=torch.Generator().manual_seed(9))
    with_unlabelled = linear_probe_accuracy(
        torch.cat([train_x, noise_x]),
        torch.cat([train_y, torch.full((50,), -1)]),
        torch.cat([eval_x, noise_x]),
        torch.cat([eval_y, torch.full((50,), -1)]),
    )
    assert with_unlabelled == first


def test_linear_probe_standardises_features() -> None:
    """A huge constant offset and scale on the features changes nothing (train statistics are used)."""
    train_x, train_y = _blobs(40, 5, 16, seed=2, spread=3.0)
    eval_x, eval_y = _blobs(40, 5, 16, seed=3, spread=3.0)
    plain = linear_probe_accuracy(train_x, train_y, eval_x, eval_y)
    shifted = linear_probe_accuracy(train_x * 50 + 1e3, train_y, eval_x * 50 + 1e3, eval_y)
    assert abs(plain - shifted) <= 1 / 200  # at most one of the 200 held-out items moves


# ---------------------------------------------------------------------------------------------- features


class _Recorder(nn.Module):
    """A BatchNorm model that records the mode it ran in."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1))
        self.frozen = nn.BatchNorm1d(4)
        self.seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(self.net[1].training)
        return self.net(x).flatten(1)


def test_extract_features_runs_in_eval_mode_and_restores_modes() -> None:
    torch.manual_seed(0)
    model = _Recorder()
    model.train()
    model.frozen.eval()  # a mixed state must come back as it was, module by module
    stats = model.net[1].running_mean.clone()
    x = torch.randint(0, 256, (10, 1, 8, 8), dtype=torch.uint8)
    feats = extract_features(model, x, lambda b: b.float() / 255, batch_size=4)
    assert feats.shape == (10, 4) and feats.dtype == torch.float32 and not feats.requires_grad
    assert model.seen == [False, False, False]  # three chunks of at most 4, all in eval mode
    assert model.training and model.net[1].training and not model.frozen.training
    assert torch.equal(model.net[1].running_mean, stats)  # BatchNorm statistics untouched
    again = extract_features(model, x, lambda b: b.float() / 255, batch_size=1024)
    torch.testing.assert_close(again, feats)  # chunking does not change the result in eval mode
    model.eval()
    extract_features(model, x, lambda b: b.float() / 255)
    assert not model.training
