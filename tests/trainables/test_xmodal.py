"""trainables.tasks.audio_text.losses:
hand-picked selections, hand-computed losses, loop references, gradients, contract."""

from __future__ import annotations

import math

import pytest
import torch

from trainables.tasks.audio_text.losses import (
    SELECTIONS,
    candidate_mask,
    frame_word_scores,
    hinge_loss,
    infonce_loss,
    pooled_scores,
)

# S[a, t] in sixteenths, so every difference below is exact in float64. Pairs 0 and 1 share clip 0.
# Candidates: C_0 = C_1 = {2, 3}, C_2 = {0, 1, 3}, C_3 = {0, 1, 2}. Positives (diagonal): 14, 10, 12, 8.
#        t0  t1  t2  t3
M = [[14, 15, 5, 2],  # a0: caption 1 (15) is the highest of the row but is a caption of a0's own clip
     [13, 10, 9, 3],  # a1
     [6, 8, 12, 11],  # a2
     [3, 13, 1, 8]]  # a3
CLIPS = torch.tensor([0, 0, 1, 2])
S_TT = torch.tensor([[1.0, 0.9, 0.5, 0.5],  # caption-caption; 0-1 (same clip) is the highest off the diagonal
                     [0.9, 1.0, 0.2, 0.6],
                     [0.5, 0.2, 1.0, 0.4],
                     [0.5, 0.6, 0.4, 1.0]], dtype=torch.float64)
S_AA = torch.tensor([[1.0, 0.1, 0.3, 0.7],  # audio-audio
                     [0.1, 1.0, 0.8, 0.8],
                     [0.3, 0.8, 1.0, 0.2],
                     [0.7, 0.8, 0.2, 1.0]], dtype=torch.float64)


def _scores() -> torch.Tensor:
    return torch.tensor(M, dtype=torch.float64) / 16


def _select(rule: str, S: torch.Tensor | None = None, clips: torch.Tensor = CLIPS, **kwargs):
    S = _scores() if S is None else S
    return SELECTIONS[rule](S, candidate_mask(clips), **kwargs)


def _picked(weights: torch.Tensor) -> list[int]:
    """The one selected index per row (-1 for an empty row); asserts the row is a one-hot."""
    out = []
    for row in weights:
        nz = row.nonzero().flatten().tolist()
        assert len(nz) <= 1 and (not nz or row[nz[0]].item() == 1.0)
        out.append(nz[0] if nz else -1)
    return out


def _sets(weights: torch.Tensor) -> list[set[int]]:
    return [set(row.nonzero().flatten().tolist()) for row in weights]


# ----------------------------------------------------------------------------------------------------------
# Selections on the hand-built batch


def test_candidate_mask():
    expected = [[False, False, True, True], [False, False, True, True],
                [True, True, False, True], [True, True, True, False]]
    assert candidate_mask(CLIPS).tolist() == expected


def test_hard_cross_picks_per_direction_and_skips_the_same_clip():
    # caption anchor i ranks audios by column i over C_i: col0 {2: 6, 3: 3} -> 2, col1 {2: 8, 3: 13} -> 3,
    # col2 {0: 5, 1: 9, 3: 1} -> 1, col3 {0: 2, 1: 3, 2: 11} -> 2. Column 1's best, a0 = 15, is a0's own clip.
    # audio anchor i ranks captions by row i: row0 {2: 5, 3: 2} -> 2, row1 {2: 9, 3: 3} -> 2,
    # row2 {0: 6, 1: 8, 3: 11} -> 3, row3 {0: 3, 1: 13, 2: 1} -> 1. Row 0's best, t1 = 15, is excluded.
    neg_audio, neg_text = _select("hard_k", select_by="cross", k=1)
    assert _picked(neg_audio) == [2, 3, 1, 2]
    assert _picked(neg_text) == [2, 2, 3, 1]  # independent: differs from neg_audio for anchors 1, 2, 3


def test_easy_cross():
    neg_audio, neg_text = _select("easy_k", select_by="cross", k=1)
    assert _picked(neg_audio) == [3, 2, 3, 0]
    assert _picked(neg_text) == [3, 3, 0, 2]


def test_hard_k_two_averages_and_caps_at_the_candidates():
    neg_audio, neg_text = _select("hard_k", select_by="cross", k=2)
    assert _sets(neg_audio) == [{2, 3}, {2, 3}, {0, 1}, {1, 2}]  # col2 {0: 5, 1: 9, 3: 1}; col3 {0: 2, 1: 3, 2: 11}
    assert _sets(neg_text) == [{2, 3}, {2, 3}, {1, 3}, {0, 1}]  # row2 {0: 6, 1: 8, 3: 11}; row3 {0: 3, 1: 13, 2: 1}
    assert torch.all(neg_audio[neg_audio > 0] == 0.5) and torch.all(neg_text[neg_text > 0] == 0.5)
    neg_audio, _ = _select("hard_k", select_by="cross", k=3)  # anchors 0 and 1 have only 2 candidates: both, at 1/2
    assert _sets(neg_audio)[0] == {2, 3} and neg_audio[0, 2].item() == 0.5
    assert _sets(neg_audio)[2] == {0, 1, 3} and neg_audio[2, 0].item() == pytest.approx(1 / 3)


def test_text_rules_share_one_index_and_break_ties_low():
    # S_tt rows over C_i: 0 {2: .5, 3: .5} tie -> 2; 1 {2: .2, 3: .6}; 2 {0: .5, 1: .2, 3: .4}; 3 {0: .5, 1: .6, 2: .4}
    hard = _select("hard_k", select_by="text", k=1, S_tt=S_TT)
    easy = _select("easy_k", select_by="text", k=1, S_tt=S_TT)
    assert _picked(hard[0]) == [2, 3, 0, 1] and torch.equal(hard[0], hard[1])
    assert _picked(easy[0]) == [2, 2, 1, 2] and torch.equal(easy[0], easy[1])


def test_audio_rules_use_s_aa():
    # S_aa rows over C_i: 0 {2: .3, 3: .7}; 1 {2: .8, 3: .8} tie -> 2; 2 {0: .3, 1: .8, 3: .2}; 3 {0: .7, 1: .8, 2: .2}
    hard = _select("hard_k", select_by="audio", k=1, S_aa=S_AA, S_tt=S_TT)
    easy = _select("easy_k", select_by="audio", k=1, S_aa=S_AA)
    assert _picked(hard[0]) == [3, 2, 1, 1] and torch.equal(hard[0], hard[1])
    assert _picked(easy[0]) == [2, 2, 3, 2] and torch.equal(easy[0], easy[1])


@pytest.mark.parametrize("rule,knobs", [
    ("hard_k", {"select_by": "cross"}), ("easy_k", {"select_by": "cross"}), ("hard_k", {"select_by": "text"}),
    ("easy_k", {"select_by": "audio"}), ("semi_hard", {"variant": "nearest"}),
])
def test_all_ties_go_to_the_lowest_candidate_index(rule, knobs):
    zeros = torch.zeros(4, 4, dtype=torch.float64)
    extra = {"margin": 0.5} if rule == "semi_hard" else {"S_tt": zeros, "S_aa": zeros}
    neg_audio, neg_text = _select(rule, zeros, **knobs, **extra)
    assert _picked(neg_audio) == _picked(neg_text) == [2, 2, 0, 0]


def test_same_clip_is_never_chosen_even_when_it_scores_highest():
    S = torch.zeros(4, 4, dtype=torch.float64)
    S[0, 1] = S[1, 0] = 9.0  # pairs 0 and 1 share clip 0
    tt = S_TT.clone()
    tt[0, 1] = tt[1, 0] = 9.0
    for neg in (*_select("hard_k", S, select_by="cross"), *_select("hard_k", S, select_by="text", S_tt=tt),
                *_select("semi_hard", S + 9.0 * torch.eye(4, dtype=torch.float64), margin=0.5)):
        assert neg[0, 1] == 0 and neg[1, 0] == 0 and neg[:2, :2].sum() == 0


def test_semi_hard_nearest_can_pick_above_the_positive():
    # caption anchors vs S_ii: 0 |6-14|, |3-14| -> 2; 1 |8-10| = 2 < |13-10| -> 2; 2 |9-12| = 3 -> 1;
    # 3: |11-8| = 3 beats |3-8| = 5 -> 2, a negative scoring ABOVE the positive 8.
    # audio anchors: 0 -> 2; 1 |9-10| -> 2; 2 |11-12| -> 3 (above is not needed); 3: |3-8| = |13-8| = 5, a tie
    # between one below and one above: the lower index, 0.
    neg_audio, neg_text = _select("semi_hard", variant="nearest", margin=0.5)
    assert _picked(neg_audio) == [2, 2, 1, 2]
    assert _picked(neg_text) == [2, 2, 3, 0]
    S = _scores()
    assert S[2, 3] > S[3, 3]


def test_semi_hard_band():
    # margin 8/16: band S_ii - 8 < s < S_ii, strict at both ends.
    # caption anchors: 0 band (6, 14): col0 {2: 6, 3: 3}, 6 is on the edge -> empty; 1 (2, 10): {2: 8} (13 above);
    # 2 (4, 12): {0: 5, 1: 9}; 3 (0, 8): {0: 2, 1: 3} (11 above).
    # audio anchors: 0 (6, 14): {2: 5, 3: 2} -> empty; 1 (2, 10): {2: 9, 3: 3}; 2 (4, 12): {0: 6, 1: 8, 3: 11};
    # 3 (0, 8): {0: 3, 2: 1} (13 above).
    neg_audio, neg_text = _select("semi_hard", variant="band", margin=0.5)
    assert _sets(neg_audio) == [set(), {2}, {0, 1}, {0, 1}]
    assert _sets(neg_text) == [set(), {2, 3}, {0, 1, 3}, {0, 2}]
    assert neg_text[2, 0].item() == pytest.approx(1 / 3)
    # hinges in sixteenths: caption 1: 8-10+8 = 6; 2: (1 + 5)/2; 3: (2 + 3)/2; audio 1: (7 + 1)/2;
    # 2: (2 + 4 + 7)/3; 3: (3 + 1)/2. Anchor 0 contributes 0 but still counts: B' = 4.
    expected = (6 + 3 + 2.5 + 4 + 13 / 3 + 2) / 16 / 4
    assert hinge_loss(_scores(), CLIPS, "semi_hard", margin=0.5, variant="band").item() == pytest.approx(expected)


def test_band_empty_everywhere_gives_zero_and_no_gradient():
    S = (_scores() + 2.0 * torch.eye(4, dtype=torch.float64)).requires_grad_()  # every negative far below
    loss = hinge_loss(S, CLIPS, "semi_hard", margin=0.5, variant="band")
    loss.backward()
    assert loss.item() == 0.0 and not S.grad.any()


def test_uniform_one_is_deterministic_given_the_generator():
    S, cand = torch.zeros(8, 8), candidate_mask(torch.tensor([0, 0, 1, 1, 2, 3, 4, 4]))
    first = SELECTIONS["uniform_one"](S, cand, generator=torch.Generator().manual_seed(3))
    again = SELECTIONS["uniform_one"](S, cand, generator=torch.Generator().manual_seed(3))
    other = SELECTIONS["uniform_one"](S, cand, generator=torch.Generator().manual_seed(4))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_uniform_one_is_uniform_over_candidates_and_independent_per_direction():
    gen = torch.Generator().manual_seed(0)
    S, cand = torch.zeros(4, 4), candidate_mask(CLIPS)
    counts = torch.zeros(2, 4, 4)
    differ = 0
    draws = 3000
    for _ in range(draws):
        neg_audio, neg_text = SELECTIONS["uniform_one"](S, cand, generator=gen)
        counts[0] += neg_audio
        counts[1] += neg_text
        differ += int(not torch.equal(neg_audio, neg_text))
    assert -1 not in _picked(neg_audio) + _picked(neg_text)  # a one-hot row for every anchor
    assert torch.all(counts.sum(dim=2) == draws)
    assert counts[:, ~cand].sum() == 0  # never the anchor itself or a same-clip item
    freq = counts / draws
    expected = cand / cand.sum(dim=1, keepdim=True)
    assert torch.allclose(freq[:, cand], expected[cand].expand(2, -1), atol=0.04)  # sd <= 0.009
    assert differ > draws // 2  # independent directions usually differ somewhere


def test_mean_equals_the_average_of_all_candidate_hinges():
    gen = torch.Generator().manual_seed(1)
    clips = torch.tensor([0, 0, 1, 2, 2, 3])
    S = torch.rand(6, 6, generator=gen, dtype=torch.float64)
    m, total = 0.3, 0.0
    for i in range(6):
        cands = [j for j in range(6) if clips[j] != clips[i]]
        total += sum(max(0.0, S[a, i].item() - S[i, i].item() + m) for a in cands) / len(cands)
        total += sum(max(0.0, S[i, u].item() - S[i, i].item() + m) for u in cands) / len(cands)
    assert hinge_loss(S, clips, "mean", margin=m).item() == pytest.approx(total / 6, abs=1e-12)


# ----------------------------------------------------------------------------------------------------------
# Loss values and gradients


def test_hinge_loss_hand_computed_hard_cross():
    # margin 8/16, hard cross picks (test above): caption anchors [S[a,i] - S_ii + 8]_+ : a=2: 6-14+8 = 0,
    # a=3: 13-10+8 = 11, a=1: 9-12+8 = 5, a=2: 11-8+8 = 11; audio anchors [S[i,u] - S_ii + 8]_+ : u=2: 5-14+8 < 0,
    # u=2: 9-10+8 = 7, u=3: 11-12+8 = 7, u=1: 13-8+8 = 13. Sum 54/16 over B' = 4.
    loss = hinge_loss(_scores(), CLIPS, "hard_k", margin=0.5, select_by="cross", k=1)
    assert loss.item() == pytest.approx(54 / 16 / 4, abs=1e-12)


def test_gradient_reaches_only_the_selected_scores():
    S = _scores().requires_grad_()
    tt = S_TT.clone().requires_grad_()
    hinge_loss(S, CLIPS, "hard_k", margin=0.5, select_by="cross", S_tt=tt).backward()
    # Active picks: S[3, 1] (caption 1 and audio 3), S[1, 2] (caption 2, audio 1), S[2, 3] (caption 3, audio 2),
    # each twice, over B = 4. S[2, 0] and S[0, 2] are selected with a hinge of exactly 0.
    expected = torch.zeros(4, 4, dtype=torch.float64)
    expected[3, 1] = expected[1, 2] = expected[2, 3] = 0.5
    expected[1, 1] = expected[2, 2] = expected[3, 3] = -0.5
    assert torch.equal(S.grad, expected)
    assert tt.grad is None  # selection scores are never differentiated

    S = _scores().requires_grad_()
    hinge_loss(S, CLIPS, "hard_k", margin=0.5, select_by="text", S_tt=tt).backward()
    picks = [2, 3, 0, 1]  # shared index: S[j, i] for caption anchor i, S[i, j] for audio anchor i
    allowed = torch.eye(4, dtype=torch.bool)
    for i, j in enumerate(picks):
        allowed[j, i] = allowed[i, j] = True
    assert not S.grad[~allowed].any() and S.grad[allowed].any()


@pytest.mark.parametrize("rule,knobs", [
    ("uniform_one", {}), ("mean", {}), ("hard_k", {"select_by": "cross"}), ("easy_k", {"select_by": "text"}),
    ("hard_k", {"select_by": "audio", "k": 3}), ("semi_hard", {"variant": "nearest"}),
    ("semi_hard", {"variant": "band"}),
])
def test_no_candidate_anchors_give_zero_with_a_graph(rule, knobs):
    S = torch.randn(3, 3, dtype=torch.float64).requires_grad_()
    same = torch.tensor([7, 7, 7])  # one clip: nobody has a negative
    loss = hinge_loss(S, same, rule, margin=0.5, S_tt=S.detach(), S_aa=S.detach(),
                      generator=torch.Generator().manual_seed(0), **knobs)
    loss.backward()
    assert loss.item() == 0.0 and loss.requires_grad and not S.grad.any()
    S.grad = None
    nce = infonce_loss(S, same, 0.1)
    nce.backward()
    assert nce.item() == 0.0 and not S.grad.isnan().any()


def test_hinge_loss_ignores_the_same_clip_score():
    S = _scores()
    loss = hinge_loss(S, CLIPS, "mean", margin=0.5)
    S[0, 1] = S[1, 0] = 100.0
    assert hinge_loss(S, CLIPS, "mean", margin=0.5).item() == pytest.approx(loss.item(), abs=1e-12)


def _infonce_direct(S: torch.Tensor, clips: torch.Tensor, t: float) -> float:
    b, total = S.shape[0], 0.0
    for i in range(b):
        keep = [j for j in range(b) if j == i or clips[j] != clips[i]]
        a2t = math.exp(S[i, i] / t) / sum(math.exp(S[i, u] / t) for u in keep)
        t2a = math.exp(S[i, i] / t) / sum(math.exp(S[a, i] / t) for a in keep)
        total += -math.log(a2t) - math.log(t2a)
    return total / (2 * b)


def test_infonce_matches_the_direct_formula():
    gen = torch.Generator().manual_seed(2)
    clips = torch.tensor([0, 0, 1, 1, 2, 3])
    S = 2 * torch.rand(6, 6, generator=gen, dtype=torch.float64) - 1
    assert infonce_loss(S, clips, 0.5).item() == pytest.approx(_infonce_direct(S, clips, 0.5), abs=1e-12)
    S2 = S.clone()
    S2[0, 1] = S2[1, 0] = S2[2, 3] = 50.0  # same-clip scores are neither negatives nor positives
    assert infonce_loss(S2, clips, 0.5).item() == pytest.approx(infonce_loss(S, clips, 0.5).item(), abs=1e-12)


def test_infonce_is_finite_at_low_temperature_with_large_scores():
    gen = torch.Generator().manual_seed(3)
    S = (50 * torch.randn(8, 8, generator=gen)).requires_grad_()  # logits up to ~1e4 at t = 0.01
    loss = infonce_loss(S, torch.arange(8), 0.01)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0 and torch.isfinite(S.grad).all()
    half = infonce_loss(S.detach().half(), torch.arange(8), 0.01)
    assert torch.isfinite(half)


# ----------------------------------------------------------------------------------------------------------
# Scores


def _naive_frame_word(audio, audio_len, words, word_len):
    out = torch.zeros(len(audio), len(words), dtype=torch.float64)
    for a in range(len(audio)):
        for t in range(len(words)):
            acc = 0.0
            for f in range(audio_len[a]):
                for w in range(word_len[t]):
                    acc += max(0.0, torch.nn.functional.cosine_similarity(audio[a, f], words[t, w], dim=0).item())
            out[a, t] = acc / (audio_len[a] * word_len[t])
    return out


def test_frame_word_scores_match_a_loop_and_ignore_padding():
    gen = torch.Generator().manual_seed(4)
    audio = torch.randn(3, 5, 4, generator=gen, dtype=torch.float64)
    words = torch.randn(2, 4, 4, generator=gen, dtype=torch.float64)
    audio_len, word_len = [5, 2, 3], [4, 1]
    audio_mask = torch.arange(5)[None, :] < torch.tensor(audio_len)[:, None]
    word_mask = torch.arange(4)[None, :] < torch.tensor(word_len)[:, None]
    got = frame_word_scores(audio, audio_mask, words, word_mask)
    assert torch.allclose(got, _naive_frame_word(audio, audio_len, words, word_len), atol=1e-12)
    # Padding content and padded length do not matter.
    junk_a = torch.where(audio_mask[..., None], audio, 100 * torch.randn(3, 5, 4, generator=gen, dtype=torch.float64))
    longer = torch.cat([words, torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)], dim=1)
    longer_mask = torch.cat([word_mask, torch.zeros(2, 3, dtype=torch.bool)], dim=1)
    assert torch.allclose(frame_word_scores(junk_a, audio_mask, longer, longer_mask), got, atol=1e-12)
    # One caption alone, unpadded, scores the same as in the padded batch.
    alone = frame_word_scores(audio[1:2, :2], None, words[1:2, :1], None)
    assert alone.item() == pytest.approx(got[1, 1].item(), abs=1e-12)


def test_frame_word_scores_gradient_and_size():
    gen = torch.Generator().manual_seed(5)
    audio = torch.randn(64, 64, 128, generator=gen).requires_grad_()
    words = torch.randn(64, 16, 128, generator=gen).requires_grad_()
    audio_mask = torch.arange(64)[None, :] < torch.randint(1, 65, (64, 1), generator=gen)
    word_mask = torch.arange(16)[None, :] < torch.randint(1, 17, (64, 1), generator=gen)
    S = frame_word_scores(audio, audio_mask, words, word_mask)
    assert S.shape == (64, 64) and (S >= 0).all() and (S <= 1 + 1e-6).all()
    S.sum().backward()
    assert torch.isfinite(audio.grad).all() and torch.isfinite(words.grad).all()
    assert not audio.grad[~audio_mask].any() and not words.grad[~word_mask].any()
    S_tt = frame_word_scores(words.detach(), word_mask, words.detach(), word_mask)  # within-modality
    assert torch.allclose(S_tt, S_tt.T, atol=1e-6)


def test_frame_word_scores_gradcheck():
    gen = torch.Generator().manual_seed(7)
    audio = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64).requires_grad_()
    words = torch.randn(3, 2, 4, generator=gen, dtype=torch.float64).requires_grad_()
    audio_mask = torch.tensor([[True, True, False], [True, True, True]])
    word_mask = torch.tensor([[True, False], [True, True], [True, True]])
    assert torch.autograd.gradcheck(lambda a, w: frame_word_scores(a, audio_mask, w, word_mask), (audio, words))


def test_pooled_scores_are_cosines():
    gen = torch.Generator().manual_seed(6)
    a, t = torch.randn(3, 5, generator=gen), torch.randn(4, 5, generator=gen)
    expected = torch.nn.functional.cosine_similarity(a[:, None], t[None], dim=2)
    assert torch.allclose(pooled_scores(a, t), expected, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Contract


@pytest.mark.parametrize("kwargs,name", [
    ({"rule": "nope"}, "`rule`"),
    ({"rule": "hard_k", "select_by": "text"}, "`S_tt`"),
    ({"rule": "easy_k", "select_by": "audio"}, "`S_aa`"),
    ({"rule": "hard_k", "select_by": "pooled"}, "`select_by`"),
    ({"rule": "hard_k", "k": 0}, "`k`"),
    ({"rule": "hard_k", "k": 1.5}, "`k`"),
    ({"rule": "hard_k", "k": True}, "`k`"),
    ({"rule": "semi_hard", "variant": "percentile"}, "`variant`"),
    ({"rule": "mean", "k": 2}, "`k`"),
    ({"rule": "mean", "margin": 0.0}, "`margin`"),
    ({"rule": "mean", "margin": -1.0}, "`margin`"),
    ({"rule": "mean", "margin": math.nan}, "`margin`"),
    ({"rule": "mean", "margin": math.inf}, "`margin`"),
    ({"rule": "mean", "S_tt": torch.zeros(3, 3)}, "`S_tt`"),
    ({"rule": "mean", "clip_ids": torch.arange(3)}, "`clip_ids`"),
    ({"rule": "mean", "S": torch.zeros(4, 3)}, "`S`"),
])
def test_hinge_loss_rejects_bad_arguments(kwargs, name):
    args = {"S": _scores(), "clip_ids": CLIPS, "margin": 0.5} | kwargs
    with pytest.raises(ValueError, match=name):
        hinge_loss(args.pop("S"), args.pop("clip_ids"), args.pop("rule"), **args)


def test_other_functions_reject_bad_arguments():
    with pytest.raises(ValueError, match="`temperature`"):
        infonce_loss(_scores(), CLIPS, 0.0)
    with pytest.raises(ValueError, match="`clip_ids`"):
        infonce_loss(_scores(), CLIPS[:3], 0.1)
    with pytest.raises(ValueError, match="`audio_mask`"):
        frame_word_scores(torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.bool), torch.randn(1, 2, 4), None)
    with pytest.raises(ValueError, match="`word_mask`"):
        frame_word_scores(torch.randn(2, 3, 4), None, torch.randn(1, 2, 4), torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="`audio`"):
        frame_word_scores(torch.randn(2, 3, 4), None, torch.randn(1, 2, 5), None)
    with pytest.raises(ValueError, match="`a`"):
        pooled_scores(torch.randn(2, 3), torch.randn(2, 4))
