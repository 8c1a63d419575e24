"""Two-view (SimCLR-style) contrastive losses: InfoNCE and its negative weightings; and the cross-modal InfoNCE that
the audio-text and audio-visual tasks share (:func:`cross_modal_infonce`).

Shape convention, used by every function here: a batch of B items gives z1, z2 of shape (B, d), row i of
each being a positive pair. The n = 2B embeddings are [z1; z2]; anchor k's partner is k +- B, and its
N = 2B - 2 negatives are all the other embeddings (both views of every other item). Per-anchor quantities
have shape (n,), anchor-to-negative quantities (n, N).

A negative weighting is a pure function of the cosines, registered in ``NEGATIVE_WEIGHTINGS`` under the
``weighting`` part of a strategy (``trainables.strategies``). Everything is computed in log space from the
cosines, never as exp(s/t) followed by log, so losses and gradients stay finite in float32 at t = 0.01, for
nearly identical views and for large beta.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from trainables.strategies import get_strategy


def similarity_parts(z1: Tensor, z2: Tensor) -> tuple[Tensor, Tensor]:
    """Cosine of each anchor to its positive partner and to its N negatives.

    Row k of ``neg`` lists the negatives in the order of [z1; z2] with anchor k and its partner removed. The
    three (B, B) blocks are cut without a gather or a boolean mask: dropping a square's diagonal is a reshape.

    Args:
        z1: first views, unnormalised. Shape: (B, d), B >= 2.
        z2: second views, unnormalised. Shape: (B, d).

    Returns:
        pos: s_{k,p(k)}, the same value for both views of an item. Shape: (n,).
        neg: s_{kj} for the negatives j of anchor k. Shape: (n, N).
    """
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    s11, s12, s22 = z1 @ z1.T, z1 @ z2.T, z2 @ z2.T
    pos = s12.diagonal()
    top = torch.cat([_off_diagonal(s11), _off_diagonal(s12)], dim=1)  # anchors in z1
    bottom = torch.cat([_off_diagonal(s12.T), _off_diagonal(s22)], dim=1)  # anchors in z2
    return torch.cat([pos, pos]), torch.cat([top, bottom])


def check_positive(value: float, name: str) -> None:
    """A finite number > 0 (a temperature, a margin), else ValueError naming it; bool is not a number here."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
        raise ValueError(f"`{name}` is {value!r} but must be a finite number > 0")


def check_pair(x: Tensor, y: Tensor, names: str) -> None:
    """Two batches of B >= 2 paired embeddings, row i of each a positive pair, else ValueError naming them."""
    if x.ndim != 2 or x.shape != y.shape or x.shape[0] < 2:
        raise ValueError(f"{names} must both have shape (B, d) with B >= 2; got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")


def two_view_loss(z1: Tensor, z2: Tensor, strategy: str, temperature: float, **params: object) -> Tensor:
    """Mean loss over the 2B anchors of a two-view batch under a registered strategy.

    Only the strategy's negative weighting acts here: its data parts (positive constructor, batch sampler)
    have already shaped the batch, so every strategy whose weighting is ``all`` computes plain InfoNCE.

    Args:
        z1: first views, unnormalised (normalised here). Shape: (B, d), B >= 2.
        z2: second views, unnormalised. Shape: (B, d).
        strategy: a key of ``trainables.strategies.STRATEGIES``.
        temperature: t > 0.
        **params: loss knobs of the strategy (``tau_plus``, ``beta``, ``variant``, ``margin``); a missing
            knob takes the strategy's default.

    Returns:
        Scalar loss.

    Raises:
        ValueError: unknown strategy; a parameter that is not a loss knob of the strategy (data knobs such
            as ``sp_ratio`` included) or is out of range; temperature <= 0; B < 2 or mismatched shapes.
    """
    spec = get_strategy(strategy)
    for key in params:
        if key not in spec.loss_knobs:
            allowed = ", ".join(spec.loss_knobs) or "none"
            raise ValueError(f"`{key}` is not a loss knob of strategy '{strategy}' (loss knobs: {allowed})")
    knobs = spec.resolve(params)
    return weighted_loss(z1, z2, spec.weighting, temperature, **{k: knobs[k] for k in spec.loss_knobs})


def weighted_loss(z1: Tensor, z2: Tensor, weighting: str, temperature: float, **knobs: object) -> Tensor:
    """:func:`two_view_loss` by the weighting part's name (a key of ``NEGATIVE_WEIGHTINGS``) and its checked knobs:
    what a task's trial calls once its preset is resolved."""
    check_positive(temperature, "temperature")
    check_pair(z1, z2, "z1 and z2")
    if z1.dtype in (torch.float16, torch.bfloat16):  # cosines divided by a small t need float32 resolution
        z1, z2 = z1.float(), z2.float()
    with torch.autocast(z1.device.type, enabled=False):  # for the same reason, not in half under autocast
        pos, neg = similarity_parts(z1, z2)
        return NEGATIVE_WEIGHTINGS[weighting](pos, neg, float(temperature), **knobs).mean()


def cross_modal_infonce(S: Tensor, temperature: float, clip_ids: Tensor | None = None) -> Tensor:
    """Cross-modal InfoNCE from a score matrix, the mean of its two directions: row i of modality A and column i of
    modality B are a positive pair, the other columns of row i (rows of column i) its negatives.

    With ``clip_ids``, an item of the anchor's own clip (another caption of the same audio) is neither a negative nor
    a positive: it is left out of the log-sum-exp, and an anchor without a negative is left out of the mean. Without,
    every item is its own clip: Wang et al.'s audio-visual loss, ``ln B`` when every score is equal. Logits S/t enter
    only through logsumexp, so t = 0.01 stays finite; a half-precision S is scored in float32.

    Args:
        S: scores (cosines), S[i, j] of A's item i and B's item j. Shape: (B, B).
        temperature: t > 0.
        clip_ids: the clip of each pair, or None. Shape: (B,).

    Returns:
        Scalar loss.
    """
    check_positive(temperature, "temperature")
    if S.dtype in (torch.float16, torch.bfloat16):  # scores divided by a small t need float32 resolution
        S = S.float()
    with torch.autocast(S.device.type, enabled=False):
        eye = torch.eye(S.shape[0], dtype=torch.bool, device=S.device)
        ids = clip_ids.to(S.device) if clip_ids is not None else None
        candidates = ids[:, None] != ids[None, :] if ids is not None else ~eye
        logits = S / float(temperature)
        masked = logits.masked_fill(~(candidates | eye), -math.inf)
        pos = logits.diagonal()
        per_anchor = (torch.logsumexp(masked, dim=1) - pos) + (torch.logsumexp(masked, dim=0) - pos)
        has = candidates.any(dim=1)
        return (per_anchor * has).sum() / (2 * has.sum().clamp(min=1))


def infonce(pos: Tensor, neg: Tensor, temperature: float) -> Tensor:
    """NT-Xent, every negative counted once: the debiased loss at tau_plus = 0.

    - [0] Chen et al., 2020, A Simple Framework for Contrastive Learning (SimCLR), arXiv:2002.05709

    Args:
        pos: cosine to the positive. Shape: (n,).
        neg: cosines to the negatives. Shape: (n, N).
        temperature: t > 0.

    Returns:
        Per-anchor -log(pos / (pos + sum_j neg_j)), pos = e^{s_p/t}, neg_j = e^{s_j/t}. Shape: (n,).
    """
    return debiased(pos, neg, temperature, tau_plus=0.0)


def debiased(pos: Tensor, neg: Tensor, temperature: float, tau_plus: float) -> Tensor:
    """DCL: the negative mass minus the expected false-negative mass; the HCL estimator at beta = 0.

    - [0] Chuang et al., 2020, Debiased Contrastive Learning, arXiv:2007.00224

    Args:
        pos: cosine to the positive. Shape: (n,).
        neg: cosines to the negatives. Shape: (n, N).
        temperature: t > 0.
        tau_plus: class prior, the probability that a negative shares the anchor's class; 0 <= tau_plus < 1.

    Returns:
        Per-anchor losses. Shape: (n,).
    """
    return hard(pos, neg, temperature, tau_plus=tau_plus, beta=0.0)


def hard(pos: Tensor, neg: Tensor, temperature: float, tau_plus: float, beta: float) -> Tensor:
    """HCL: negatives importance-weighted by e^{beta s/t}, debiased by tau_plus, clamped at N e^{-1/t}.

    Ng = max((R - tau_plus N pos) / (1 - tau_plus), N e^{-1/t}), R = sum_j w_j e^{s_j/t}, with the
    mean-normalised weights w_j = e^{beta s_j/t} / mean_k e^{beta s_k/t} not detached, as in the reference
    code. In log space, log R = log N + LSE((beta+1) s/t) - LSE(beta s/t). beta = 0 skips the weights and
    tau_plus = 0 the subtraction and clamp (the clamp cannot bind then); both shortcuts are exact, so
    hard(beta=0) == debiased and debiased(tau_plus=0) == infonce hold bit for bit.

    - [0] Robinson et al., 2021, Contrastive Learning with Hard Negative Samples, arXiv:2010.04592
    - [1] Chuang et al., 2020, Debiased Contrastive Learning, arXiv:2007.00224

    Args:
        pos: cosine to the positive. Shape: (n,).
        neg: cosines to the negatives. Shape: (n, N).
        temperature: t > 0.
        tau_plus: class prior, 0 <= tau_plus < 1.
        beta: concentration on hard negatives, beta >= 0.

    Returns:
        Per-anchor -log(pos / (pos + Ng)). Shape: (n,).
    """
    pos_logit = pos / temperature
    log_ng = _LogNegativeMass.apply(neg, beta, temperature)
    if tau_plus != 0:
        log_ng = _debias(log_ng, pos_logit, neg.shape[1], temperature, tau_plus)
    return torch.logaddexp(pos_logit, log_ng) - pos_logit


def semi_hard(pos: Tensor, neg: Tensor, temperature: float, variant: str, margin: float) -> Tensor:
    """InfoNCE over the semi-hard negatives only: those just below the positive, or the one nearest it.

    ``band`` keeps s_p - margin < s_j < s_p (FaceNet); ``nearest`` keeps argmin_j |s_j - s_p|, the first
    index on ties (Xie et al.). The loss is -log(pos / (pos + sum_sel neg_j)) = log(1 + sum_sel
    e^{(s_j - s_p)/t}). An anchor with no semi-hard negative contributes 0 and no gradient: as in FaceNet, no
    semi-hard negative means no loss term, rather than a fallback to some other negative. Selection is by
    mask or index and is not differentiated; the gradient flows through the selected cosines and s_p.

    - [0] Schroff et al., 2015, FaceNet, arXiv:1503.03832
    - [1] Xie et al., 2023, On Negative Sampling for Contrastive Audio-Text Retrieval, arXiv:2211.04070

    Args:
        pos: cosine to the positive. Shape: (n,).
        neg: cosines to the negatives. Shape: (n, N).
        temperature: t > 0.
        variant: ``band`` or ``nearest``.
        margin: band width in cosine units, 0 < margin <= 2 (unused by ``nearest``).

    Returns:
        Per-anchor losses. Shape: (n,).
    """
    if variant == "band":
        return _BandLoss.apply(neg, pos, temperature, margin)
    if variant != "nearest":
        raise ValueError(f"`variant` is {variant!r} but must be one of band, nearest")
    with torch.no_grad():
        nearest = (neg - pos[:, None]).abs_().argmin(dim=1, keepdim=True)
    picked = (neg.gather(1, nearest).squeeze(1) - pos) / temperature
    return torch.logaddexp(picked, torch.zeros_like(picked))


class _LogNegativeMass(torch.autograd.Function):
    """Per row, log R = log sum_j w_j e^{s_j/t}, HCL's importance-weighted (mean-normalised) negative mass.

    log R = log N + LSE((beta+1) s/t) - LSE(beta s/t); at beta = 0 every weight is 1 and the tilt is skipped,
    leaving log R = LSE(s/t). Autograd through torch.logsumexp recomputes the exponentials in the backward
    pass; keeping the forward ones (one pass, two when beta > 0) made the CPU step 10-30% faster. The gradient
    (beta+1)/t softmax((beta+1) s/t) - beta/t softmax(beta s/t) differentiates the weights too, as HCL does.
    """

    @staticmethod
    def forward(ctx, neg: Tensor, beta: float, temperature: float) -> Tensor:
        top = neg.amax(dim=1, keepdim=True)
        shifted = neg - top  # <= 0: no exponential overflows and each row sum is >= 1
        tilt = torch.mul(shifted, beta / temperature).exp_() if beta else None
        mass = shifted.mul_((beta + 1.0) / temperature).exp_()
        sum_mass = mass.sum(dim=1, keepdim=True)
        log_r = sum_mass.log() + top / temperature
        sum_tilt = None
        if tilt is not None:
            sum_tilt = tilt.sum(dim=1, keepdim=True)
            log_r = log_r + (math.log(neg.shape[1]) - sum_tilt.log())
        ctx.save_for_backward(mass, sum_mass, tilt, sum_tilt)
        ctx.coefs = ((beta + 1.0) / temperature, beta / temperature)
        return log_r.squeeze(1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        mass, sum_mass, tilt, sum_tilt = ctx.saved_tensors
        c_mass, c_tilt = ctx.coefs
        grad = grad[:, None]
        grad_neg = mass * (grad * c_mass / sum_mass)
        if tilt is not None:
            grad_neg.addcmul_(tilt, grad * (-c_tilt / sum_tilt))
        return grad_neg, None, None


class _BandLoss(torch.autograd.Function):
    """Per row, log(1 + sum_j [s_p - margin < s_j < s_p] e^{(s_j - s_p)/t}).

    The selected exponents lie in (-margin/t, 0), so the sum cannot overflow; the others are zeroed. The
    gradient reuses the forward exponentials: e_j / (t (1 + sum)) for s_j, and minus their sum for s_p.
    Through plain autograd (boolean masks, where, exp) the CPU step took ~1.4x InfoNCE's.
    """

    @staticmethod
    def forward(ctx, neg: Tensor, pos: Tensor, temperature: float, margin: float) -> Tensor:
        # threshold_(x, th, v) keeps x where x > th, else v: two strict tests give depth = s_p - s_j inside
        # the band, +inf outside; then a 1/0 indicator, and exponents >= -margin/t (on CPU, exp of -inf or
        # of an underflowing value takes a path several times slower).
        depth = torch.threshold_(neg - pos[:, None], -margin, -math.inf).neg_()
        depth = torch.threshold_(depth, 0.0, math.inf)
        inside = torch.rsub(depth, margin).sign_().relu_()
        terms = depth.clamp_(max=margin).mul_(-1.0 / temperature).exp_().mul_(inside)
        total = terms.sum(dim=1)
        ctx.save_for_backward(terms, total)
        ctx.temperature = temperature
        return torch.log1p(total) + 0.0 * pos  # the band tests drop NaN; keep a NaN embedding visible

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None, None]:
        terms, total = ctx.saved_tensors
        scale = grad / (ctx.temperature * (1.0 + total))
        return terms * scale[:, None], -scale * total, None, None


def _off_diagonal(square: Tensor) -> Tensor:
    """The (B, B-1) off-diagonal entries of a (B, B) matrix, row by row in column order."""
    b = square.shape[0]
    return square.flatten()[1:].view(b - 1, b + 1)[:, :-1].reshape(b, b - 1)


def _debias(log_r: Tensor, pos_logit: Tensor, n_neg: int, temperature: float, tau_plus: float) -> Tensor:
    """log max((R - tau_plus N pos) / (1 - tau_plus), N e^{-1/t}) from log R, without leaving log space.

    log(A - B) = log A + log1mexp(log B - log A) with log1mexp(x) = log(-expm1(x)): no cancellation near
    x = 0, and for very negative x only the relative accuracy of a result ~ -e^x is lost, which vanishes
    next to log A. Where the clamp binds (A <= B, or the result is below the floor) the floor, a constant,
    is used: that anchor sends no gradient to its negatives. The branch not taken gets a safe argument, so
    no inf or NaN leaks into the gradient through ``torch.where``; the 1e-30 tolerance keeps log1mexp's
    gradient (~1/|x|) finite in float32, and moves the loss by far less than float precision.
    """
    floor = math.log(n_neg) - 1.0 / temperature
    log_ratio = math.log(tau_plus * n_neg) + pos_logit - log_r  # log(B / A)
    below = log_ratio < -1e-30
    raw = log_r + torch.log(-torch.expm1(torch.where(below, log_ratio, -1.0))) - math.log1p(-tau_plus)
    return torch.where(below & (raw > floor), raw, floor)


# Keyed by ``Strategy.weighting``; each maps (pos (n,), neg (n, N), temperature, **knobs) to (n,) losses.
NEGATIVE_WEIGHTINGS = {"all": infonce, "debiased": debiased, "importance": hard, "semi_hard": semi_hard}
