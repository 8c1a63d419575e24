"""trainables.tasks.audio_text.retrieval:
hand-ranked examples, pessimistic ties, a sorting reference, chance level, contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainables.tasks.audio_text.retrieval import retrieval_metrics

KEYS = {"t2a_map", "t2a_r1", "t2a_r5", "t2a_r10", "a2t_map", "a2t_r1", "a2t_r5", "a2t_r10", "a2t_hr1", "a2t_hr5",
        "a2t_hr10", "map_mean"}

# 3 clips x 2 captions; captions 0, 1 are clip 0's, 2, 3 clip 1's, 4, 5 clip 2's.
#               t0   t1   t2   t3   t4   t5
HAND = np.array([[.9, .3, .8, .1, .2, .4],  # a0
                 [.5, .7, .6, .2, .3, .1],  # a1
                 [.1, .8, .4, .9, .7, .6]])  # a2
HAND_CLIPS = np.array([0, 0, 1, 1, 2, 2])


def test_hand_ranked_example():
    m = retrieval_metrics(HAND, HAND_CLIPS)
    assert set(m) == KEYS and all(isinstance(v, float) for v in m.values())
    # Text->audio, rank of the caption's clip in its column: t0 [.9 .5 .1] -> 1; t1 [.3 .7 .8] -> 3;
    # t2 [.8 .6 .4] -> 2; t3 [.1 .2 .9] -> 2; t4 [.2 .3 .7] -> 1; t5 [.4 .1 .6] -> 1. AP = 1 / rank.
    assert m["t2a_map"] == pytest.approx((1 + 1 / 3 + 1 / 2 + 1 / 2 + 1 + 1) / 6)
    assert m["t2a_r1"] == pytest.approx(3 / 6)
    assert m["t2a_r5"] == m["t2a_r10"] == 1.0
    # Audio->text rankings:
    #   a0: t0 .9, t2 .8, t5 .4, t1 .3, t4 .2, t3 .1 -> relevant t0, t1 at ranks 1, 4: AP = (1/1 + 2/4) / 2 = 0.75
    #   a1: t1 .7, t2 .6, t0 .5, t4 .3, t3 .2, t5 .1 -> t2, t3 at 2, 5:               AP = (1/2 + 2/5) / 2 = 0.45
    #   a2: t3 .9, t1 .8, t4 .7, t5 .6, t2 .4, t0 .1 -> t4, t5 at 3, 4:               AP = (1/3 + 2/4) / 2
    assert m["a2t_map"] == pytest.approx((0.75 + 0.45 + (1 / 3 + 1 / 2) / 2) / 3)
    assert m["a2t_r1"] == pytest.approx((1 / 2 + 0 + 0) / 3)  # a fraction of the 2 relevant captions
    assert m["a2t_hr1"] == pytest.approx(1 / 3)  # a hit rate: only a0 has a relevant caption first
    assert m["a2t_r5"] == m["a2t_hr5"] == m["a2t_r10"] == m["a2t_hr10"] == 1.0  # worst relevant rank is 5
    assert m["map_mean"] == pytest.approx((m["t2a_map"] + m["a2t_map"]) / 2)


def test_a2t_recall_is_a_fraction_not_a_hit_rate():
    # Clip 0 has captions 0-4, clip 1 captions 5, 6.
    clips = np.array([0, 0, 0, 0, 0, 1, 1])
    S = np.array([[.9, .7, .5, .1, .0, .8, .6],  # a0: t0, t5, t1, t6, t2, t3, t4 -> relevant ranks 1, 3, 5, 6, 7
                  [.0, .0, .0, .0, .0, .5, .4]])  # a1: t5, t6 first -> relevant ranks 1, 2
    m = retrieval_metrics(S, clips)
    assert m["a2t_r1"] == pytest.approx((1 / 5 + 1 / 2) / 2)
    assert m["a2t_hr1"] == 1.0
    assert m["a2t_r5"] == pytest.approx((3 / 5 + 1) / 2) and m["a2t_hr5"] == 1.0
    assert m["a2t_map"] == pytest.approx(((1 / 1 + 2 / 3 + 3 / 5 + 4 / 6 + 5 / 7) / 5 + 1) / 2)


def test_perfect_scores():
    clips = np.repeat(np.arange(4), 5)
    S = (clips[None, :] == np.arange(4)[:, None]).astype(float)
    m = retrieval_metrics(S, clips)
    # With 5 relevant captions, R@1 can reach at most 1/5: the fraction definition, not a bug.
    assert m["a2t_r1"] == pytest.approx(1 / 5)
    assert all(v == 1.0 for k, v in m.items() if k != "a2t_r1")
    single = retrieval_metrics(np.eye(4) + 0.1, np.arange(4))  # one caption per clip: everything is 1
    assert all(v == 1.0 for v in single.values())


def test_ties_rank_pessimistically():
    # Collapsed encoder on HAND's layout: every score equal. Text->audio: the clip ranks 3rd of 3. Audio->text:
    # both relevant captions come after the 4 irrelevant ones, at ranks 5 and 6.
    m = retrieval_metrics(np.zeros((3, 6)), HAND_CLIPS)
    assert m["t2a_map"] == pytest.approx(1 / 3) and m["t2a_r1"] == 0.0 and m["t2a_r5"] == 1.0
    assert m["a2t_map"] == pytest.approx((1 / 5 + 2 / 6) / 2)
    assert m["a2t_r1"] == m["a2t_hr1"] == 0.0
    assert m["a2t_r5"] == pytest.approx(1 / 2) and m["a2t_hr5"] == 1.0
    # Partial ties, clips [0, 0, 1]. Text->audio: t0's column [1, 1] ties a1 with its clip a0 -> rank 2 (by index
    # it would be 1); t1 [1, 0] -> 1; t2 [1, 0] -> a1 ranks 2. Audio->text: a0 ties its t0, t1 with t2 -> order
    # t2, t0, t1: AP = (1/2 + 2/3) / 2; a1's t2 ties with t1 below t0 -> order t0, t1, t2: AP = 1/3.
    m = retrieval_metrics(np.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]), np.array([0, 0, 1]))
    assert m["t2a_map"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert m["a2t_map"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1 / 3) / 2)


def _reference(S: np.ndarray, clips: np.ndarray) -> dict[str, float]:
    """Explicit per-query sorting: by score descending, then irrelevant before relevant (pessimistic)."""

    def ranks(scores, relevant):
        order = sorted(range(len(scores)), key=lambda j: (-scores[j], relevant[j], j))
        return [pos + 1 for pos, j in enumerate(order) if relevant[j]]

    def ap(rel_ranks):
        return float(np.mean([(j + 1) / r for j, r in enumerate(sorted(rel_ranks))]))

    out: dict[str, list[float]] = {}
    for t in range(S.shape[1]):
        r = ranks(S[:, t], [a == clips[t] for a in range(S.shape[0])])
        out.setdefault("t2a_map", []).append(ap(r))
        for k in (1, 5, 10):
            out.setdefault(f"t2a_r{k}", []).append(float(r[0] <= k))
    for a in range(S.shape[0]):
        r = ranks(S[a], [c == a for c in clips])
        out.setdefault("a2t_map", []).append(ap(r))
        for k in (1, 5, 10):
            out.setdefault(f"a2t_r{k}", []).append(sum(x <= k for x in r) / len(r))
            out.setdefault(f"a2t_hr{k}", []).append(float(min(r) <= k))
    means = {k: float(np.mean(v)) for k, v in out.items()}
    means["map_mean"] = (means["t2a_map"] + means["a2t_map"]) / 2
    return means


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_a_sorting_reference_with_many_ties(seed):
    rng = np.random.default_rng(seed)
    n_audio = 12
    clips = np.concatenate([np.arange(n_audio), rng.integers(0, n_audio, size=30)])  # 1 to several per clip
    S = rng.integers(0, 4, size=(n_audio, len(clips))).astype(np.float32)  # integers: ties everywhere
    got, want = retrieval_metrics(torch.from_numpy(S), torch.from_numpy(clips)), _reference(S, clips)
    assert got == pytest.approx(want, abs=1e-12)


def test_random_scores_are_at_chance():
    rng = np.random.default_rng(7)
    n_audio, per_clip = 10, 400
    clips = np.repeat(np.arange(n_audio), per_clip)
    m = retrieval_metrics(rng.standard_normal((n_audio, n_audio * per_clip)), clips)
    assert m["t2a_r1"] == pytest.approx(1 / n_audio, abs=0.02)  # sd = sqrt(0.09 / 4000) ~ 0.005
    harmonic = sum(1 / k for k in range(1, n_audio + 1))
    assert m["t2a_map"] == pytest.approx(harmonic / n_audio, abs=0.02)  # E[1 / U{1..n}]
    assert m["a2t_map"] == pytest.approx(1 / n_audio, abs=0.02)  # precision ~ the relevant fraction


def test_accepts_tensors_in_low_precision():
    m = retrieval_metrics(torch.tensor(HAND, dtype=torch.bfloat16), torch.tensor(HAND_CLIPS))
    assert set(m) == KEYS


@pytest.mark.parametrize("S,clips,name", [
    (np.zeros(3), np.array([0, 1, 2]), "`S`"),
    (np.full((2, 2), np.nan), np.array([0, 1]), "`S`"),
    (np.zeros((2, 3)), np.array([0, 1]), "`caption_clip`"),
    (np.zeros((2, 3)), np.array([0, 1, 2]), "`caption_clip`"),
    (np.zeros((2, 3)), np.array([0, 1, -1]), "`caption_clip`"),
    (np.zeros((3, 3)), np.array([0, 0, 2]), "`caption_clip`"),  # clip 1 has no caption
    (np.zeros((2, 2)), np.array([0.0, 1.0]), "`caption_clip`"),
])
def test_rejects_bad_arguments(S, clips, name):
    with pytest.raises(ValueError, match=name):
        retrieval_metrics(S, clips)
