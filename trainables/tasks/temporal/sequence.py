"""Synthetic temporal sequence and time-based positives of Aubret et al. (STRATEGIES.md section 5(a)).

The learning signal of time contrast is not the frame pairs inside one object video but the pairs that straddle a
clip boundary: the neighbour clip is usually *another object of the same room*, which is what pulls objects of one
context together. The knobs that set how often that happens are the clip length (1 + Poisson(``crop_number``)),
the temporal window ``delta`` and the room switch probability ``p_change_room``; with the defaults (7, 2, 0.1)
about 15% of the positive pairs cross a boundary and about 90% of those stay in the room.

Pipeline, as in ``MVImgNet.create_temporal_sequence`` / ``crop_objects``:

1. :func:`split_clips` cuts every object video into consecutive clips;
2. :func:`build_sequence` chains a ``chunk_ratio`` share of the clips into one sequence, room by room;
3. :func:`temporal_positives` draws, for a sequence position k, the partner a time shift d away (:func:`walk`).

:func:`sequence_from_frames` runs 1 and 2 from per-frame labels. Frames the sequence never visits are not training
frames any more; ``Sequence.frames`` is the training set.

The defaults reproduce the original code (neuroai-arena/ObjectSemanticSimilarity, master e2fed23,
``utils/datasets.py``): the boundary walk of ``interval_sampling`` (lines 358-399), which skips one frame per clip
boundary it crosses; the room walk of ``create_temporal_sequence`` (lines 297-341), including its p = 0 room cap
(``count > limit``, the start clip not counted) that lets a capped room be visited again, and its clip count,
ceil(chunk_ratio x n_clips) + 1. The only deviation: where the original raises (one room left with clips, or
chunk_ratio 1) the sequence here stays in the room or stops when every clip is used.

Everything is pure numpy and deterministic in the ``np.random.Generator`` (or seed) passed in.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from collections.abc import Sequence as Seq
from dataclasses import dataclass

import numpy as np

from trainables.errors import UserError

__all__ = [
    "Clips",
    "Sequence",
    "WALKS",
    "build_sequence",
    "clip_crossing_fraction",
    "crossing_stats",
    "expected_crossing_stats",
    "mean_clip_length",
    "balanced_room_map",
    "room_switch_rate",
    "sequence_from_frames",
    "split_clips",
    "temporal_positives",
    "video_order",
    "walk",
]

WALKS = ("original", "exact")
"""Boundary walks of :func:`temporal_positives`: ``original`` (default) is the original code's, which skips one
frame per clip boundary crossed; ``exact`` moves exactly |d| positions, the paper's "frame k + d", kept as the
control that shows what the skip changes (it lowers the same-room share of cross-object positives at short clips)."""


@dataclass(frozen=True)
class Clips:
    """Clips in object-major order; clip c covers ``frames[offsets[c]:offsets[c + 1]]``, consecutive video frames.

    Attributes:
        obj: object of each clip (an id from ``object_ids``, else an index into ``object_lengths``). Shape (n_clips,).
        start: first frame of the clip, counted within its object video. Shape (n_clips,).
        length: frames in the clip, >= 1. Shape (n_clips,).
        offsets: clip boundaries in ``frames``. Shape (n_clips + 1,).
        frames: global frame index of every clip frame, clip after clip. Shape (sum(length),).
    """

    obj: np.ndarray
    start: np.ndarray
    length: np.ndarray
    offsets: np.ndarray
    frames: np.ndarray

    def __len__(self) -> int:
        return len(self.length)


@dataclass(frozen=True)
class Sequence:
    """The training sequence: position k holds frame ``frames[k]``; positions are what time contrast walks along.

    Attributes:
        frames: global frame index per position; the frames kept for training. Shape (T,).
        clip: clip id (index into the :class:`Clips`) per position. Shape (T,).
        obj: object per position. Shape (T,).
        room: room (context) label per position, as given in ``clip_room``. Shape (T,).
        clip_order: clip ids in sequence order. Shape (m,).
        boundaries: clip ``clip_order[i]`` covers positions ``boundaries[i]:boundaries[i + 1]``. Shape (m + 1,).
        forced: whether the i-th clip was reached by a forced switch (its predecessor's room was exhausted or, at
            p = 0, past its cap); separates the voluntary switch rate, which is ``p_change_room``. Shape (m,).
    """

    frames: np.ndarray
    clip: np.ndarray
    obj: np.ndarray
    room: np.ndarray
    clip_order: np.ndarray
    boundaries: np.ndarray
    forced: np.ndarray

    def __len__(self) -> int:
        return len(self.frames)


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _py(x):
    return x.item() if isinstance(x, np.generic) else x


def video_order(obj: np.ndarray, frame_index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Order the frames of every object by their frame index, so that clips can be cut as contiguous runs.

    Gaps in ``frame_index`` (subsampled videos) are allowed: consecutive means consecutive among the given frames.

    Returns:
        ``(object_ids, object_lengths, order)``: the sorted unique objects, their frame counts, and the permutation
        of the frames that lists them object after object in video order.

    Raises:
        ValueError: shapes differ, or an (object, frame index) pair repeats.
    """
    obj, frame_index = np.asarray(obj), np.asarray(frame_index)
    if obj.ndim != 1 or obj.shape != frame_index.shape:
        raise ValueError(f"`obj` and `frame_index` must be 1-D of one shape; got {obj.shape}, {frame_index.shape}")
    order = np.lexsort((frame_index, obj))
    o, f = obj[order], frame_index[order]
    if ((o[1:] == o[:-1]) & (f[1:] == f[:-1])).any():
        raise ValueError("an (object, frame index) pair occurs twice")
    object_ids, object_lengths = np.unique(o, return_counts=True)
    return object_ids, object_lengths, order


def split_clips(
    object_lengths: np.ndarray,
    crop_number: float | None,
    rng: np.random.Generator | int | None,
    *,
    frame_order: np.ndarray | None = None,
    object_ids: np.ndarray | None = None,
) -> Clips:
    """Cut every object video into consecutive clips of 1 + Poisson(crop_number) frames, the last one truncated.

    Short clips are what make boundary crossings, and so cross-object positives, frequent. ``crop_number`` 0 or
    None keeps each object whole, as the original does (``if args.crop_number``), not clips of one frame.

    Args:
        object_lengths: frames per object video. Shape (n_objects,).
        crop_number: Poisson mean of the clip length minus one.
        rng: generator or seed.
        frame_order: global frame index of the frames listed object after object in video order (the ``order`` of
            :func:`video_order`). Default: frames are stored that way already, ``arange(sum(object_lengths))``.
        object_ids: ids to report in ``Clips.obj``. Default: the index into ``object_lengths``.
    """
    lengths = np.asarray(object_lengths, dtype=np.int64)
    if lengths.ndim != 1 or (lengths < 0).any():
        raise ValueError("`object_lengths` must be a 1-D array of non-negative counts")
    if crop_number is not None and crop_number < 0:
        raise UserError(f"`crop_number` must be >= 0 (0 keeps objects whole); got {crop_number}: set crop_number >= 0")
    n_frames = int(lengths.sum())
    frames = np.arange(n_frames) if frame_order is None else np.asarray(frame_order, dtype=np.int64)
    if frames.shape != (n_frames,):
        raise ValueError(f"`frame_order` must have shape ({n_frames},); got {frames.shape}")
    ids = np.arange(len(lengths)) if object_ids is None else np.asarray(object_ids)
    if ids.shape != lengths.shape:
        raise ValueError(f"`object_ids` must have shape {lengths.shape}; got {ids.shape}")
    seg_start = np.cumsum(lengths) - lengths
    seg_obj = np.repeat(np.arange(len(lengths)), lengths)
    if crop_number:
        # One draw per frame bounds the clips an object can need. Within the object's own block of draws, a clip
        # starts at 0 and at every cumulative length still inside the video; the first cumulative length past the
        # end truncates the last clip.
        draws = 1 + _rng(rng).poisson(crop_number, size=n_frames).astype(np.int64)
        cum = np.cumsum(draws)
        local = cum - np.repeat(np.concatenate([[0], cum]).astype(np.int64)[seg_start], lengths)
        inside = local < lengths[seg_obj]
        starts = np.sort(np.concatenate([seg_start[lengths > 0], (seg_start[seg_obj] + local)[inside]]))
    else:
        starts = seg_start[lengths > 0]
    ends = np.append(starts[1:], n_frames)
    obj_idx = seg_obj[starts]
    offsets = np.append(starts, n_frames)
    return Clips(obj=ids[obj_idx], start=starts - seg_start[obj_idx], length=ends - starts, offsets=offsets,
                 frames=frames)


def build_sequence(
    clips: Clips,
    clip_room: np.ndarray,
    p_change_room: float = 0.1,
    chunk_ratio: float = 0.8,
    rng: np.random.Generator | int | None = None,
) -> Sequence:
    """Chain clips into one sequence that stays in a room for ~1 / p_change_room clips, as a person moving
    through rooms would see objects: ``create_temporal_sequence`` (original ``utils/datasets.py`` lines 297-341).

    The start room is drawn in proportion to the clips each room holds; each step takes the next clip of the current
    room's shuffled list. Before every further clip the room changes with probability ``p_change_room``, to another
    room with clips left, drawn in proportion to its remaining clips; the change is forced when the current room has
    none left. With ``p_change_room`` 0 the change is also forced once the current room has given more than
    chunk_ratio x its clips, its start clip not counted (the original's ``count_per_room > limit``): without that
    cap a p = 0 sequence would drain rooms one after the other and never visit the last ones. As in the original
    the cap only forces the switch away: a capped room can be drawn again, gives one clip and is left at once, so
    p = 0 sequences switch a little more often than once per room. The sequence ends after ceil(chunk_ratio x all
    clips) + 1 clips, as the original's loop (``while cpt < chunk_ratio_limit * total_length``, after the start
    clip), or when every clip is used; when a switch is due but no other room has clips the sequence stays (the
    original raises). Unvisited clips are dropped.

    Random numbers are drawn up front (room permutations, then one switch and one room draw per step), so sequences
    built with one seed and different ``p_change_room`` share each room's clip order.

    Args:
        clips: from :func:`split_clips`.
        clip_room: room label of each clip. Shape (n_clips,).
        p_change_room: probability of a voluntary room change before each clip, in [0, 1].
        chunk_ratio: share of the clips the sequence uses, in (0, 1].
        rng: generator or seed.
    """
    room_of = np.asarray(clip_room)
    n = len(clips)
    if room_of.shape != (n,):
        raise ValueError(f"`clip_room` must have shape ({n},); got {room_of.shape}")
    if not 0.0 <= p_change_room <= 1.0:
        raise UserError(f"`p_change_room` must lie in [0, 1]; got {p_change_room}: set it to a probability")
    if not 0.0 < chunk_ratio <= 1.0:
        raise UserError(f"`chunk_ratio` must lie in (0, 1]; got {chunk_ratio}: set it to the share of clips to use")
    if n == 0:
        raise ValueError("no clips")
    rng = _rng(rng)
    room_ids, room_idx = np.unique(room_of, return_inverse=True)
    n_rooms = len(room_ids)
    lists = [rng.permutation(np.flatnonzero(room_idx == r)) for r in range(n_rooms)]
    size = np.array([len(x) for x in lists], dtype=np.int64)
    limit = chunk_ratio * size  # float, as the original's limit_object_in_room
    capping = p_change_room == 0.0
    n_target = min(n, math.ceil(chunk_ratio * n) + 1)  # the start clip, then `while cpt < chunk_ratio * n`
    u_switch, u_room = rng.random(n_target), rng.random(n_target)
    taken = np.zeros(n_rooms, dtype=np.int64)

    def draw(mask: np.ndarray, u: float) -> int:
        cum = np.cumsum(np.where(mask, size - taken, 0))
        return int(np.searchsorted(cum, u * cum[-1], side="right"))

    room = start = draw(size > 0, u_room[0])
    order, forced = [], []
    for step in range(n_target):
        was_forced = False
        if step:
            left = taken < size
            # The original counts a room's clips from the second clip of the sequence on (`count_per_room`).
            was_forced = not left[room] or (capping and taken[room] - (room == start) > limit[room])
            if was_forced or u_switch[step] < p_change_room:
                others = left.copy()
                others[room] = False
                if others.any():
                    room = draw(others, u_room[step])
                elif not left[room]:  # every clip used
                    break
        order.append(lists[room][taken[room]])
        forced.append(was_forced)
        taken[room] += 1
    clip_order = np.asarray(order, dtype=np.int64)
    lens = clips.length[clip_order]
    boundaries = np.concatenate([[0], np.cumsum(lens)])
    clip = np.repeat(clip_order, lens)
    within = np.arange(boundaries[-1]) - np.repeat(boundaries[:-1], lens)
    return Sequence(
        frames=clips.frames[clips.offsets[clip] + within],
        clip=clip,
        obj=clips.obj[clip],
        room=room_of[clip],
        clip_order=clip_order,
        boundaries=boundaries,
        forced=np.asarray(forced, dtype=bool),
    )


def sequence_from_frames(
    obj: np.ndarray,
    category: np.ndarray,
    frame_index: np.ndarray,
    category_room: Mapping[Hashable, Hashable],
    crop_number: float | None = 7,
    p_change_room: float = 0.1,
    chunk_ratio: float = 0.8,
    rng: np.random.Generator | int | None = 0,
) -> Sequence:
    """Per-frame labels to training sequence; the original builds it once per (p_change_room, crop_number, seed).

    Args:
        obj, category, frame_index: per training frame; an object has one category. Shape (n_frames,) each.
        category_room: room of every category present. Categories without a room ("Uncertain" in the original)
            must be filtered out by the caller.
        crop_number, p_change_room, chunk_ratio: see :func:`split_clips` and :func:`build_sequence`.
        rng: generator or seed; one generator serves both steps.

    Raises:
        ValueError: an object has several categories, or a category has no room.
    """
    category = np.asarray(category)
    object_ids, object_lengths, order = video_order(obj, frame_index)
    if category.shape != order.shape:
        raise ValueError(f"`category` must have shape {order.shape}; got {category.shape}")
    cat_sorted = category[order]
    first = np.cumsum(object_lengths) - object_lengths
    object_cat = cat_sorted[first]
    if (np.repeat(object_cat, object_lengths) != cat_sorted).any():
        raise ValueError("an object has frames of several categories")
    room_lookup = {_py(k): v for k, v in category_room.items()}
    missing = {_py(c) for c in np.unique(object_cat)} - set(room_lookup)
    if missing:
        raise ValueError(f"categories without a room: {sorted(missing)[:10]}")
    rng = _rng(rng)
    clips = split_clips(object_lengths, crop_number, rng, frame_order=order, object_ids=object_ids)
    obj_pos = np.searchsorted(object_ids, clips.obj)
    clip_room = np.array([room_lookup[_py(c)] for c in object_cat[obj_pos]])
    return build_sequence(clips, clip_room, p_change_room, chunk_ratio, rng)


def walk(sequence: Sequence, positions: np.ndarray, d: np.ndarray, how: str = "original") -> np.ndarray:
    """The position reached from each anchor position by a time shift d (same shape), clamped to the sequence.

    ``original`` is the original's ``interval_sampling`` (``utils/datasets.py`` lines 358-399): a shift that leaves
    the clip carries its overshoot into the neighbouring clip counted from that clip's *last* frame going backward
    (``frame_index = frame[prev_obj]``, then ``frame_index + time_shift``, lines 373-379) and from its *first* frame
    going forward (lines 395-399), so each boundary crossed costs one extra position: the partner is k + d +
    sign(d) x (boundaries crossed), and a one-frame clip is jumped over. Put otherwise, a forward walk steps over
    the positions after k that are not a clip's first frame, a backward walk over those before k that are not a
    clip's last frame; with fewer than |d| of them it stops at position T - 1 or 0, where the original clamps
    (``next_obj == -2`` / ``prev_obj == -2``). ``exact`` is k + d clamped to 0..T - 1. Both cross a clip for the
    same (k, d): only where a crossing lands differs.
    """
    k, d = np.asarray(positions, dtype=np.int64), np.asarray(d, dtype=np.int64)
    last = len(sequence) - 1
    if how == "exact":
        return np.clip(k + d, 0, last)
    if how != "original":
        raise ValueError(f"unknown walk {how!r}; expected one of {', '.join(WALKS)}")
    edge = np.zeros(len(sequence), dtype=bool)
    edge[sequence.boundaries[:-1]] = True
    fwd = np.flatnonzero(~edge)  # positions a forward walk can land on
    edge[:] = False
    edge[sequence.boundaries[1:] - 1] = True
    bwd = np.flatnonzero(~edge)  # and a backward one
    out = k.copy()
    ahead = d > 0
    i = np.searchsorted(fwd, k[ahead], side="right") + d[ahead] - 1
    out[ahead] = np.where(i < len(fwd), fwd[np.minimum(i, len(fwd) - 1)], last)
    back = d < 0
    i = np.searchsorted(bwd, k[back], side="left") + d[back]
    out[back] = np.where(i >= 0, bwd[np.maximum(i, 0)], 0)
    return out


def temporal_positives(
    sequence: Sequence,
    delta: int,
    rng: np.random.Generator | int | None,
    positions: np.ndarray | None = None,
    how: str = "original",
) -> np.ndarray:
    """Partner of each anchor position k after a time shift d ~ Uniform{-delta..delta}: the time-contrast positive.

    d = 0 is allowed (the same frame, seen through another crop). A shift past a clip edge lands in a neighbouring
    clip, usually another object of the same room: the cross-object positives the method relies on. Inside a clip the
    partner is k + d; across boundaries :func:`walk` ``how`` decides, by default as the original does (one frame
    skipped per boundary). Partners are **clamped** to the sequence ends, as the original clamps at its first and
    last frame, rather than reflected.

    Args:
        sequence: from :func:`build_sequence`.
        delta: the window Delta (``--rotation_range``, 2 in the paper), >= 0.
        rng: generator or seed.
        positions: anchor positions; default every position. Sample anchors with ``rng.integers(0, len(sequence),
            n)``. Map positions to frames with ``sequence.frames``.
        how: one of :data:`WALKS`.

    Returns:
        Partner positions, one per anchor. Shape like ``positions``.
    """
    if delta < 0:
        raise UserError(f"`delta` must be >= 0; got {delta}: set delta to a window of 0 or more steps")
    k = np.arange(len(sequence)) if positions is None else np.asarray(positions, dtype=np.int64)
    if k.size and (k.min() < 0 or k.max() >= len(sequence)):
        raise ValueError(f"`positions` must lie in 0..{len(sequence) - 1}")
    d = _rng(rng).integers(-delta, delta + 1, size=k.shape)
    return walk(sequence, k, d, how)


def balanced_room_map(
    categories: Seq[Hashable] | np.ndarray, rooms: int | Seq[Hashable], rng: np.random.Generator | int | None
) -> dict:
    """Balanced random category -> room map (the paper's ``room_assignment_balanced_random_*`` control): keeps the
    room sizes of a balanced map but breaks any semantic link between a room and its categories.

    Args:
        categories: distinct category ids.
        rooms: room labels, or their number (labels 0..rooms - 1).

    Returns:
        ``{category: room}``; room sizes differ by at most one.
    """
    cats = list(categories)
    labels = list(range(rooms)) if isinstance(rooms, int) else list(rooms)
    if not labels:
        raise ValueError("no rooms")
    if len(set(cats)) != len(cats):
        raise ValueError("`categories` must be distinct")
    rng = _rng(rng)
    cat_perm, room_perm = rng.permutation(len(cats)), rng.permutation(len(labels))
    return {cats[c]: labels[room_perm[i % len(labels)]] for i, c in enumerate(cat_perm)}


# ---------------------------------------------------------------- statistics


def mean_clip_length(clips: Clips | Sequence) -> float:
    """Mean frames per clip, of all clips or of the clips a sequence uses (sets the crossing rate, ~ 1 / length)."""
    lengths = clips.length if isinstance(clips, Clips) else np.diff(clips.boundaries)
    return float(lengths.mean())


def room_switch_rate(sequence: Sequence, voluntary: bool = False) -> float:
    """Share of clip-to-clip transitions that change room; ``voluntary`` leaves out forced switches, so that the
    rate estimates ``p_change_room`` itself. NaN without transitions."""
    rooms = sequence.room[sequence.boundaries[:-1]]
    switched = rooms[1:] != rooms[:-1]
    if voluntary:
        switched = switched[~sequence.forced[1:]]
    return float(switched.mean()) if switched.size else float("nan")


def crossing_stats(sequence: Sequence, anchors: np.ndarray, partners: np.ndarray) -> dict[str, float]:
    """How many (anchor, partner) position pairs straddle a clip or an object, and how many object crossings stay
    in the room: the share of cross-object positives and how context-pure they are.

    Returns:
        ``cross_clip``, ``cross_object`` (shares of all pairs) and ``same_room`` (share of object-crossing pairs in
        one room; NaN if none cross).
    """
    a, p = np.asarray(anchors), np.asarray(partners)
    if a.shape != p.shape or a.size == 0:
        raise ValueError("`anchors` and `partners` must be non-empty and of one shape")
    cross_obj = sequence.obj[a] != sequence.obj[p]
    same_room = sequence.room[a][cross_obj] == sequence.room[p][cross_obj]
    return {
        "cross_clip": float((sequence.clip[a] != sequence.clip[p]).mean()),
        "cross_object": float(cross_obj.mean()),
        "same_room": float(same_room.mean()) if same_room.size else float("nan"),
    }


def expected_crossing_stats(sequence: Sequence, delta: int, how: str = "original") -> dict[str, float]:
    """:func:`crossing_stats` in expectation over every position and every d in -delta..delta, walked as in
    :func:`temporal_positives` with ``how``: the exact value that sampled pairs estimate, by enumeration."""
    k = np.arange(len(sequence))
    anchors = np.tile(k, 2 * delta + 1)
    partners = walk(sequence, anchors, np.repeat(np.arange(-delta, delta + 1), len(k)), how)
    return crossing_stats(sequence, anchors, partners)


def clip_crossing_fraction(lengths: np.ndarray, delta: int) -> float:
    """Share of (position, d) pairs whose partner leaves its clip, for clips of these lengths in an endless
    sequence: a clip of length L >= delta has delta(delta + 1) crossing pairs out of (2 delta + 1) L, a shorter one
    L(2 delta + 1 - L). Defaults (mean length ~8, delta 2) give ~0.15; a finite sequence loses the crossings past
    its two ends."""
    L = np.asarray(lengths, dtype=np.float64)
    crossing = np.where(L >= delta, delta * (delta + 1), L * (2 * delta + 1 - L))
    return float(crossing.sum() / ((2 * delta + 1) * L.sum()))
