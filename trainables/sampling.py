"""Data-side parts of a strategy: batch samplers, positive constructors and the label sources they read.

Wang et al. (STRATEGIES.md section 4) change only *which items share a batch* (the negatives) and
*which item supplies the second view* (the positive); the loss is the same for all of them. Both are
expressed here on integer index arrays, so that the trial can apply them to any dataset and any loss:

- a batch sampler ``fn(labels, batch_size, rng, **knobs) -> list[np.ndarray]`` gives the index
  batches of one epoch;
- a positive constructor ``fn(anchors, labels, rng, **knobs) -> np.ndarray`` gives, for each anchor
  index, the index of the item whose augmentation is the anchor's positive (its "partner").

Labels are int arrays of shape (n,) with -1 for an unlabelled item. Everything is deterministic given
the ``np.random.Generator`` (or seed) passed in, and uses only numpy and scikit-learn.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from trainables.errors import UserError

__all__ = [
    "POSITIVES",
    "SAMPLERS",
    "UNLABELLED",
    "LabelIndex",
    "noisy_labels",
    "one_per_class_batches",
    "positive_purity",
    "pseudo_labels",
    "random_batches",
    "resolve_partner_labels",
    "same_instance",
    "single_class_batches",
    "soft_class",
]

UNLABELLED = -1


def _as_labels(labels: Any) -> np.ndarray:
    """``labels`` as a 1-D int64 array; a float or 2-D label array is a caller bug, so ValueError."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must be integers (-1 = unlabelled), got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < UNLABELLED:
        raise ValueError(f"labels must be >= 0, or -1 for unlabelled; got {arr.min()}")
    return arr


def _check_batch_size(batch_size: int, minimum: int = 1) -> int:
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < minimum:
        raise ValueError(f"batch_size must be an integer >= {minimum}, got {batch_size!r}")
    return int(batch_size)


def _grouped_by_class(labels: np.ndarray, rng: np.random.Generator | None) -> tuple[np.ndarray, ...]:
    """Labelled item indices sorted by class, shuffled within each class when ``rng`` is given.

    Returns ``(order, classes, starts, counts)``: the items of ``classes[j]`` are
    ``order[starts[j] : starts[j] + counts[j]]``. One lexsort, no Python loop over items.
    """
    labelled = np.flatnonzero(labels != UNLABELLED)
    if rng is None:
        order = labelled[np.argsort(labels[labelled], kind="stable")]
    else:
        order = labelled[np.lexsort((rng.random(labelled.size), labels[labelled]))]
    classes, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    return order, classes, starts, counts


# --------------------------------------------------------------------------------------- batch samplers


def random_batches(labels: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A fresh permutation of all n items cut into batches, drop_last (SimCLR's and Wang's loaders).

    A trailing batch smaller than ``batch_size`` is dropped, so that every batch has the same number
    of negatives; if n < batch_size the epoch is one batch of all n items. Only len(labels) is read.
    """
    n = _as_labels(labels).size
    batch_size = _check_batch_size(batch_size)
    perm = rng.permutation(n)
    if n == 0:
        return []
    if n < batch_size:
        return [perm]
    n_full = n // batch_size
    return list(perm[: n_full * batch_size].reshape(n_full, batch_size))


def random_keep_last_batches(labels: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Every item once per epoch: a fresh permutation cut into batches, the last smaller one kept (Xie et al.'s
    caption loader has no drop_last; its hinge loss needs no fixed B). A last batch of one item has no negative
    and is dropped. Only len(labels) is read."""
    n = _as_labels(labels).size
    batch_size = _check_batch_size(batch_size)
    perm = rng.permutation(n)
    return [b for b in (perm[i : i + batch_size] for i in range(0, n, batch_size)) if b.size >= 2]


def one_per_class_batches(labels: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Easy negatives: each batch holds exactly one item of every class, so no negative is same-class.

    As in Wang et al. (a StratifiedKFold with one clip per class per fold), the batch size is the
    number of classes present, **whatever ``batch_size`` says** (it is accepted for the common
    signature only). Every class is shuffled per epoch and batch k takes the k-th item of each class,
    in ascending class order. There are as many batches as the smallest class has items; the surplus
    items of larger classes are left out this epoch (the shuffle picks others next epoch).
    Unlabelled items (-1) are never used.
    """
    labels = _as_labels(labels)
    _check_batch_size(batch_size)
    order, classes, starts, counts = _grouped_by_class(labels, rng)
    if classes.size == 0:
        raise UserError("the one_per_class sampler needs labelled items, but every label is -1 (unlabelled); use a "
                        "labelled dataset or a strategy with the random sampler")
    if classes.size < 2:
        raise UserError(f"the one_per_class sampler needs at least 2 classes for negatives, but the data has only "
                        f"class {classes[0]}; use a dataset with 2 or more classes, or a strategy with the random "
                        "sampler")
    n_batches = int(counts.min())
    grid = order[starts[:, None] + np.arange(n_batches)[None, :]]  # (classes, batches)
    return list(grid.T.copy())


def single_class_batches(
    labels: np.ndarray, batch_size: int, rng: np.random.Generator, *, class_order: str = "fixed"
) -> list[np.ndarray]:
    """Hard negatives: every batch comes from one class, so every negative is a same-class item.

    Each class is shuffled and cut into consecutive chunks of ``batch_size`` (the last chunk holds the
    remainder); a chunk of fewer than 2 items has no negative and is dropped. ``class_order="fixed"``
    visits the batches class by class in ascending class order, as Wang et al. do (so BN also sees
    single-class batches in a fixed sequence); ``"shuffled"`` shuffles the list of batches.
    Unlabelled items (-1) are never used.
    """
    labels = _as_labels(labels)
    batch_size = _check_batch_size(batch_size, minimum=2)
    if class_order not in ("fixed", "shuffled"):
        raise ValueError(f"`class_order` is {class_order!r} but must be one of fixed, shuffled")
    order, classes, starts, counts = _grouped_by_class(labels, rng)
    if classes.size == 0:
        raise UserError("the single_class sampler needs labelled items, but every label is -1 (unlabelled); use a "
                        "labelled dataset or a strategy with the random sampler")
    batches = []
    for start, count in zip(starts.tolist(), counts.tolist(), strict=True):  # over classes, not items
        for lo in range(start, start + count, batch_size):
            chunk = order[lo : min(lo + batch_size, start + count)]
            if chunk.size >= 2:
                batches.append(chunk)
    if class_order == "shuffled":
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


# ------------------------------------------------------------------------------- positive constructors


class LabelIndex:
    """Items grouped by label (one argsort plus offsets), built once per label vector.

    Drawing same-label partners for a batch is then O(batch) with one ``rng.integers`` call instead of
    a scan of the dataset. Build a new one when the labels change (e.g. fresh pseudo-labels).
    """

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = _as_labels(labels)
        self.order, self.classes, self.starts, self.counts = _grouped_by_class(self.labels, None)

    def __len__(self) -> int:
        return self.labels.size

    def members(self, label: int) -> np.ndarray:
        """Indices of the items that carry ``label`` (empty for -1 or an absent label)."""
        j = int(np.searchsorted(self.classes, label))
        if j == self.classes.size or self.classes[j] != label:
            return self.order[:0]
        return self.order[self.starts[j] : self.starts[j] + self.counts[j]]

    def sample_same_label(self, anchors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """For each anchor, an item drawn uniformly from all items with its label (possibly itself).

        Unlabelled anchors get themselves.
        """
        anchors = np.asarray(anchors, dtype=np.int64)
        lab = self.labels[anchors]
        labelled = lab != UNLABELLED  # a labelled anchor's class is in self.classes: it holds the anchor
        if self.classes.size == 0:
            return anchors.copy()
        j = np.where(labelled, np.searchsorted(self.classes, lab), 0)
        offsets = rng.integers(0, np.where(labelled, self.counts[j], 1))
        return np.where(labelled, self.order[self.starts[j] + offsets], anchors)


def same_instance(
    anchors: np.ndarray, labels: np.ndarray | LabelIndex, rng: np.random.Generator
) -> np.ndarray:
    """The anchor itself: the second view is another augmentation of the same item (SimCLR, HCL, DCL)."""
    return np.array(anchors, dtype=np.int64, copy=True)


def soft_class(
    anchors: np.ndarray,
    labels: np.ndarray | LabelIndex,
    rng: np.random.Generator,
    *,
    sp_ratio: float,
    label_source: str | None = None,
    label_accuracy: float | None = None,
    n_clusters: int | None = None,
) -> np.ndarray:
    """Wang et al.'s soft positive: with probability ``sp_ratio`` the partner is a same-label item.

    The partner is drawn uniformly from *all* items of the dataset whose label equals the anchor's
    (the anchor itself included, as in Wang et al.); otherwise it is the anchor. ``labels`` are the
    label source's labels (true, noisy or pseudo, see :func:`resolve_partner_labels`), as an array
    or, to avoid regrouping at every batch, as a prebuilt :class:`LabelIndex`. Unlabelled anchors
    (-1) keep themselves.

    ``label_source``, ``label_accuracy`` and ``n_clusters`` are consumed by
    :func:`resolve_partner_labels`; they are accepted and ignored here so that the resolved knobs of
    the positive part can be passed as ``**knobs``.
    """
    if isinstance(sp_ratio, bool) or not 0.0 <= float(sp_ratio) <= 1.0:
        raise ValueError(f"`sp_ratio` is {sp_ratio!r} but must be in [0, 1]")
    index = labels if isinstance(labels, LabelIndex) else LabelIndex(labels)
    anchors = np.asarray(anchors, dtype=np.int64)
    swap = rng.random(anchors.shape) < float(sp_ratio)
    partners = index.sample_same_label(anchors.ravel(), rng).reshape(anchors.shape)
    return np.where(swap, partners, anchors)


# ---------------------------------------------------------------------------------------- label sources


def noisy_labels(
    labels: np.ndarray, label_accuracy: float, rng: np.random.Generator, num_classes: int | None = None
) -> np.ndarray:
    """Labels corrupted as in Wang et al.'s SP70: a fixed share of every class gets a random wrong class.

    For each class, int((1 - label_accuracy) * class_size) of its items, chosen uniformly, get a class
    drawn uniformly from the ``num_classes - 1`` wrong ones; the rest keep their label, so accuracy is
    exact per class up to rounding (a 1e-9 epsilon stops (1 - 0.7) * 10 from flooring to 2).
    Unlabelled items stay -1. ``num_classes`` defaults to max(label) + 1. Generate once per trial:
    SP70's corruption is fixed, not redrawn per epoch.
    """
    labels = _as_labels(labels)
    if isinstance(label_accuracy, bool) or not 0.0 < float(label_accuracy) <= 1.0:
        raise ValueError(f"`label_accuracy` is {label_accuracy!r} but must be in (0, 1]")
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    if labels.size and labels.max() >= num_classes:
        raise ValueError(f"label {labels.max()} is out of range for num_classes={num_classes}")
    out = labels.copy()
    order, classes, starts, counts = _grouped_by_class(labels, rng)
    n_wrong = np.floor((1.0 - float(label_accuracy)) * counts + 1e-9).astype(np.int64)
    if not n_wrong.any():
        return out
    if num_classes < 2:
        raise UserError(f"label_source 'noisy' needs at least 2 classes to have a wrong class, but the data has "
                        f"{num_classes}; use label_source: true, or a dataset with 2 or more classes")
    rank = np.arange(order.size) - np.repeat(starts, counts)  # position within the shuffled class
    flipped = order[rank < np.repeat(n_wrong, counts)]
    wrong = rng.integers(0, num_classes - 1, size=flipped.size)
    out[flipped] = wrong + (wrong >= labels[flipped])  # uniform over the classes but the true one
    return out


def pseudo_labels(features: Any, n_clusters: int, seed: int) -> np.ndarray:
    """k-means cluster ids of the L2-normalised embeddings (PL-SP, with clusters for Wang's classifier).

    Normalising first makes Euclidean k-means follow the cosine geometry that the contrastive loss
    trains. Lloyd with n_init=3 is cheap enough to rerun every epoch (~20 ms for 1300 x 64, 1 thread).
    """
    from sklearn.cluster import KMeans

    if hasattr(features, "detach"):  # a torch tensor; avoids importing torch here
        features = features.detach().cpu().numpy()
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D array (n, d), got shape {x.shape}")
    n = x.shape[0]
    if isinstance(n_clusters, bool) or int(n_clusters) != n_clusters or not 2 <= n_clusters <= n:
        raise UserError(f"`n_clusters` is {n_clusters!r} but must be an integer in [2, {n}] (the items clustered); "
                        "lower n_clusters, or raise `limit`")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    km = KMeans(n_clusters=int(n_clusters), n_init=3, algorithm="lloyd", random_state=int(seed))
    return km.fit_predict(x).astype(np.int64)


def positive_purity(anchors: np.ndarray, partners: np.ndarray, true_labels: np.ndarray) -> float:
    """Share of labelled anchors whose partner has the anchor's TRUE class (NaN if none is labelled).

    This is what a soft positive really delivers: Wang et al.'s SP70 reaches only ~0.50, PL-SP ~0.13.
    """
    true_labels = _as_labels(true_labels)
    anchors = np.asarray(anchors, dtype=np.int64)
    partners = np.asarray(partners, dtype=np.int64)
    if anchors.shape != partners.shape:
        raise ValueError(f"anchors {anchors.shape} and partners {partners.shape} must have the same shape")
    anchor_labels = true_labels[anchors]
    labelled = anchor_labels != UNLABELLED
    if not labelled.any():
        return float("nan")
    return float(np.mean(true_labels[partners[labelled]] == anchor_labels[labelled]))


def resolve_partner_labels(
    label_source: str,
    true_labels: np.ndarray,
    *,
    label_accuracy: float,
    n_clusters: int,
    rng: np.random.Generator,
    features: Any = None,
    num_classes: int | None = None,
) -> np.ndarray:
    """The labels that define "same label" for :func:`soft_class`, chosen by ``label_source``.

    ``true``: the dataset's labels. ``noisy``: :func:`noisy_labels` at ``label_accuracy`` (call once
    per trial). ``pseudo``: :func:`pseudo_labels` of ``features`` (the current embeddings, required)
    with a seed drawn from ``rng`` (call whenever the embeddings are refreshed).
    """
    if label_source == "true":
        return _as_labels(true_labels).copy()
    if label_source == "noisy":
        return noisy_labels(true_labels, label_accuracy, rng, num_classes)
    if label_source == "pseudo":
        if features is None:
            raise ValueError("label_source='pseudo' needs `features` (the current embeddings, shape (n, d))")
        if len(features) != len(true_labels):
            raise ValueError(f"features has {len(features)} rows but there are {len(true_labels)} items")
        return pseudo_labels(features, n_clusters, int(rng.integers(2**31 - 1)))
    raise ValueError(f"`label_source` is {label_source!r} but must be one of true, noisy, pseudo")


SAMPLERS: dict[str, Callable[..., list[np.ndarray]]] = {
    "random": random_batches,
    "random_keep_last": random_keep_last_batches,
    "one_per_class": one_per_class_batches,
    "single_class": single_class_batches,
}
POSITIVES: dict[str, Callable[..., np.ndarray]] = {
    "same_instance": same_instance,
    "cross_modal": same_instance,  # the item's own other modality: the same index, in the other tensor
    "soft_class": soft_class,
}


class Positives:
    """A preset's positive constructor over one trial's labelled items (the image and audio-visual tasks).

    ``soft_class`` draws partners by the label source's labels: the true ones, noisy ones drawn once per trial
    (as Wang et al.'s fixed SP70 file) or k-means pseudo-labels of the current embeddings, refreshed every epoch.
    """

    def __init__(self, name: str, knobs: Mapping[str, Any], labels: np.ndarray, num_classes: int, seed: int) -> None:
        self.construct, self.knobs, self.labels = POSITIVES[name], dict(knobs), _as_labels(labels)
        self.num_classes, self.seed = num_classes, seed
        self.noisy = self._resolve(np.random.default_rng([seed, 7])) if knobs.get("label_source") == "noisy" else None

    @property
    def by_label(self) -> bool:
        """Whether partners depend on labels (then each epoch records their purity)."""
        return "label_source" in self.knobs

    def _resolve(self, rng: np.random.Generator, features: Any = None) -> np.ndarray:
        return resolve_partner_labels(
            self.knobs["label_source"], self.labels, label_accuracy=self.knobs["label_accuracy"],
            n_clusters=self.knobs["n_clusters"], rng=rng, features=features, num_classes=self.num_classes,
        )

    def epoch(self, epoch: int, features: Callable[[], Any]) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
        """The partner of each anchor this epoch; ``features()`` (the current embeddings) is called only for
        pseudo-labels. Grouped once per epoch: soft partners are drawn from the whole dataset, not the batch."""
        if not self.by_label:
            index: np.ndarray | LabelIndex = self.labels
        elif self.noisy is not None:
            index = LabelIndex(self.noisy)
        else:
            source = self.knobs["label_source"]
            index = LabelIndex(self._resolve(np.random.default_rng([self.seed, epoch]),
                                             features() if source == "pseudo" else None))
        return lambda anchors, rng: self.construct(anchors, index, rng, **self.knobs)
