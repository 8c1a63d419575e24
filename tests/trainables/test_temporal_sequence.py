"""trainables.tasks.temporal.sequence: clip lengths, room switching, chunk ratio, clip use, boundary crossings against a
brute-force enumeration and the closed form, the original code's boundary walk and its statistics, determinism and
the balanced random room map."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainables.errors import UserError
from trainables.tasks.temporal.sequence import (
    WALKS,
    Clips,
    Sequence,
    balanced_room_map,
    build_sequence,
    clip_crossing_fraction,
    crossing_stats,
    expected_crossing_stats,
    mean_clip_length,
    room_switch_rate,
    sequence_from_frames,
    split_clips,
    temporal_positives,
    video_order,
    walk,
)

N_ROOMS, CATS_PER_ROOM, OBJS_PER_CAT, FRAMES = 8, 4, 8, 80  # 256 objects, 20480 frames, ~2600 clips at crop 7


def frame_table(seed=0, frames=FRAMES):
    """Per-frame labels in shuffled storage order, as a dataset would hand them over."""
    n_obj = N_ROOMS * CATS_PER_ROOM * OBJS_PER_CAT
    obj = np.repeat(np.arange(n_obj) * 3 + 100, frames)  # ids that are not 0..n-1
    category = obj // 3 // OBJS_PER_CAT  # ~OBJS_PER_CAT objects per category
    frame_index = np.tile(np.arange(frames) * 2, n_obj)  # subsampled videos: gaps are allowed
    perm = np.random.default_rng(seed).permutation(len(obj))
    category_room = {c: c % N_ROOMS for c in np.unique(category).tolist()}
    return obj[perm], category[perm], frame_index[perm], category_room


@pytest.fixture(scope="module")
def table():
    return frame_table()


def big_clips(crop_number=7, n_rooms=N_ROOMS, n_obj=1600, frames=40, seed=0):
    clips = split_clips(np.full(n_obj, frames), crop_number, seed)
    return clips, (clips.obj % n_rooms) * 10 + 3  # room labels that are not 0..R-1


# ---------------------------------------------------------------- clips


@pytest.mark.parametrize("crop_number", [3, 7])
def test_clip_length_is_one_plus_poisson(crop_number):
    clips = split_clips(np.full(20, 4000), crop_number, np.random.default_rng(1))  # long objects: ~no truncation
    assert mean_clip_length(clips) == pytest.approx(1 + crop_number, abs=0.1)
    assert clips.length.var() == pytest.approx(crop_number, rel=0.1)  # Poisson: variance = mean


def test_clips_tile_each_object_and_truncate_at_its_end():
    lengths = np.array([3, 0, 50, 1, 17, 9])
    clips = split_clips(lengths, 7, 0)
    assert isinstance(clips, Clips) and (clips.length >= 1).all()
    for o, n in enumerate(lengths):
        mine = clips.obj == o
        starts, lens = clips.start[mine], clips.length[mine]
        assert lens.sum() == n
        np.testing.assert_array_equal(starts, np.concatenate([[0], np.cumsum(lens)[:-1]])[: len(starts)])
    assert (clips.length[clips.obj == 0] <= 3).all()
    np.testing.assert_array_equal(clips.frames, np.arange(lengths.sum()))
    np.testing.assert_array_equal(np.diff(clips.offsets), clips.length)


def test_crop_number_zero_keeps_objects_whole():
    clips = split_clips(np.array([5, 2, 7]), 0, 0)
    np.testing.assert_array_equal(clips.length, [5, 2, 7])
    np.testing.assert_array_equal(split_clips(np.array([5, 2, 7]), None, 0).length, [5, 2, 7])


def test_video_order_sorts_frames_per_object_and_rejects_duplicates(table):
    obj, _, frame_index, _ = table
    ids, lengths, order = video_order(obj, frame_index)
    assert (lengths == FRAMES).all() and len(ids) == len(np.unique(obj))
    o, f = obj[order], frame_index[order]
    same = o[1:] == o[:-1]
    assert (np.diff(o) >= 0).all() and (f[1:][same] > f[:-1][same]).all()
    with pytest.raises(ValueError, match="twice"):
        video_order(np.array([1, 1]), np.array([4, 4]))


# ---------------------------------------------------------------- sequence


def test_sequence_uses_clips_once_with_consecutive_frames(table):
    obj, category, frame_index, rooms = table
    seq = sequence_from_frames(obj, category, frame_index, rooms, crop_number=7, p_change_room=0.1, rng=0)
    assert len(np.unique(seq.clip_order)) == len(seq.clip_order)  # every clip at most once
    assert len(np.unique(seq.frames)) == len(seq.frames)  # hence every frame at most once
    np.testing.assert_array_equal(seq.obj, obj[seq.frames])
    np.testing.assert_array_equal(seq.room, [rooms[c] for c in category[seq.frames]])
    # Within a clip: one object, consecutive stored frames (frame index step 2 in this table).
    lens = np.diff(seq.boundaries)
    inner = np.ones(len(seq), dtype=bool)
    inner[seq.boundaries[:-1]] = False
    assert (seq.obj[1:][inner[1:]] == seq.obj[:-1][inner[1:]]).all()
    assert (np.diff(frame_index[seq.frames])[inner[1:]] == 2).all()
    np.testing.assert_array_equal(np.repeat(seq.clip_order, lens), seq.clip)


def test_unvisited_frames_are_dropped(table):
    obj, category, frame_index, rooms = table
    seq = sequence_from_frames(obj, category, frame_index, rooms, chunk_ratio=0.5, rng=3)
    assert 0.45 * len(obj) < len(seq) < 0.55 * len(obj)
    # Dropping is whole clips: the kept frames are exactly the frames of the clips used.
    clips, room = big_clips(n_obj=100)
    seq = build_sequence(clips, room, 0.1, 0.5, 0)
    used = np.concatenate([clips.frames[clips.offsets[c] : clips.offsets[c + 1]] for c in seq.clip_order])
    np.testing.assert_array_equal(seq.frames, used)
    assert len(seq) == clips.length[seq.clip_order].sum() < clips.length.sum()


@pytest.mark.parametrize("chunk_ratio", [0.3, 0.8, 1.0])
@pytest.mark.parametrize("p", [0.0, 0.2])
def test_chunk_ratio_and_room_cap(chunk_ratio, p):
    clips, room = big_clips()
    seq = build_sequence(clips, room, p, chunk_ratio, 5)
    # The original's start clip plus `while cpt < chunk_ratio_limit * total_length` more; at most every clip.
    assert len(seq.clip_order) == min(len(clips), math.ceil(chunk_ratio * len(clips)) + 1)
    if p == 0 and chunk_ratio < 1:  # the cap: every room visited, none drained
        rooms = room[seq.clip_order]
        for r in np.unique(room):
            assert 0 < (rooms == r).sum() < (room == r).sum()
        # Past its cap (more than chunk_ratio x its clips, the start clip not counted) a room is left after every
        # clip, and it may be drawn again (the original's revisit): runs after the cap are single clips.
        count = {r: 0 for r in np.unique(room)}
        for i in range(1, len(rooms) - 1):
            count[rooms[i]] += 1
            if count[rooms[i]] > chunk_ratio * (room == rooms[i]).sum():
                assert rooms[i + 1] != rooms[i] and seq.forced[i + 1]
    if chunk_ratio == 1.0:
        assert sorted(seq.clip_order) == list(range(len(clips)))


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5])
def test_room_switch_rate_matches_p(p):
    clips, room = big_clips()
    seq = build_sequence(clips, room, p, 0.8, 2)
    n = len(seq.clip_order) - 1
    voluntary = room_switch_rate(seq, voluntary=True)
    assert abs(voluntary - p) <= 4 * math.sqrt(p * (1 - p) / n) + 1e-12
    rooms = seq.room[seq.boundaries[:-1]]
    switches = int((rooms[1:] != rooms[:-1]).sum())
    if p > 0:  # forced switches only when a room runs dry: a handful at most
        assert seq.forced.sum() <= N_ROOMS
        assert room_switch_rate(seq) == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / n) + N_ROOMS / n)
    else:  # every switch forced by the cap; capped rooms revisited for one clip each (the original's behaviour)
        assert switches == seq.forced.sum() >= N_ROOMS - 1
        assert room_switch_rate(seq) < 0.02


def test_p_one_switches_every_clip():
    clips, room = big_clips(n_obj=200)
    seq = build_sequence(clips, room, 1.0, 0.8, 0)
    assert room_switch_rate(seq) == 1.0


def test_single_room_never_switches():
    clips = split_clips(np.full(30, 20), 3, 0)
    seq = build_sequence(clips, np.zeros(len(clips), int), 0.5, 1.0, 0)
    assert room_switch_rate(seq) == 0.0 and len(seq.clip_order) == len(clips)


# ---------------------------------------------------------------- positives


def test_positive_offsets_are_uniform_and_clamped():
    clips, room = big_clips(n_obj=400)
    seq = build_sequence(clips, room, 0.1, 0.8, 0)
    rng = np.random.default_rng(0)
    k = rng.integers(2, len(seq) - 2, 50_000)
    d = temporal_positives(seq, 2, rng, k, how="exact") - k
    counts = np.bincount(d + 2, minlength=5)
    assert counts.sum() == len(k) and (np.abs(counts / len(k) - 0.2) < 0.01).all()  # 0 included
    # The default walk draws the same shifts (same generator state) and only moves crossing ones further.
    d_exact = temporal_positives(seq, 2, np.random.default_rng(1), k, how="exact") - k
    d_orig = temporal_positives(seq, 2, np.random.default_rng(1), k) - k
    inside = seq.clip[k] == seq.clip[k + d_exact]
    assert inside.mean() > 0.8 and (d_orig[inside] == d_exact[inside]).all()
    assert (np.sign(d_orig) == np.sign(d_exact)).all() and (np.abs(d_orig[~inside]) > np.abs(d_exact[~inside])).all()
    for how in WALKS:
        ends = temporal_positives(seq, 2, rng, np.array([0] * 1000 + [len(seq) - 1] * 1000), how=how)
        assert ends.min() == 0 and ends.max() == len(seq) - 1
        assert (ends[:1000] <= 2).all() and np.mean(ends[:1000] == 0) == pytest.approx(0.6, abs=0.06)  # 3/5
        assert (temporal_positives(seq, 0, rng, how=how) == np.arange(len(seq))).all()


def _sequence(lengths, rooms=None):
    """A sequence of clips of these lengths in this order (one object per clip)."""
    lengths = np.asarray(lengths)
    clip = np.repeat(np.arange(len(lengths)), lengths)
    return Sequence(frames=np.arange(lengths.sum()), clip=clip, obj=clip,
                    room=clip if rooms is None else np.repeat(rooms, lengths), clip_order=np.arange(len(lengths)),
                    boundaries=np.concatenate([[0], np.cumsum(lengths)]), forced=np.zeros(len(lengths), bool))


def original_walk(lengths, k, d):
    """Reference: the original's positive, restated (neuroai-arena/ObjectSemanticSimilarity, master e2fed23,
    utils/datasets.py, MVImgNet.interval_sampling, lines 350-401, interval_uniform False). Keep a frame offset s
    within the current clip; while s < 0 step to the previous clip and count s from that clip's last frame
    (lines 373-379: the new offset is its last frame's index plus s, so s = -1 lands one before its last frame);
    while s is past the clip's last frame, carry the overshoot into the next clip counted from its first frame
    (lines 395-399: the new offset is s - (length - 1), so an overshoot of 1 lands on its second frame). Clamp to
    the first frame of the first clip and the last frame of the last clip (prev_obj / next_obj == -2)."""
    start = np.concatenate([[0], np.cumsum(lengths)])
    c = int(np.searchsorted(start, k, side="right") - 1)
    s = k - start[c] + d
    while s < 0:
        if c == 0:
            return 0
        c -= 1
        s += lengths[c] - 1
    while s > lengths[c] - 1:
        if c == len(lengths) - 1:
            return start[-1] - 1
        s -= lengths[c] - 1
        c += 1
    return start[c] + s


def test_walk_by_hand():
    # Clips A = 0..2, B = 3, C = 4..5, D = 6..9. Forward, each clip's first frame is skipped (B entirely);
    # backward, each clip's last frame.
    lengths = [3, 1, 2, 4]
    seq = _sequence(lengths)
    cases = {(2, 1): 5, (2, 2): 7, (1, 1): 2, (1, 2): 5, (5, 1): 7, (8, 1): 9, (8, 2): 9, (9, 3): 9,
             (6, -1): 4, (6, -2): 1, (6, -3): 0, (6, -4): 0, (4, -1): 1, (3, -1): 1, (1, -1): 0, (7, -2): 4}
    for (k, d), want in cases.items():
        assert walk(seq, np.array([k]), np.array([d]))[0] == want == original_walk(lengths, k, d)
        assert walk(seq, np.array([k]), np.array([d]), "exact")[0] == min(max(k + d, 0), 9)


def test_walk_matches_the_original_restated():
    rng = np.random.default_rng(0)
    for _ in range(20):
        lengths = 1 + rng.poisson(rng.choice([0.5, 1, 3]), size=rng.integers(1, 30))
        seq = _sequence(lengths)
        k = np.arange(len(seq))
        for d in range(-6, 7):
            want = [original_walk(lengths, int(x), d) for x in k]
            np.testing.assert_array_equal(walk(seq, k, np.full(len(k), d)), want)
            # Where a crossing lands differs, whether a pair crosses does not.
            exact = walk(seq, k, np.full(len(k), d), "exact")
            np.testing.assert_array_equal(seq.clip[exact] != seq.clip[k], seq.clip[want] != seq.clip[k])
    with pytest.raises(ValueError, match="unknown walk"):
        walk(_sequence([2]), np.array([0]), np.array([1]), "reflect")


def test_crossing_fraction_matches_enumeration_and_closed_form():
    clips, room = big_clips()
    seq = build_sequence(clips, room, 0.1, 0.8, 0)
    exact = expected_crossing_stats(seq, 2)
    # Brute force over every (position, d), written independently of the module's vectorisation.
    clip_of = seq.clip
    brute = np.mean([clip_of[k] != clip_of[min(max(k + d, 0), len(seq) - 1)]
                     for k in range(0, len(seq), 7) for d in range(-2, 3)])
    assert brute == pytest.approx(exact["cross_clip"], abs=0.01)
    closed = clip_crossing_fraction(np.diff(seq.boundaries), 2)
    assert 0 <= closed - exact["cross_clip"] <= 6 / 5 / len(seq) + 1e-12  # a finite sequence loses its 2 ends
    # Sampled positives estimate it.
    rng = np.random.default_rng(1)
    k = rng.integers(0, len(seq), 100_000)
    sampled = crossing_stats(seq, k, temporal_positives(seq, 2, rng, k))
    assert sampled["cross_clip"] == pytest.approx(exact["cross_clip"], abs=0.005)
    # Consecutive clips of one object are rare, so object crossings are nearly all clip crossings.
    assert exact["cross_clip"] - 0.01 < exact["cross_object"] <= exact["cross_clip"]


def test_defaults_give_about_15_percent_crossings_90_percent_same_room():
    clips = split_clips(np.full(1000, 400), 7, 0)  # long videos: mean clip length ~8
    seq = build_sequence(clips, clips.obj % N_ROOMS, 0.1, 0.8, 0)
    stats = expected_crossing_stats(seq, 2)
    assert mean_clip_length(seq) == pytest.approx(8, abs=0.15)
    assert stats["cross_object"] == pytest.approx(0.15, abs=0.01)  # 2 * 3 / (5 * 8)
    assert stats["same_room"] == pytest.approx(0.9, abs=0.015)


def test_crossings_grow_with_delta_and_shrink_with_clip_length():
    def cross(delta, crop_number):
        clips, room = big_clips(crop_number, n_obj=400, frames=60)
        return expected_crossing_stats(build_sequence(clips, room, 0.1, 0.8, 0), delta)["cross_object"]

    by_delta = [cross(d, 7) for d in (0, 1, 2, 4)]
    by_crop = [cross(2, c) for c in (1, 3, 7, 15)]
    assert by_delta[0] == 0 and np.all(np.diff(by_delta) > 0)
    assert np.all(np.diff(by_crop) < 0)


# ---------------------------------------------------------------- the original's statistics

# The original code's figures on the embedded data's training split (8 categories x 16 objects x 12 frames,
# category c in room c % 4), Delta 2, chunk_ratio 0.8: every anchor x every d per sequence, one sequence per draw,
# draws seeded 0..3999 (random.seed and np.random.seed). Per statistic (mean over draws, sd between draws);
# SE = sd / sqrt(draws). Computed by running a transcription of utils/datasets.py (master e2fed23: crop_objects
# 217-244, create_temporal_sequence 246-348, interval_sampling 350-401) that was first checked, seed for seed, to
# give the same sequences and partners as the original's own methods run verbatim on a DataFrame:
#     python /tmp/aubret_ref/run_orig.py CROP P 4000     (about 1-2 min a setting on one core)
# At crop 7, p 0.1, 8 of the 4000 draws raise in the original (one room left with clips) and are left out.
# SE of the same-room share: 0.00033 (crop 1), 0.00029 (crop 2), 0.00035 (crop 7); of the p = 0 switch rate 0.00006.
# A second run on seeds 10000-11999 agreed to within 1.2 combined SE on every statistic. Issue 15's text swaps the
# labels of its same-room figures: the original's skip lowers the share (0.810 at crop 1), the exact walk gives 0.883.
ORIGINAL = {  # (crop_number, p_change_room): (draws, {statistic: (mean, sd)})
    (1, 0.1): (4000, {"cross_clip": (0.547986, 0.007676), "cross_object": (0.536606, 0.007886),
                      "same_room": (0.810361, 0.020991), "switch": (0.099930, 0.011453),
                      "n_clips": (654.319, 10.995657)}),
    (2, 0.1): (4000, {"cross_clip": (0.413891, 0.007802), "cross_object": (0.405226, 0.007924),
                      "same_room": (0.862097, 0.018646), "switch": (0.100513, 0.013741),
                      "n_clips": (456.51875, 8.702619)}),
    (7, 0.1): (3992, {"cross_clip": (0.196245, 0.004619), "cross_object": (0.193267, 0.004769),
                      "same_room": (0.887071, 0.022080), "switch": (0.103212, 0.020172),
                      "n_clips": (207.464429, 4.094136)}),
    (7, 0.0): (4000, {"cross_clip": (0.196323, 0.004776), "cross_object": (0.193035, 0.004901),
                      "same_room": (0.981713, 0.003935), "switch": (0.016677, 0.003704),
                      "n_clips": (207.46475, 4.094808)}),
}
DRAWS = 200  # ~0.3 s a setting


def embedded_stats(crop_number, p, how, draws=DRAWS):
    """Per-draw statistics of this module on the layout of ORIGINAL; rows are draws."""
    rows = []
    for s in range(draws):
        rng = np.random.default_rng([s, 15])
        clips = split_clips(np.full(128, 12), crop_number, rng)
        seq = build_sequence(clips, clips.obj // 16 % 4, p, 0.8, rng)
        st = expected_crossing_stats(seq, 2, how)
        rows.append({**st, "switch": room_switch_rate(seq), "n_clips": len(seq.clip_order)})
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


def z_scores(crop_number, p, how):
    n_ref, ref = ORIGINAL[crop_number, p]
    mine = embedded_stats(crop_number, p, how)
    return {k: (mine[k].mean() - m) / math.sqrt(mine[k].var(ddof=1) / DRAWS + sd**2 / n_ref)
            for k, (m, sd) in ref.items()}


@pytest.mark.parametrize("crop_number, p", sorted(ORIGINAL))
def test_default_sequence_reproduces_the_original_statistics(crop_number, p):
    z = z_scores(crop_number, p, "original")
    assert all(abs(v) < 4 for v in z.values()), z


@pytest.mark.parametrize("crop_number", [1, 2])
def test_exact_walk_fails_the_original_statistics(crop_number):
    # The control: moving exactly |d| lands crossings too near, so too many stay in the room (the walk before
    # issue 15: 0.883 against 0.810 at crop 1, 0.891 against 0.862 at crop 2); the rates do not change.
    z = z_scores(crop_number, 0.1, "exact")
    assert z["same_room"] > 10, z
    assert abs(z["cross_clip"]) < 4 and abs(z["switch"]) < 4, z


# ---------------------------------------------------------------- determinism, room map, contract


def test_deterministic_in_the_seed(table):
    obj, category, frame_index, rooms = table
    a = sequence_from_frames(obj, category, frame_index, rooms, rng=7)
    b = sequence_from_frames(obj, category, frame_index, rooms, rng=np.random.default_rng(7))
    c = sequence_from_frames(obj, category, frame_index, rooms, rng=8)
    for field in ("frames", "clip", "obj", "room", "clip_order", "boundaries", "forced"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.frames, c.frames)
    np.testing.assert_array_equal(temporal_positives(a, 2, 0), temporal_positives(b, 2, 0))


def test_random_room_map_is_balanced_and_seeded():
    cats = [f"c{i}" for i in range(80)]
    m = balanced_room_map(cats, 8, 0)
    assert set(m) == set(cats) and sorted(np.bincount(list(m.values()))) == [10] * 8
    assert m == balanced_room_map(cats, 8, 0) and m != balanced_room_map(cats, 8, 1)
    uneven = balanced_room_map(range(11), ["kitchen", "garage", "office"], 0)
    assert sorted(np.unique(list(uneven.values()), return_counts=True)[1]) == [3, 4, 4]
    # A random map still gives rooms of mixed categories their sequence.
    obj, category, frame_index, _ = frame_table(frames=20)
    seq = sequence_from_frames(obj, category, frame_index, balanced_room_map(np.unique(category), 4, 0), rng=0)
    assert set(np.unique(seq.room)) == {0, 1, 2, 3}


def test_input_errors(table):
    obj, category, frame_index, rooms = table
    bad = category.copy()
    bad[np.flatnonzero(obj == obj[0])[0]] += 1
    with pytest.raises(ValueError, match="several categories"):
        sequence_from_frames(obj, bad, frame_index, rooms)
    with pytest.raises(ValueError, match="without a room"):
        sequence_from_frames(obj, category, frame_index, {k: v for k, v in rooms.items() if k != min(rooms)})
    clips, room = big_clips(n_obj=10)
    with pytest.raises(UserError, match="p_change_room"):
        build_sequence(clips, room, 1.5)
    with pytest.raises(UserError, match="chunk_ratio"):
        build_sequence(clips, room, 0.1, 0.0)
    with pytest.raises(ValueError, match="clip_room"):
        build_sequence(clips, room[:-1])
    with pytest.raises(UserError, match="delta"):
        temporal_positives(build_sequence(clips, room), -1, 0)
    with pytest.raises(UserError, match="crop_number"):
        split_clips(np.array([4]), -1, 0)
