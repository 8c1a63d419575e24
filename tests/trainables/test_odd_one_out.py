"""trainables.tasks.temporal.odd_one_out:
clustered embeddings score ~1 at their level and chance elsewhere, random ones ~1/3,
both inequalities are needed, the anchor-as-s inflation, skipped anchors, and the contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import trainables.tasks.temporal.odd_one_out as ooo
from trainables.tasks.temporal.odd_one_out import LEVELS, odd_one_out, odd_one_out_all, odd_one_out_detail

pytestmark = pytest.mark.usefixtures("one_thread")

ROOMS, CATS, OBJS, FRAMES, DIM = 4, 3, 4, 5, 32  # 240 frames: 4 rooms x 3 categories x 4 objects x 5 frames


def labels():
    room = np.repeat(np.arange(ROOMS), CATS * OBJS * FRAMES)
    category = np.repeat(np.arange(ROOMS * CATS), OBJS * FRAMES)  # category ids unique across rooms
    obj = np.repeat(np.arange(ROOMS * CATS * OBJS), FRAMES)
    return room, category, obj


def embed(room_w=0.0, cat_w=0.0, obj_w=0.0, seed=0, noise=1.0):
    """Hierarchical clusters: a shared direction per room, per category and per object, plus isotropic noise."""
    rng = np.random.default_rng(seed)
    room, category, obj = labels()
    centre = {k: rng.standard_normal((n, DIM)) for k, n in (("r", ROOMS), ("c", ROOMS * CATS), ("o", len(obj)))}
    e = room_w * centre["r"][room] + cat_w * centre["c"][category] + obj_w * centre["o"][obj]
    return e + noise * rng.standard_normal(e.shape), room, category, obj


def tol(p, n):
    return 4 * math.sqrt(p * (1 - p) / n) + 0.01


N = ROOMS * CATS * OBJS * FRAMES * 10  # triplets per level


@pytest.mark.parametrize(
    "weights, level",
    [((6, 0, 0), "context"), ((0, 6, 0), "category"), ((0, 0, 6), "object")],
)
def test_clusters_at_a_level_score_one_there_and_chance_below(weights, level):
    e, room, category, obj = embed(*weights)
    assert odd_one_out(e, room, category, obj, level, 0) > 0.97
    # The levels nested inside the clustered one see only noise: chance (s drawn among the others, see below).
    for inner in LEVELS[LEVELS.index(level) + 1 :]:
        acc = odd_one_out(e, room, category, obj, inner, 0, exclude_self=True)
        assert acc == pytest.approx(1 / 3, abs=tol(1 / 3, N))


def test_room_clusters_without_category_structure():
    e, room, category, obj = embed(6, 0, 0)
    scores = odd_one_out_all(e, room, category, obj, 0, exclude_self=True)
    assert set(scores) == {"ooo_category", "ooo_context", "ooo_object"}
    assert scores["ooo_context"] > 0.97
    assert scores["ooo_category"] == pytest.approx(1 / 3, abs=tol(1 / 3, N))
    assert scores["ooo_object"] == pytest.approx(1 / 3, abs=tol(1 / 3, N))


def test_random_embeddings_are_at_chance():
    rng = np.random.default_rng(3)
    n = 3000
    room, category = rng.integers(0, 8, n), rng.integers(0, 40, n)
    obj = category * 1000 + rng.integers(0, 10, n)
    e = rng.standard_normal((n, 64))
    for level in LEVELS:
        acc = odd_one_out(e, room, category, obj, level, 1, exclude_self=True)
        assert acc == pytest.approx(1 / 3, abs=tol(1 / 3, 10 * n))
    # Rooms are large, so the original's s = a draws barely matter for context.
    assert odd_one_out(e, room, category, obj, "context", 1) == pytest.approx(1 / 3, abs=tol(1 / 3, 10 * n))


def test_anchor_as_s_inflates_small_sets():
    """As in the original, s may be a: with k frames per object, chance becomes 1/k + (1 - 1/k)/3."""
    e, room, category, obj = embed(seed=4)
    k = FRAMES
    inflated = 1 / k + (1 - 1 / k) / 3
    assert odd_one_out(e, room, category, obj, "object", 0) == pytest.approx(inflated, abs=tol(inflated, N))
    fair = odd_one_out(e, room, category, obj, "object", 0, exclude_self=True)
    assert fair == pytest.approx(1 / 3, abs=tol(1 / 3, N))


def _triangle(angle_s, angle_d):
    """Anchor at 0 degrees and s in room 0, d in room 1."""
    rad = np.deg2rad([0, angle_s, angle_d])
    return np.stack([np.cos(rad), np.sin(rad)], 1), np.array([0, 0, 1]), np.zeros(3, int), np.arange(3)


def test_both_inequalities_are_needed():
    # cos(a,s) = 0.50 > cos(a,d) = -0.17, but cos(s,d) = 0.77 > cos(a,s): a and s are not the closest pair.
    e, room, category, obj = _triangle(60, 100)
    r = odd_one_out_detail(e, room, category, obj, "context", 0, exclude_self=True)
    assert r["accuracy"] == 0.0
    assert r["n_anchors"] == 2 and r["n_skipped"] == 1 and r["n_triplets"] == 20  # d has no other room-1 item
    # d on the far side: cos(a,d) = -0.94, cos(s,d) = -0.77, both below 0.5.
    assert odd_one_out(*_triangle(60, 200), "context", 0, exclude_self=True) == 1.0


def test_ties_are_wrong():
    """Strict inequalities: a collapsed encoder scores 0, not chance."""
    e, room, category, obj = embed(seed=1)
    assert odd_one_out(np.ones_like(e), room, category, obj, "context", 0) == 0.0


def test_anchors_without_s_or_d_are_skipped():
    room = np.array([0, 0, 0, 0, 1, 1, 1, 2])
    category = np.array([0, 0, 1, 1, 2, 2, 2, 3])  # room 1 and 2 hold one category each
    obj = np.array([0, 1, 2, 2, 3, 3, 4, 5])
    e = np.random.default_rng(0).standard_normal((8, 4))
    ctx = odd_one_out_detail(e, room, category, obj, "context", 0)
    assert ctx["n_skipped"] == 0 and ctx["n_triplets"] == 80
    cat = odd_one_out_detail(e, room, category, obj, "category", 0)
    assert cat["n_anchors"] == 4 and cat["n_skipped"] == 4  # only room 0 has two categories
    ob = odd_one_out_detail(e, room, category, obj, "object", 0)
    assert ob["n_anchors"] == 5  # category 0 (objects 0, 1) and category 2 (objects 3, 4); category 1 is one object
    ob_ex = odd_one_out_detail(e, room, category, obj, "object", 0, exclude_self=True)
    assert ob_ex["n_anchors"] == 2  # only the two frames of object 3 have another frame of their object
    single = odd_one_out_detail(e, np.zeros(8, int), category, obj, "context", 0)
    assert math.isnan(single["accuracy"]) and single["n_anchors"] == 0 and single["n_triplets"] == 0
    assert math.isnan(odd_one_out_all(e, np.zeros(8, int), np.zeros(8, int), obj, 0)["ooo_category"])


def test_deterministic_torch_input_and_both_cosine_paths(monkeypatch):
    e, room, category, obj = embed(2, 1, 1, seed=5)
    ref = odd_one_out_all(e, room, category, obj, 7)
    assert ref == odd_one_out_all(e, room, category, obj, np.random.default_rng(7))
    assert ref != odd_one_out_all(e, room, category, obj, 8)
    t = (torch.from_numpy(x) for x in (e, room, category, obj))
    assert odd_one_out_all(*t, 7) == pytest.approx(ref, abs=1e-3)
    assert odd_one_out(torch.from_numpy(e).bfloat16(), room, category, obj, "context", 0) > 0.5
    monkeypatch.setattr(ooo, "_GRAM_MAX", 0)  # row gathers instead of the Gram matrix
    assert odd_one_out_all(e, room, category, obj, 7) == pytest.approx(ref, abs=1e-3)


def test_input_errors():
    e, room, category, obj = embed()
    with pytest.raises(ValueError, match="level"):
        odd_one_out(e, room, category, obj, "room", 0)
    with pytest.raises(ValueError, match="shape"):
        odd_one_out(e, room[:-1], category, obj, "context", 0)
    with pytest.raises(ValueError, match="repeats"):
        odd_one_out(e, room, category, obj, "context", 0, repeats=0)
