"""Odd-one-out evaluation of Aubret et al. (STRATEGIES.md section 5(c), ``utils/odd_one_out.py``).

It asks whether an embedding groups items by context (room), by category within a room, or by object within a
category: for an anchor a, a "same" item s and a "different" item d, the triplet is correct iff d is the odd one
out, cos(a, s) > cos(a, d) **and** cos(a, s) > cos(s, d). Chance is 1/3. Only the first inequality (the older
``scripts/odd_one_out.py``) has chance 1/2; those numbers are not comparable.

Levels, as the original's ``fine_label`` 2, 1 and 3:

- ``context``: s from the anchor's room, d from any other room;
- ``category``: s from the anchor's room and category, d from another category of that room;
- ``object``: s from the anchor's room, category and object, d from another object of that room and category.

Each anchor is resampled ``repeats`` times (10 in the original), s and d uniformly from their sets. In the
original **s may be the anchor itself**, which makes the triplet correct unless d is parallel to a; that is the
default here too, for comparable numbers. It inflates the score by about (2/3) / (size of the anchor's "same"
set): nothing for rooms, but a lot at the object level, where that set is one object's few test frames (random
embeddings with 10 frames per object score ~0.40, not 1/3). ``exclude_self=True`` draws s among the other items.

An anchor with no candidate s or d is skipped (the original crashes on an empty "different" set). Inequalities are
strict, so a collapsed encoder (all cosines equal) scores 0, not chance. Zero vectors have cosine 0 with
everything, as with ``torch.nn.functional.cosine_similarity``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LEVELS", "odd_one_out", "odd_one_out_all", "odd_one_out_detail"]

LEVELS = ("context", "category", "object")
_GRAM_MAX = 4096  # up to this many items a (n, n) float32 Gram matrix (64 MiB) is cheaper than row gathers
_CHUNK = 4096  # triplets per block of row gathers, which then stay small however many anchors there are


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch; numpy has no bfloat16
        x = x.detach().cpu()
        x = (x.float() if x.is_floating_point() else x).numpy()
    return np.asarray(x)


def _groups(keys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Start and size of the contiguous group of every (sorted) item under the given key columns."""
    n = len(keys[0]) if keys else 0
    change = np.zeros(n, dtype=bool)
    change[:1] = True
    for k in keys:
        change[1:] |= k[1:] != k[:-1]
    starts = np.flatnonzero(change)
    sizes = np.diff(np.append(starts, n))
    gid = np.cumsum(change) - 1
    return starts[gid], sizes[gid]


class _Prepared:
    """Normalised embeddings and labels sorted by (room, category, object), shared by the three levels.

    Sorting makes every set of every level one contiguous block, and the "same" set a sub-block of the set d is
    drawn around, so sampling is index arithmetic. Up to ``_GRAM_MAX`` items the cosines come from one Gram matrix
    (a single matmul, ~0.05 s for 2000 x 512); beyond, from row gathers in blocks.
    """

    def __init__(self, embeddings, room, category, obj):
        e = _numpy(embeddings).astype(np.float32)
        if e.ndim != 2:
            raise ValueError(f"`embeddings` must have shape (n, dim); got {e.shape}")
        n = len(e)
        labels = [_numpy(x) for x in (room, category, obj)]
        if any(x.shape != (n,) for x in labels):
            raise ValueError(f"`room`, `category` and `obj` must have shape ({n},); got {[x.shape for x in labels]}")
        order = np.lexsort(labels[::-1])
        self.keys = [x[order] for x in labels]
        e = e[order]
        e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-8)
        self.e = e
        self.gram = e @ e.T if n <= _GRAM_MAX else None

    def cos(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        if self.gram is not None:
            return self.gram[i, j]
        out = np.empty(len(i), dtype=np.float32)
        for k in range(0, len(i), _CHUNK):
            out[k : k + _CHUNK] = (self.e[i[k : k + _CHUNK]] * self.e[j[k : k + _CHUNK]]).sum(1)
        return out

    def score(self, level: str, rng: np.random.Generator, repeats: int, exclude_self: bool) -> dict[str, float]:
        if level not in LEVELS:
            raise ValueError(f"`level` must be one of {LEVELS}; got {level!r}")
        if repeats < 1:
            raise ValueError(f"`repeats` must be >= 1; got {repeats}")
        n = len(self.e)
        depth = LEVELS.index(level)  # "same" set: first depth + 1 labels equal; d's set: first depth labels equal
        in_start, in_size = _groups(self.keys[: depth + 1])
        out_start, out_size = _groups(self.keys[:depth]) if depth else (np.zeros(n, np.int64), np.full(n, n))
        n_same = in_size - int(exclude_self)
        n_diff = out_size - in_size
        anchors = np.flatnonzero((n_same >= 1) & (n_diff >= 1))
        counts = {"n_triplets": 0, "n_anchors": len(anchors), "n_skipped": n - len(anchors)}
        if not len(anchors):
            return {"accuracy": float("nan"), **counts}
        a = np.broadcast_to(anchors, (repeats, len(anchors)))
        s = in_start[a] + rng.integers(0, n_same[a])
        if exclude_self:
            s += s >= a
        d = rng.integers(0, n_diff[a])
        d = out_start[a] + d + in_size[a] * (d >= in_start[a] - out_start[a])
        a, s, d = a.ravel(), s.ravel(), d.ravel()
        cas = self.cos(a, s)
        correct = (cas > self.cos(a, d)) & (cas > self.cos(s, d))
        return {"accuracy": float(correct.mean()), **counts, "n_triplets": len(a)}


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def odd_one_out_detail(
    embeddings,
    room,
    category,
    obj,
    level: str,
    rng: np.random.Generator | int | None = None,
    repeats: int = 10,
    exclude_self: bool = False,
) -> dict[str, float]:
    """:func:`odd_one_out` with its counts, to see how much of the test set a level could use.

    Returns:
        ``accuracy`` (NaN if no anchor is usable), ``n_triplets``, ``n_anchors`` (usable anchors) and
        ``n_skipped`` (anchors without a candidate s or d).
    """
    return _Prepared(embeddings, room, category, obj).score(level, _rng(rng), repeats, exclude_self)


def odd_one_out(
    embeddings,
    room,
    category,
    obj,
    level: str,
    rng: np.random.Generator | int | None = None,
    repeats: int = 10,
    exclude_self: bool = False,
) -> float:
    """Odd-one-out accuracy at one level; 1/3 is chance, NaN when no anchor has both an s and a d.

    Args:
        embeddings: one row per test frame, numpy or torch. Shape (n, dim).
        room, category, obj: labels per frame (ints or any sortable values). Shape (n,) each.
        level: ``context``, ``category`` or ``object``.
        rng: generator or seed.
        repeats: (s, d) draws per anchor.
        exclude_self: draw s among the other items of the "same" set (the original may draw the anchor).
    """
    return odd_one_out_detail(embeddings, room, category, obj, level, rng, repeats, exclude_self)["accuracy"]


def odd_one_out_all(
    embeddings,
    room,
    category,
    obj,
    rng: np.random.Generator | int | None = None,
    repeats: int = 10,
    exclude_self: bool = False,
) -> dict[str, float]:
    """The three levels with one generator: ``ooo_category``, ``ooo_context`` and ``ooo_object``."""
    rng, prepared = _rng(rng), _Prepared(embeddings, room, category, obj)
    return {f"ooo_{level}": prepared.score(level, rng, repeats, exclude_self)["accuracy"]
            for level in ("category", "context", "object")}
