"""Audio-caption scores, negative selection and the bidirectional hinge loss of Xie et al. (audio-text retrieval).

Shape convention, used by every function here: a batch holds B caption-level pairs; audio row i and caption row
i are a positive pair, and ``clip_ids`` (B,) names each pair's clip. A clip has several captions, so one clip can
occur twice in a batch. A score matrix S (B, B) has S[a, t] = score of audio a with caption t, the positives
S_ii on its diagonal; ``S_aa`` and ``S_tt`` (B, B) are audio-audio and caption-caption scores. Anchor i's
candidate negatives are C_i = {j : clip_ids[j] != clip_ids[i]}: another caption of the anchor's own clip is not
a negative.

A selection is a pair of (B, B) weight masks ``(neg_audio, neg_text)``. neg_audio[i, a] weights audio a as a
negative of caption anchor i (the term S[a, i]); neg_text[i, u] weights caption u as a negative of audio anchor i
(the term S[i, u]). A row sums to 1 over its selected negatives, or is all zero when the anchor selects none.
Rules are registered in ``SELECTIONS``. Selection is index selection on detached scores: the gradient reaches
only the selected scores and the positives. Ties go to the lowest index, so a selection is reproducible.

The objective of Xie et al. is a margin (triplet ranking) loss, not InfoNCE; ``infonce_loss`` is here to compare
against. It works in log space, so it stays finite at temperature 0.01.

- [0] Xie et al., 2023, On Negative Sampling for Contrastive Audio-Text Retrieval, arXiv:2211.04070
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from trainables.losses import check_positive, cross_modal_infonce

_BY = ("cross", "text", "audio")
_VARIANTS = ("nearest", "band")


def frame_word_scores(audio: Tensor, audio_mask: Tensor | None, words: Tensor, word_mask: Tensor | None) -> Tensor:
    """Xie's score S(A, T): the mean ReLU-clipped cosine over every (real frame, real word) pair.

    This is deliberately the unpadded, retrieval-time score (the original postprocessing/xmodal_scores.py), not
    the padded training score of the original code, where padding counts in the 1/(T W) mean and makes a score
    depend on what else is in the batch. Padded positions are zeroed after normalisation, so their cosines are 0
    and only the real counts divide. The cosines come from one (Na T, d) @ (d, Nt W) product viewed as
    (Na, T, Nt, W): one tensor of that size, clipped in place, and no permuted copy. Called with one modality
    twice it gives S_aa (frames vs frames) or S_tt (words vs words).

    Args:
        audio: frame embeddings, unnormalised. Shape: (Na, T, d).
        audio_mask: True at real frames; None if none is padding. Shape: (Na, T).
        words: word embeddings, unnormalised. Shape: (Nt, W, d).
        word_mask: True at real words; None if none is padding. Shape: (Nt, W).

    Returns:
        S[a, t]. Shape: (Na, Nt).

    Raises:
        ValueError: mismatched shapes; a mask row with no real position (its mean is undefined).
    """
    if audio.ndim != 3 or words.ndim != 3 or audio.shape[2] != words.shape[2]:
        raise ValueError(f"`audio` and `words` must have shapes (Na, T, d) and (Nt, W, d); got "
                         f"{tuple(audio.shape)} and {tuple(words.shape)}")
    a = _masked_unit(audio, audio_mask, "audio_mask")
    w = _masked_unit(words, word_mask, "word_mask")
    (na, t, d), (nt, nw) = audio.shape, words.shape[:2]
    cos = (a.reshape(na * t, d) @ w.reshape(nt * nw, d).T).view(na, t, nt, nw)
    total = cos.relu_().sum(dim=(1, 3))
    return total / (_count(audio_mask, audio)[:, None] * _count(word_mask, words)[None, :])


def pooled_scores(a: Tensor, t: Tensor) -> Tensor:
    """The pooled cosine score: a cheaper alternative to the frame-word score, cosine of pooled embeddings.

    Args:
        a: mean-pooled audio embeddings, unnormalised. Shape: (Na, d).
        t: mean-pooled caption embeddings, unnormalised. Shape: (Nt, d).

    Returns:
        S[a, t]. Shape: (Na, Nt).
    """
    if a.ndim != 2 or t.ndim != 2 or a.shape[1] != t.shape[1]:
        raise ValueError(f"`a` and `t` must have shapes (Na, d) and (Nt, d); got {tuple(a.shape)} and "
                         f"{tuple(t.shape)}")
    return F.normalize(a, dim=1) @ F.normalize(t, dim=1).T


def candidate_mask(clip_ids: Tensor) -> Tensor:
    """C as a (B, B) bool mask, C[i, j] = clip_ids[j] != clip_ids[i]; the diagonal is always False."""
    return clip_ids[:, None] != clip_ids[None, :]


# ----------------------------------------------------------------------------------------------------------
# Selection rules: (S, candidates, **context and knobs) -> (neg_audio, neg_text), both (B, B), on detached scores


def select_uniform_one(S: Tensor, candidates: Tensor, *,
                       generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """random-NS: one candidate per direction, uniformly and independently.

    Each anchor takes the candidate with the largest of i.i.d. uniform keys, which is uniform over C_i and needs
    no per-row loop. Deterministic given ``generator`` (None draws from the global generator).
    """
    device = generator.device if generator is not None else S.device
    keys = torch.rand((2, *S.shape), generator=generator, device=device).to(S.device)  # float32: few ties
    return tuple(_top_k(keys[d], candidates, 1, largest=True).to(S.dtype) for d in (0, 1))


def select_mean(S: Tensor, candidates: Tensor) -> tuple[Tensor, Tensor]:
    """full-batch-NS: every candidate, the hinge averaged (not summed) over |C_i|."""
    weights = candidates.to(S.dtype)
    weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1)
    return weights, weights


def select_hard_k(S: Tensor, candidates: Tensor, *, select_by: str = "cross", k: int = 1, S_aa: Tensor | None = None,
                  S_tt: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """hard-NS (``select_by="cross"``, k = 1), hard-text-NS and hard-audio-NS: the k highest-scoring candidates.

    ``cross`` ranks each direction by its own cross-modal score, independently (caption anchor i ranks audios by
    S[a, i], audio anchor i ranks captions by S[i, u]). ``text`` and ``audio`` rank by S_tt[i, j] or S_aa[i, j]
    and use the same indices j for both directions, as in the paper. An anchor with fewer than k candidates
    takes all of them. k = 1 is the paper; larger k averages the hinge over the k picks.
    """
    return _ranked(S, candidates, select_by, k, S_aa, S_tt, largest=True)


def select_easy_k(S: Tensor, candidates: Tensor, *, select_by: str = "cross", k: int = 1, S_aa: Tensor | None = None,
                  S_tt: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """easy-text-NS and easy-audio-NS (and a cross-modal easy rule): the k lowest-scoring candidates.

    Same ``select_by`` and ``k`` as ``select_hard_k``: ``text`` and ``audio`` share one index set for both directions.
    """
    return _ranked(S, candidates, select_by, k, S_aa, S_tt, largest=False)


def select_semi_hard(S: Tensor, candidates: Tensor, *, variant: str = "nearest",
                     margin: float) -> tuple[Tensor, Tensor]:
    """semi-hard-NS: per direction independently, the candidate nearest the positive, or FaceNet's band.

    ``nearest`` (Xie et al.) takes argmin_j |score_j - S_ii|, which may lie ABOVE the positive; an exact tie in
    distance, above or below, goes to the lowest index. ``band`` (FaceNet) averages over every candidate with
    S_ii - margin < score_j < S_ii, the band's width being the hinge margin, as in FaceNet. An anchor whose band
    is empty selects nothing but still counts in the loss's mean, contributing 0. Falling back to the nearest
    candidate below S_ii would change nothing: with the band empty, that candidate is at or below S_ii - margin,
    so its hinge is already 0. Falling back to one above S_ii would bring back the hard negatives the band
    exists to avoid (Xie et al. find hard cross-modal selection collapses the features).
    """
    pos = S.diagonal()[:, None]
    by_caption, by_audio = S.T, S  # row i: the scores of caption anchor i's, audio anchor i's negatives
    if variant == "nearest":
        return (_top_k((by_caption - pos).abs(), candidates, 1, largest=False),
                _top_k((by_audio - pos).abs(), candidates, 1, largest=False))
    if variant != "band":
        raise ValueError(f"`variant` is {variant!r} but must be one of {', '.join(_VARIANTS)}")

    def band(scores: Tensor) -> Tensor:
        inside = (candidates & (scores > pos - margin) & (scores < pos)).to(S.dtype)
        return inside / inside.sum(dim=1, keepdim=True).clamp(min=1)

    return band(by_caption), band(by_audio)


# Keyed by the rule name of a strategy; context arguments (margin, S_aa, S_tt, generator) a rule does not name
# are not passed to it, so one call site serves every rule.
SELECTIONS: dict[str, Callable[..., tuple[Tensor, Tensor]]] = {
    "uniform_one": select_uniform_one,
    "mean": select_mean,
    "hard_k": select_hard_k,
    "easy_k": select_easy_k,
    "semi_hard": select_semi_hard,
}
_CONTEXT = ("margin", "S_aa", "S_tt", "generator")


# ----------------------------------------------------------------------------------------------------------
# Losses


def hinge_loss(S: Tensor, clip_ids: Tensor, rule: str, *, margin: float, S_aa: Tensor | None = None,
               S_tt: Tensor | None = None, generator: torch.Generator | None = None, **rule_knobs: object) -> Tensor:
    """Xie et al.'s bidirectional triplet loss over the negatives a selection rule picks.

    L = (1/B') sum_i [ sum_a neg_audio[i, a] [S[a, i] - S_ii + m]_+ + sum_u neg_text[i, u] [S[i, u] - S_ii + m]_+ ]
    over the B' anchors that have a candidate: one whose whole batch is its own clip has no negative to contrast
    and is left out of the mean rather than counted as a zero. With no such anchor the loss is 0, still attached
    to S's graph so that a training step need not special-case it.

    Args:
        S: cross-modal scores, S[a, t]. Shape: (B, B).
        clip_ids: clip of each pair. Shape: (B,).
        rule: a key of ``SELECTIONS``.
        margin: m > 0.
        S_aa: audio-audio scores, needed by ``select_by="audio"``. Shape: (B, B).
        S_tt: caption-caption scores, needed by ``select_by="text"``. Shape: (B, B).
        generator: random source of ``uniform_one``.
        **rule_knobs: the rule's own knobs: ``select_by`` and ``k`` (hard_k, easy_k), ``variant`` (semi_hard).

    Returns:
        Scalar loss.

    Raises:
        ValueError: unknown rule or knob; a knob out of range; a missing S_aa / S_tt; margin not a finite
            number > 0; mismatched shapes.
    """
    if rule not in SELECTIONS:
        raise ValueError(f"`rule` is {rule!r} but must be one of {', '.join(SELECTIONS)}")
    check_positive(margin, "margin")
    b = _check_scores(S, clip_ids)
    for name, extra in (("S_aa", S_aa), ("S_tt", S_tt)):
        if extra is not None and tuple(extra.shape) != (b, b):
            raise ValueError(f"`{name}` must have shape ({b}, {b}) like S; got {tuple(extra.shape)}")
    select = SELECTIONS[rule]
    params = inspect.signature(select).parameters
    for key in rule_knobs:
        if key not in params or key in _CONTEXT or key in ("S", "candidates"):
            knobs = [p for p in params if p not in _CONTEXT and p not in ("S", "candidates")]
            raise ValueError(f"`{key}` is not a knob of rule '{rule}' (knobs: {', '.join(knobs) or 'none'})")
    context = {"margin": float(margin), "S_aa": S_aa, "S_tt": S_tt, "generator": generator}
    kwargs = {key: value for key, value in context.items() if key in params}
    kwargs = {key: value.detach() if isinstance(value, Tensor) else value for key, value in kwargs.items()}
    with torch.no_grad():
        candidates = candidate_mask(clip_ids.to(S.device))
        neg_audio, neg_text = select(S.detach(), candidates, **kwargs, **rule_knobs)
    pos = S.diagonal()[:, None]
    caption_anchor = (S.T - pos + margin).relu()  # [i, a] = [S[a, i] - S_ii + m]_+
    audio_anchor = (S - pos + margin).relu()  # [i, u] = [S[i, u] - S_ii + m]_+
    per_anchor = (neg_audio * caption_anchor).sum(dim=1) + (neg_text * audio_anchor).sum(dim=1)
    return per_anchor.sum() / candidates.any(dim=1).sum().clamp(min=1)


def infonce_loss(S: Tensor, clip_ids: Tensor, temperature: float) -> Tensor:
    """Cross-modal InfoNCE, the mean of audio->text and text->audio, for comparison with the hinge loss.

    Another caption of the anchor's clip is neither a negative nor a positive: it is left out of the
    log-sum-exp. Anchors without a candidate are left out of the mean, as in ``hinge_loss``. Logits S/t enter
    only through logsumexp, never exp then log, so large scores at t = 0.01 stay finite.

    Args:
        S: cross-modal cosine-like scores, S[a, t]. Shape: (B, B).
        clip_ids: clip of each pair. Shape: (B,).
        temperature: t > 0.

    Returns:
        Scalar loss.
    """
    check_positive(temperature, "temperature")
    _check_scores(S, clip_ids)
    return cross_modal_infonce(S, temperature, clip_ids)


# ----------------------------------------------------------------------------------------------------------
# Helpers


def _ranked(S: Tensor, candidates: Tensor, select_by: str, k: int, S_aa: Tensor | None, S_tt: Tensor | None,
            largest: bool) -> tuple[Tensor, Tensor]:
    """The k best candidates per anchor, by cross-modal scores (two directions) or one within-modal matrix."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"`k` is {k!r} but must be an integer >= 1")
    if select_by == "cross":
        return _top_k(S.T, candidates, int(k), largest), _top_k(S, candidates, int(k), largest)
    if select_by not in _BY:
        raise ValueError(f"`select_by` is {select_by!r} but must be one of {', '.join(_BY)}")
    name, within = ("S_tt", S_tt) if select_by == "text" else ("S_aa", S_aa)
    if within is None:
        raise ValueError(f"`{name}` is required by select_by={select_by!r}")
    shared = _top_k(within.to(S.dtype), candidates, int(k), largest)
    return shared, shared


def _top_k(keys: Tensor, candidates: Tensor, k: int, largest: bool) -> Tensor:
    """Weight 1/k' on each of the k' = min(k, |C_i|) best candidates of row i; ties to the lowest index.

    torch.topk does not specify its tie order; two stable sorts do (by key, then candidates first), and neither
    relies on a sentinel score such as -inf that a real score could equal.
    """
    b = keys.shape[0]
    order = torch.sort(keys, dim=1, descending=largest, stable=True).indices
    outside = (~candidates.gather(1, order)).to(torch.int8)
    order = order.gather(1, torch.sort(outside, dim=1, stable=True).indices)
    k = min(k, keys.shape[1])
    taken = candidates.sum(dim=1, keepdim=True).clamp(max=k)  # (B, 1)
    valid = torch.arange(k, device=keys.device)[None, :] < taken
    weights = torch.zeros(b, keys.shape[1], dtype=keys.dtype, device=keys.device)
    return weights.scatter_(1, order[:, :k], valid.to(keys.dtype) / taken.clamp(min=1))


def _masked_unit(x: Tensor, mask: Tensor | None, name: str) -> Tensor:
    """Unit vectors at real positions, zero vectors at padding."""
    unit = F.normalize(x, dim=-1)
    if mask is None:
        return unit
    if tuple(mask.shape) != tuple(x.shape[:2]):
        raise ValueError(f"`{name}` must have shape {tuple(x.shape[:2])}; got {tuple(mask.shape)}")
    if not mask.any(dim=1).all():
        raise ValueError(f"`{name}` has a row with no real position: its mean score is undefined")
    return unit * mask[..., None].to(unit.dtype)


def _count(mask: Tensor | None, x: Tensor) -> Tensor:
    if mask is None:
        return torch.full((x.shape[0],), x.shape[1], dtype=x.dtype, device=x.device)
    return mask.sum(dim=1).to(x.dtype)


def _check_scores(S: Tensor, clip_ids: Tensor) -> int:
    if S.ndim != 2 or S.shape[0] != S.shape[1] or S.shape[0] < 1:
        raise ValueError(f"`S` must have shape (B, B) with B >= 1; got {tuple(S.shape)}")
    if tuple(clip_ids.shape) != (S.shape[0],):
        raise ValueError(f"`clip_ids` must have shape ({S.shape[0]},) like S's rows; got {tuple(clip_ids.shape)}")
    return S.shape[0]
