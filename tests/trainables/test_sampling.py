"""Batch samplers, positive constructors and label sources of trainables.sampling (seeded, numpy only)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from trainables import strategies
from trainables.sampling import (
    POSITIVES,
    SAMPLERS,
    LabelIndex,
    noisy_labels,
    one_per_class_batches,
    positive_purity,
    pseudo_labels,
    random_batches,
    resolve_partner_labels,
    same_instance,
    single_class_batches,
    soft_class,
)


def _labels(sizes: dict[int, int], n_unlabelled: int = 0, seed: int = 0) -> np.ndarray:
    """Class c repeated sizes[c] times plus unlabelled items, in a shuffled order."""
    parts = [np.full(size, c) for c, size in sizes.items()] + [np.full(n_unlabelled, -1)]
    return np.random.default_rng(seed).permutation(np.concatenate(parts)).astype(np.int64)


def _balanced(num_classes: int, per_class: int) -> np.ndarray:
    return np.repeat(np.arange(num_classes), per_class)


def _binomial_tol(p: float, n: int) -> float:
    """Four standard errors of a mean of n Bernoulli(p) draws (false-failure rate ~6e-5)."""
    return 4.0 * np.sqrt(max(p * (1 - p), 1e-12) / n)


# ------------------------------------------------------------------------------------------ registries


def test_registry_keys_match_strategy_parts():
    assert list(SAMPLERS) == list(strategies.SAMPLER_KNOBS)
    # cross_modal pairs a clip with its own caption or video (the data does it); temporal neighbours come from the
    # temporal task's sequence builder
    assert set(POSITIVES) == {p for p in strategies.POSITIVE_KNOBS if p != "temporal"}  # temporal: the sequence task's


@pytest.mark.parametrize(
    ("registry", "knobs"), [(SAMPLERS, strategies.SAMPLER_KNOBS), (POSITIVES, strategies.POSITIVE_KNOBS)]
)
def test_every_knob_of_a_part_is_a_keyword_of_its_function(registry, knobs):
    for name, fn in registry.items():  # (cross_modal has no knobs and no function here)
        params = inspect.signature(fn).parameters
        for knob in knobs[name]:
            assert params[knob].kind is inspect.Parameter.KEYWORD_ONLY, (name, knob)


@pytest.mark.parametrize("name", sorted(strategies.TWO_VIEW_STRATEGIES))
def test_every_strategy_preset_runs_through_the_registries(name):
    """A resolved strategy's knobs can be splatted into its sampler and positive constructor."""
    strategy = strategies.get_strategy(name)
    knobs = strategy.resolve({})
    labels = _balanced(4, 12)
    rng = np.random.default_rng(0)
    sampler_knobs = {k: knobs[k] for k in strategies.SAMPLER_KNOBS[strategy.sampler]}
    batches = SAMPLERS[strategy.sampler](labels, 8, rng, **sampler_knobs)
    assert batches
    positive_knobs = {k: knobs[k] for k in strategies.POSITIVE_KNOBS[strategy.positive]}
    partners = POSITIVES[strategy.positive](batches[0], labels, rng, **positive_knobs)
    assert partners.shape == batches[0].shape


# ---------------------------------------------------------------------------------------------- random


def test_random_covers_a_permutation():
    batches = random_batches(np.zeros(100, dtype=np.int64), 10, np.random.default_rng(0))
    assert len(batches) == 10 and all(b.shape == (10,) for b in batches)
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(100))


def test_random_drops_last_partial_batch():
    batches = random_batches(np.zeros(103, dtype=np.int64), 10, np.random.default_rng(0))
    assert [b.size for b in batches] == [10] * 10
    used = np.concatenate(batches)
    assert np.unique(used).size == 100 and used.max() < 103


def test_random_smaller_than_one_batch_is_one_batch():
    (batch,) = random_batches(np.zeros(7, dtype=np.int64), 10, np.random.default_rng(0))
    np.testing.assert_array_equal(np.sort(batch), np.arange(7))


def test_random_keep_last_keeps_every_item_and_drops_only_a_lone_last_one():
    from trainables.sampling import random_keep_last_batches

    batches = random_keep_last_batches(np.zeros(103, dtype=np.int64), 10, np.random.default_rng(0))
    assert [b.size for b in batches] == [10] * 10 + [3]
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(103))
    # the same permutation as the random sampler, cut the same way
    first = random_batches(np.zeros(103, dtype=np.int64), 10, np.random.default_rng(0))[0]
    np.testing.assert_array_equal(batches[0], first)
    lone = random_keep_last_batches(np.zeros(21, dtype=np.int64), 10, np.random.default_rng(0))
    assert [b.size for b in lone] == [10, 10]  # one item has no negative


def test_random_uses_unlabelled_items():
    batches = random_batches(np.full(20, -1), 5, np.random.default_rng(0))
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(20))


# --------------------------------------------------------------------------------------- one_per_class


def test_one_per_class_one_item_of_every_class():
    labels = _labels({0: 5, 3: 8, 7: 12}, n_unlabelled=6)
    batches = one_per_class_batches(labels, 256, np.random.default_rng(1))
    assert len(batches) == 5  # the smallest class
    for b in batches:
        assert b.size == 3  # B = number of classes, whatever batch_size says
        np.testing.assert_array_equal(labels[b], [0, 3, 7])
    used = np.concatenate(batches)
    assert np.unique(used).size == used.size  # disjoint
    assert (labels[used] != -1).all()  # unlabelled never used


def test_one_per_class_leaves_different_surplus_items_each_epoch():
    labels = _labels({0: 3, 1: 30})
    rng = np.random.default_rng(0)
    used = set()
    for _ in range(10):
        for b in one_per_class_batches(labels, 2, rng):
            used.add(int(b[1]))
    assert len(used) > 3 * 3  # far more than one epoch's three items of class 1


def test_one_per_class_errors():
    with pytest.raises(ValueError, match="labelled"):
        one_per_class_batches(np.full(10, -1), 4, np.random.default_rng(0))
    with pytest.raises(ValueError, match="2 classes"):
        one_per_class_batches(np.array([2, 2, 2, -1]), 4, np.random.default_rng(0))


# ---------------------------------------------------------------------------------------- single_class


SINGLE_SIZES = {0: 10, 4: 7, 9: 6}  # with batch_size 4: chunks 4,4,2 / 4,3 / 4,2, none dropped


@pytest.mark.parametrize("class_order", ["fixed", "shuffled"])
def test_single_class_batches_are_single_class_and_use_every_item_once(class_order):
    labels = _labels(SINGLE_SIZES, n_unlabelled=5)
    batches = single_class_batches(labels, 4, np.random.default_rng(2), class_order=class_order)
    assert len(batches) == 7
    for b in batches:
        assert 2 <= b.size <= 4
        assert np.unique(labels[b]).size == 1
    used = np.concatenate(batches)
    np.testing.assert_array_equal(np.sort(used), np.flatnonzero(labels != -1))


def test_single_class_fixed_order_ascends_by_class():
    labels = _labels(SINGLE_SIZES, n_unlabelled=5)
    batches = single_class_batches(labels, 4, np.random.default_rng(2), class_order="fixed")
    assert [int(labels[b[0]]) for b in batches] == [0, 0, 0, 4, 4, 9, 9]


def test_single_class_shuffled_order_differs_from_fixed():
    labels = _labels(SINGLE_SIZES)
    fixed = [0, 0, 0, 4, 4, 9, 9]
    orders = [
        [
            int(labels[b[0]])
            for b in single_class_batches(labels, 4, np.random.default_rng(s), class_order="shuffled")
        ]
        for s in range(10)
    ]
    assert any(order != fixed for order in orders)
    assert all(sorted(order) == fixed for order in orders)


def test_single_class_drops_chunks_of_one_item():
    labels = _labels({0: 5, 1: 1, 2: 4})
    batches = single_class_batches(labels, 4, np.random.default_rng(0))
    assert [b.size for b in batches] == [4, 4]  # class 0's fifth item and class 1's only item dropped
    assert [int(labels[b[0]]) for b in batches] == [0, 2]


def test_single_class_errors():
    with pytest.raises(ValueError, match="labelled"):
        single_class_batches(np.full(10, -1), 4, np.random.default_rng(0))
    with pytest.raises(ValueError, match="class_order"):
        single_class_batches(_balanced(2, 4), 4, np.random.default_rng(0), class_order="random")
    with pytest.raises(ValueError, match="batch_size"):
        single_class_batches(_balanced(2, 4), 1, np.random.default_rng(0))


# -------------------------------------------------------------------------------------------- positives


def test_same_instance_is_identity():
    anchors = np.array([4, 1, 7])
    np.testing.assert_array_equal(same_instance(anchors, _balanced(2, 5), np.random.default_rng(0)), anchors)


def test_soft_class_partners_share_the_label_and_unlabelled_keep_themselves():
    labels = _labels({0: 30, 1: 20, 5: 10}, n_unlabelled=15)
    anchors = np.tile(np.arange(labels.size), 50)
    partners = soft_class(anchors, labels, np.random.default_rng(0), sp_ratio=1.0)
    np.testing.assert_array_equal(labels[partners], labels[anchors])
    unlabelled = labels[anchors] == -1
    np.testing.assert_array_equal(partners[unlabelled], anchors[unlabelled])
    # partners come from the whole dataset, not only the batch: each labelled item is drawn at some point
    assert set(partners.tolist()) == set(range(labels.size))


def test_soft_class_swap_rate_is_sp_ratio_times_one_minus_one_over_class_size():
    class_size, sp_ratio = 50, 0.6
    labels = _balanced(8, class_size)
    anchors = np.tile(np.arange(labels.size), 50)  # 20,000 draws
    partners = soft_class(anchors, labels, np.random.default_rng(3), sp_ratio=sp_ratio)
    expected = sp_ratio * (1 - 1 / class_size)  # replaced, and the uniform draw is not the anchor itself
    observed = np.mean(partners != anchors)
    assert abs(observed - expected) < _binomial_tol(expected, anchors.size)


def test_soft_class_partner_is_uniform_over_the_class():
    labels = _balanced(2, 10)
    anchors = np.zeros(20_000, dtype=np.int64)
    partners = soft_class(anchors, labels, np.random.default_rng(4), sp_ratio=1.0)
    freq = np.bincount(partners, minlength=20) / anchors.size
    assert np.all(np.abs(freq[:10] - 0.1) < _binomial_tol(0.1, anchors.size)) and not freq[10:].any()


def test_soft_class_sp_ratio_zero_is_identity():
    labels = _balanced(5, 10)
    anchors = np.arange(50)
    np.testing.assert_array_equal(
        soft_class(anchors, labels, np.random.default_rng(0), sp_ratio=0.0), anchors
    )


def test_soft_class_accepts_a_prebuilt_label_index():
    labels = _labels({0: 9, 1: 4, 2: 7}, n_unlabelled=3)
    anchors = np.arange(labels.size)
    from_array = soft_class(anchors, labels, np.random.default_rng(5), sp_ratio=0.5)
    from_index = soft_class(anchors, LabelIndex(labels), np.random.default_rng(5), sp_ratio=0.5)
    np.testing.assert_array_equal(from_array, from_index)
    np.testing.assert_array_equal(np.sort(LabelIndex(labels).members(1)), np.flatnonzero(labels == 1))
    assert LabelIndex(labels).members(-1).size == 0 and LabelIndex(labels).members(3).size == 0


def test_soft_class_rejects_bad_sp_ratio():
    with pytest.raises(ValueError, match="sp_ratio"):
        soft_class(np.arange(3), np.zeros(3, dtype=np.int64), np.random.default_rng(0), sp_ratio=1.5)


def test_positive_purity_excludes_unlabelled_anchors():
    true = np.array([0, 0, 1, 1, -1])
    assert positive_purity(np.array([0, 2, 4]), np.array([1, 0, 3]), true) == 0.5
    assert np.isnan(positive_purity(np.array([4]), np.array([4]), true))
    with pytest.raises(ValueError, match="shape"):
        positive_purity(np.array([0, 1]), np.array([0]), true)


# ------------------------------------------------------------------------------------------ noisy labels


def test_noisy_labels_accuracy_and_wrong_class():
    sizes = {c: 50 + 10 * c for c in range(10)}
    true = _labels(sizes, n_unlabelled=20)
    accuracy = 0.707
    noisy = noisy_labels(true, accuracy, np.random.default_rng(0), 10)
    assert (noisy[true == -1] == -1).all()
    assert noisy.min() >= -1 and noisy.max() < 10
    for c, size in sizes.items():
        wrong = np.sum(noisy[true == c] != c)
        assert wrong == int((1 - accuracy) * size)  # exact per class: the new class is never the true one
    labelled = true != -1
    assert abs(np.mean(noisy[labelled] == true[labelled]) - accuracy) <= len(sizes) / labelled.sum()


def test_noisy_labels_rounding_matches_wang():
    assert np.sum(noisy_labels(_balanced(2, 123), 0.707, np.random.default_rng(0), 2) == 0) == 87 + 36
    # 123 - int(0.293 * 123) = 87 of class 0 stay, 36 of class 1 move to class 0 (the only wrong class)
    assert np.sum(noisy_labels(_balanced(2, 10), 0.7, np.random.default_rng(0), 2) != _balanced(2, 10)) == 6


def test_noisy_wrong_classes_are_uniform():
    true = _balanced(4, 3000)
    noisy = noisy_labels(true, 0.5, np.random.default_rng(1), 4)
    moved = noisy[(true == 0) & (noisy != 0)]
    freq = np.bincount(moved, minlength=4)[1:] / moved.size
    assert np.all(np.abs(freq - 1 / 3) < _binomial_tol(1 / 3, moved.size))


def test_noisy_labels_full_accuracy_is_identity_and_bad_accuracy_raises():
    true = _labels({0: 10, 1: 10}, n_unlabelled=3)
    np.testing.assert_array_equal(noisy_labels(true, 1.0, np.random.default_rng(0), 2), true)
    with pytest.raises(ValueError, match="label_accuracy"):
        noisy_labels(true, 0.0, np.random.default_rng(0), 2)
    with pytest.raises(ValueError, match="out of range"):
        noisy_labels(true, 0.5, np.random.default_rng(0), 1)


def test_sp70_purity_matches_the_derivation():
    """Purity of soft partners drawn on noisy labels, against its exact and closed-form expectation.

    Let n_gc be the number of items with noisy label g and true class c, n_g = sum_c n_gc, N = sum n_g.
    An anchor in cell (g, c) gets a partner uniform over group g (itself included), whose true class is c
    with probability n_gc / n_g. Averaging over the N anchors, given the realised noisy labels,

        E[purity | noisy] = (1 - rho) + rho * (1 / N) * sum_g sum_c n_gc^2 / n_g            (exact)

    Closed form for C balanced classes of m items, k = int((1 - a) m) flipped per class, a' = 1 - k/m,
    p = 1/(C-1): n_gg = m - k; for c != g, n_gc ~ Binomial(k, p), so E[n_gc^2] = k p (1-p) + k^2 p^2;
    E[n_g] = m. Replacing n_g by m (its mean; the relative fluctuation is O(sqrt(k)/m)),

        P = [(m-k)^2 + (C-1)(k p (1-p) + k^2 p^2)] / m^2
          = a'^2 + (1-a')^2 / (C-1) + (1-a') (C-2) / ((C-1) m)

    i.e. "a^2 + (1-a)^2/(C-1)" plus the anchor drawing itself. For Wang's VGGSound (C=309, m=123, k=36)
    this gives 0.5003 + 0.0003 + 0.0024 = 0.503, the ~0.50 of STRATEGIES.md. Dropping the fluctuation of
    n_g costs about a'^2 Var(n_g) / m^2 ~ a'^2 k / m^2 (0.001 here), so the closed form is checked to 0.005
    and the sampled purity to binomial precision against the exact conditional value.
    """
    num_classes, m, accuracy, rho = 10, 200, 0.707, 1.0
    true = _balanced(num_classes, m)
    noisy = noisy_labels(true, accuracy, np.random.default_rng(11), num_classes)

    counts = np.zeros((num_classes, num_classes))  # counts[g, c] = n_gc
    np.add.at(counts, (noisy, true), 1)
    exact = (1 - rho) + rho * np.sum(counts**2 / counts.sum(axis=1, keepdims=True)) / true.size

    k = int((1 - accuracy) * m)
    a = 1 - k / m
    closed = a**2 + (1 - a) ** 2 / (num_classes - 1) + (1 - a) * (num_classes - 2) / ((num_classes - 1) * m)
    assert abs(exact - closed) < 0.005

    anchors = np.tile(np.arange(true.size), 10)  # 20,000 draws
    partners = soft_class(anchors, noisy, np.random.default_rng(12), sp_ratio=rho)
    purity = positive_purity(anchors, partners, true)
    assert abs(purity - exact) < _binomial_tol(exact, anchors.size)

    # Wang's own setting, closed form only: the ~0.50 quoted in STRATEGIES.md
    c, m, k = 309, 123, int((1 - 0.707) * 123)
    a = 1 - k / m
    assert k == 36 and abs(a**2 + (1 - a) ** 2 / (c - 1) + (1 - a) * (c - 2) / ((c - 1) * m) - 0.503) < 0.001


# ----------------------------------------------------------------------------------------- pseudo labels


def _blobs(
    n_blobs: int = 4, per_blob: int = 100, dim: int = 16, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs around orthogonal directions, so they stay apart after L2 normalisation."""
    rng = np.random.default_rng(seed)
    centres = 10.0 * np.eye(dim)[:n_blobs]
    truth = np.repeat(np.arange(n_blobs), per_blob)
    return centres[truth] + rng.normal(scale=0.5, size=(truth.size, dim)), truth


def test_pseudo_labels_recover_blobs():
    x, truth = _blobs()
    pseudo = pseudo_labels(x, 4, seed=0)
    assert np.unique(pseudo).size == 4
    for cluster in range(4):  # every cluster is exactly one blob: purity 1.0 and a bijection
        assert np.unique(truth[pseudo == cluster]).size == 1
    # soft partners on the pseudo-labels then always share the true class
    anchors = np.arange(truth.size)
    partners = soft_class(anchors, pseudo, np.random.default_rng(0), sp_ratio=1.0)
    assert positive_purity(anchors, partners, truth) == 1.0


def test_pseudo_labels_deterministic_and_validated():
    x = np.random.default_rng(1).normal(size=(300, 8))
    np.testing.assert_array_equal(pseudo_labels(x, 5, seed=3), pseudo_labels(x, 5, seed=3))
    with pytest.raises(ValueError, match="n_clusters"):
        pseudo_labels(x, 301, seed=0)
    with pytest.raises(ValueError, match="2-D"):
        pseudo_labels(x[:, 0], 2, seed=0)


# --------------------------------------------------------------------------------- resolve_partner_labels


def test_resolve_partner_labels_dispatch():
    true = _labels({0: 20, 1: 20, 2: 20}, n_unlabelled=4)
    kw = {"label_accuracy": 0.6, "n_clusters": 3, "num_classes": 3}
    resolved = resolve_partner_labels("true", true, rng=np.random.default_rng(0), **kw)
    np.testing.assert_array_equal(resolved, true)
    assert resolved is not true
    noisy = resolve_partner_labels("noisy", true, rng=np.random.default_rng(0), **kw)
    np.testing.assert_array_equal(noisy, noisy_labels(true, 0.6, np.random.default_rng(0), 3))
    x, _ = _blobs(3, 20, seed=1)
    x = np.concatenate([x, x[:4]])
    pseudo = resolve_partner_labels("pseudo", true, rng=np.random.default_rng(0), features=x, **kw)
    assert pseudo.shape == true.shape and set(pseudo.tolist()) == {0, 1, 2}
    with pytest.raises(ValueError, match="features"):
        resolve_partner_labels("pseudo", true, rng=np.random.default_rng(0), **kw)
    with pytest.raises(ValueError, match="label_source"):
        resolve_partner_labels("oracle", true, rng=np.random.default_rng(0), **kw)


# ------------------------------------------------------------------------------------------- determinism


DETERMINISM_LABELS = _labels({0: 12, 1: 9, 2: 15}, n_unlabelled=5)


@pytest.mark.parametrize(
    "call",
    [
        lambda rng: random_batches(DETERMINISM_LABELS, 4, rng),
        lambda rng: one_per_class_batches(DETERMINISM_LABELS, 4, rng),
        lambda rng: single_class_batches(DETERMINISM_LABELS, 4, rng, class_order="fixed"),
        lambda rng: single_class_batches(DETERMINISM_LABELS, 4, rng, class_order="shuffled"),
        lambda rng: [soft_class(np.arange(41), DETERMINISM_LABELS, rng, sp_ratio=0.5)],
        lambda rng: [noisy_labels(DETERMINISM_LABELS, 0.6, rng, 3)],
        lambda rng: [
            resolve_partner_labels(
                "pseudo",
                DETERMINISM_LABELS,
                label_accuracy=1.0,
                n_clusters=3,
                rng=rng,
                features=np.random.default_rng(0).normal(size=(41, 4)),
                num_classes=3,
            )
        ],
    ],
    ids=["random", "one_per_class", "single_fixed", "single_shuffled", "soft_class", "noisy", "pseudo"],
)
def test_deterministic_given_seed(call):
    first, second = call(np.random.default_rng(42)), call(np.random.default_rng(42))
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_samplers_reshuffle_with_another_seed(name):
    fn = SAMPLERS[name]
    a = np.concatenate(fn(DETERMINISM_LABELS, 4, np.random.default_rng(0)))
    b = np.concatenate(fn(DETERMINISM_LABELS, 4, np.random.default_rng(1)))
    assert not np.array_equal(a, b)


def test_data_that_a_sampler_or_label_source_cannot_use_is_a_user_error():
    from trainables.errors import UserError
    from trainables.sampling import noisy_labels, one_per_class_batches, pseudo_labels, single_class_batches

    rng = np.random.default_rng(0)
    one_class = np.zeros(8, dtype=np.int64)
    with pytest.raises(UserError, match="one_per_class sampler needs at least 2 classes"):
        one_per_class_batches(one_class, 4, rng)
    with pytest.raises(UserError, match="single_class sampler needs labelled items"):
        single_class_batches(np.full(8, -1), 4, rng)
    with pytest.raises(UserError, match="label_source 'noisy' needs at least 2 classes"):
        noisy_labels(one_class, 0.5, rng, num_classes=1)
    with pytest.raises(UserError, match=r"`n_clusters` is 20 but must be an integer in \[2, 8\]"):
        pseudo_labels(rng.standard_normal((8, 3)), 20, seed=0)
    with pytest.raises(ValueError) as info:  # a caller's bug (a 2-D label array) stays a plain ValueError
        one_per_class_batches(np.zeros((2, 2), dtype=np.int64), 4, rng)
    assert not isinstance(info.value, UserError)
