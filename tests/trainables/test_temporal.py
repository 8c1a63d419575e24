"""The temporal trial: time and classic contrast (with and without label alignment) train and score odd-one-out at
every level on unseen objects (resuming and the test split: the task contract, test_tasks.py)."""

from __future__ import annotations

import math

import pytest

from trainables.tasks import parse_config

TINY = {
    "task": "temporal",
    "epochs": 1,
    "objects_per_category": 20,  # 2 validation objects per category: every odd-one-out level has triplets
    "width": 4,
    "proj_hidden_dim": 32,
    "proj_dim": 16,
    "batch_size": 32,
    "num_threads": 1,
}
LEVELS = ("ooo_category", "ooo_context", "ooo_object")


@pytest.mark.parametrize(("strategy", "label_weight"), [("time", 0.0), ("time", 1.0), ("classic", 0.0),
                                                        ("classic", 1.0)])
def test_every_strategy_trains_and_scores_every_level_at_both_read_outs(strategy, label_weight, collect):
    rows, _ = collect({**TINY, "strategy": strategy, "label_weight": label_weight})
    (row,) = rows
    assert math.isfinite(row["loss"]) and row["stop_reason"] == ""
    for key in (*LEVELS, *("proj_" + k for k in LEVELS), "ooo_mean"):
        assert 0.0 <= row[key] <= 1.0, key
    assert row["ooo_mean"] == pytest.approx(sum(row[k] for k in LEVELS) / 3)


def test_label_alignment_adds_its_loss(collect):
    plain, _ = collect({**TINY, "strategy": "time"})
    aligned, _ = collect({**TINY, "strategy": "time", "label_weight": 1.0})
    assert aligned[0]["loss"] > plain[0]["loss"] + 1.0  # an NT-Xent over 2B items adds about log(2B - 1)




def test_sequence_knobs_belong_to_time_only():
    with pytest.raises(ValueError, match="`p_change_room`"):
        parse_config({"task": "temporal", "strategy": "classic", "p_change_room": 0.2})
    cfg = parse_config({"task": "temporal", "strategy": "time", "p_change_room": 0.3, "delta": 1})
    assert cfg.part_knobs("positive") == {"delta": 1, "crop_number": 7.0, "p_change_room": 0.3, "chunk_ratio": 0.8}
