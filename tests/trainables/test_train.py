"""The trial loop without Ray: resumable exactly, and ending early with a reason instead of raising."""

from __future__ import annotations

import math

import pytest
import torch

import trainables.train as train_mod

TINY = {
    "epochs": 3,
    "limit": 120,
    "width": 8,
    "proj_hidden_dim": 16,
    "proj_dim": 8,
    "probe_epochs": 10,
    "batch_size": 32,
    "num_threads": 1,
}


@pytest.mark.parametrize("strategy", ["hard", "pl_sp"])
def test_resumed_trial_continues_exactly_like_an_uninterrupted_one(strategy, collect):
    config = {**TINY, "strategy": strategy}
    straight, states = collect(config)
    resumed, _ = collect(config, state=states[0])
    assert [r["epoch"] for r in resumed] == [2, 3]
    for a, b in zip(straight[1:], resumed, strict=False):
        assert a["loss"] == b["loss"] and a["linear_acc"] == b["linear_acc"]


def test_every_epoch_reports_the_scores_and_times(collect):
    rows, states = collect({**TINY, "epochs": 1})
    assert {
        "epoch",
        "loss",
        "linear_acc",
        "knn_acc",
        "embedding_std",
        "time_train_s",
        "time_eval_s",
        "stop_reason",
    } <= set(rows[0])
    assert 0.0 <= rows[0]["linear_acc"] <= 1.0
    assert {"model", "optimizer", "epoch", "rng", "config"} <= set(states[0])


def test_eval_every_scores_only_due_epochs_and_the_last_and_test_only_at_the_end(collect):
    rows, _ = collect({**TINY, "epochs": 3, "eval_every": 2, "evaluate_test": True})
    assert [("linear_acc" in r, "test_linear_acc" in r) for r in rows] == [(False, False), (True, False), (True, True)]
    last = rows[-1]
    assert 0.0 <= last["test_linear_acc"] <= 1.0 and 0.0 <= last["test_knn_acc"] <= 1.0
    assert "test_embedding_std" not in last
    # the test split is scored with the same probe recipe as validation, so an uninstrumented run agrees on val
    plain, _ = collect({**TINY, "epochs": 3})
    assert plain[-1]["linear_acc"] == last["linear_acc"]


def test_non_finite_loss_ends_the_trial_with_a_reason(monkeypatch, collect):
    calls = {"n": 0}
    real = train_mod.two_view_loss

    def flaky(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs) * (math.nan if calls["n"] == 5 else 1.0)

    monkeypatch.setattr(train_mod, "two_view_loss", flaky)
    rows, states = collect(TINY)
    assert len(rows) == 2 and rows[-1]["stop_reason"] == "non-finite loss"
    # stopped before the optimiser step: the weights it reports on are still finite
    assert all(torch.isfinite(v).all() for v in states[-1]["model"].values() if v.is_floating_point())
    assert math.isfinite(rows[-1]["linear_acc"])


def test_collapsed_embeddings_end_the_trial_with_a_reason(monkeypatch, collect):
    monkeypatch.setattr(train_mod, "COLLAPSE_STD", 10.0)  # every spread counts as collapsed
    rows, _ = collect(TINY)
    assert len(rows) == 1 and rows[0]["stop_reason"] == "collapsed embeddings"
