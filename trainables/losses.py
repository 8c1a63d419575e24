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
    return _HardLoss.apply(pos, neg, float(temperature), float(tau_plus), float(beta))


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
    return _NearestLoss.apply(neg, pos, temperature)


# exp(x) = exp2(x log2 e). On CPU torch.exp2 is ~4x faster than torch.exp in float32 (~3x in float64), and it does
# not slow down ~10x on exponents that underflow (t = 0.01) or are -inf. Folding log2 e into the scale applied anyway
# costs one more rounding of the exponent x <= 0 (measured from the row's largest term): a relative error ~1e-7 |x|
# in e^x, largest on terms that are e^{-|x|} small, so each row sum moves by ~1e-7 of its value.
_LOG2_E = math.log2(math.e)

# On CPU, HCL's tilt is formed a block of rows at a time (see _fold_tilt), in at most _MAX_BLOCKS blocks of at least
# _BLOCK_BYTES: the scratch stays small enough to come from memory the allocator already holds (a fresh (n, N) one
# page-faults, ~1 ms at B = 512 on a busy machine), and the blocks few enough that their ~10 small ops add little.
_BLOCK_BYTES = 1 << 19
_MAX_BLOCKS = 4


class _HardLoss(torch.autograd.Function):
    """Per anchor, :func:`hard`'s -log(pos / (pos + Ng)), forward and backward written out.

    Why by hand: autograd through logsumexp (or exp), the debiasing's dozen (n,) steps and logaddexp recomputed the
    (n, N) exponentials in the backward pass, kept a second (n, N) buffer for the tilt, and allocated an (n, N)
    gradient. Here the forward pass makes one (n, N) buffer, e^{(beta+1)(s - max s)/t} (row sums >= 1, so nothing
    overflows), and with beta > 0 folds the tilt into it (:func:`_fold_tilt`), so that the buffer holds
    d log R / ds up to a per-row factor; the backward pass scales it in place and returns it as the gradient.
    Whatever beta and tau_plus are, the (n, N) work is InfoNCE's (max, subtract, scale, exp2, sum; one scaling in
    the backward pass) plus, for beta > 0, one more scaled exp2, sum and multiply-add: about 7% of an InfoNCE step
    at B = 512 on CPU, which is what remains of HCL's overhead.

    The (n,) arithmetic is the reference implementation's, operation for operation, and so is the gradient's
    (each autograd formula spelled out in the same order): at t = 0.01 in float32 a logit is ~100, one unit in its
    last place ~1e-5, so any reordering there would show.

    The saved buffer becomes the gradient, so the graph cannot be backpropagated twice: a second backward pass
    (retain_graph=True) raises autograd's "modified by an inplace operation" error instead of returning garbage.
    """

    @staticmethod
    def forward(ctx, pos: Tensor, neg: Tensor, temperature: float, tau_plus: float, beta: float) -> Tensor:
        n_neg = neg.shape[1]
        pos_logit = pos / temperature
        top = neg.amax(dim=1, keepdim=True)
        mass = neg - top
        c_mass, c_tilt = (beta + 1.0) / temperature, beta / temperature
        if beta:
            sum_mass, sum_tilt = _fold_tilt(mass, c_mass, c_tilt)
        else:
            sum_mass = mass.mul_(c_mass * _LOG2_E).exp2_().sum(dim=1)
        log_r = sum_mass.log() + top.squeeze(1) / temperature  # LSE((beta+1) s/t)
        if beta:
            log_r = log_r + (math.log(n_neg) - sum_tilt.log())

        log_ng, debias = log_r, None
        if tau_plus != 0:
            # log max((R - tau_plus N pos) / (1 - tau_plus), N e^{-1/t}) without leaving log space: log(A - B) =
            # log A + log(-expm1(log B - log A)), no cancellation near B = A. Where the clamp binds (A <= B, or
            # the result is below the floor) the floor, a constant, is used: that anchor sends no gradient to
            # its negatives. Where it does not, the expm1 argument is a dummy -1, so no inf or NaN reaches the
            # gradient; the 1e-30 tolerance keeps log1mexp's gradient (~1/|x|) finite in float32.
            floor = math.log(n_neg) - 1.0 / temperature
            log_ratio = math.log(tau_plus * n_neg) + pos_logit - log_r  # log(B / A)
            below = log_ratio < -1e-30
            em1 = torch.expm1(torch.where(below, log_ratio, -1.0))
            one_minus = -em1
            raw = log_r + torch.log(one_minus) - math.log1p(-tau_plus)
            kept = below & (raw > floor)
            log_ng = torch.where(kept, raw, floor)
            debias = (below, kept, em1, one_minus)

        ctx.save_for_backward(pos_logit, log_ng, mass, sum_mass)
        ctx.debias = debias
        ctx.coefs = (temperature, c_mass)
        return torch.logaddexp(pos_logit, log_ng) - pos_logit

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None, None]:
        pos_logit, log_ng, weights, sum_mass = ctx.saved_tensors
        temperature, c_mass = ctx.coefs
        # loss = logaddexp(a, b) - a, a = pos_logit, b = log Ng; autograd's logaddexp: grad / (1 + exp(other - self))
        grad_log_ng = grad / (1 + torch.exp(pos_logit - log_ng))
        grad_pos_logit = grad / (1 + torch.exp(log_ng - pos_logit)) - grad
        grad_log_r = grad_log_ng
        if ctx.debias is not None:  # raw = log_r + log(-expm1(log_ratio)) - log1p(-tau_plus), where kept
            below, kept, em1, one_minus = ctx.debias
            grad_raw = torch.where(kept, grad_log_ng, 0.0)
            grad_log_ratio = torch.where(below, (-(grad_raw / one_minus)) * (em1 + 1), 0.0)
            grad_log_r = grad_raw - grad_log_ratio  # log_ratio = const + pos_logit - log_r
            grad_pos_logit = grad_pos_logit + grad_log_ratio

        grad_pos = grad_pos_logit / temperature if ctx.needs_input_grad[0] else None
        grad_neg = None
        if ctx.needs_input_grad[1]:
            # d log R / ds_j = (beta+1)/t softmax((beta+1) s/t)_j - beta/t softmax(beta s/t)_j, the weights being
            # differentiated too, as in HCL's reference code; `weights` holds it up to the factor c_mass / sum_mass.
            grad_neg = weights.mul_(grad_log_r[:, None] * c_mass / sum_mass[:, None])
        return grad_pos, grad_neg, None, None, None


def _fold_tilt(shifted: Tensor, c_mass: float, c_tilt: float) -> tuple[Tensor, Tensor]:
    """Row sums of mass = e^{c_mass x} and tilt = e^{c_tilt x} for x = ``shifted`` (<= 0), which is overwritten with
    mass - k tilt, k = (c_tilt sum(mass)) / (c_mass sum(tilt)): d log R / dx is that times c_mass / sum(mass).

    Both sums are needed before the two exponentials can be combined, and each exponential is one pass, so tilt is
    formed a block of rows at a time in a small scratch buffer (on CPU; a GPU's caching allocator makes a full one
    free) rather than in a second (n, N) buffer kept until the backward pass, as before.
    """
    n, n_neg = shifted.shape
    rows = _block_rows(shifted) if shifted.is_cpu else n
    scratch = shifted.new_empty(min(rows, n), n_neg)
    sum_mass, sum_tilt = shifted.new_empty(n), shifted.new_empty(n)
    blocks = zip(shifted.split(rows), sum_mass.split(rows), sum_tilt.split(rows), strict=True)
    for block, block_sum_mass, block_sum_tilt in blocks:
        tilt = torch.mul(block, c_tilt * _LOG2_E, out=scratch[:block.shape[0]]).exp2_()
        mass = block.mul_(c_mass * _LOG2_E).exp2_()
        torch.sum(mass, dim=1, out=block_sum_mass)
        torch.sum(tilt, dim=1, out=block_sum_tilt)
        mass.addcmul_(tilt, (block_sum_mass * (-c_tilt / c_mass) / block_sum_tilt)[:, None])
    return sum_mass, sum_tilt


def _block_rows(x: Tensor) -> int:
    """Rows per block of an (n, N) tensor on CPU: at most _MAX_BLOCKS blocks, each of at least _BLOCK_BYTES."""
    n, n_neg = x.shape
    return max(_BLOCK_BYTES // (n_neg * x.element_size()), -(-n // _MAX_BLOCKS), 1)


class _BandLoss(torch.autograd.Function):
    """Per row, log(1 + sum_j [s_p - margin < s_j < s_p] e^{(s_j - s_p)/t}).

    The selected exponents lie in (-margin/t, 0), so the sum cannot overflow; the others are exp2(-inf) = 0. The
    gradient reuses the forward exponentials, in place (so, as for :class:`_HardLoss`, no second backward pass):
    e_j / (t (1 + sum)) for s_j, and minus their sum for s_p. Through plain autograd (boolean masks, where, exp)
    the CPU step took ~1.4x InfoNCE's.
    """

    @staticmethod
    def forward(ctx, neg: Tensor, pos: Tensor, temperature: float, margin: float) -> Tensor:
        # threshold_(x, th, v) keeps x where x > th, else v: two strict tests, in place, give the depth s_p - s_j
        # inside the band and +inf outside it (boolean masks and torch.where are far slower on CPU).
        depth = torch.threshold_(neg - pos[:, None], -margin, -math.inf).neg_()
        depth = torch.threshold_(depth, 0.0, math.inf)
        terms = depth.mul_(-_LOG2_E / temperature).exp2_()
        total = terms.sum(dim=1)
        ctx.save_for_backward(terms, total)
        ctx.temperature = temperature
        return torch.log1p(total) + 0.0 * pos  # the band tests drop NaN; keep a NaN embedding visible

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None, None]:
        terms, total = ctx.saved_tensors
        scale = grad / (ctx.temperature * (1.0 + total))
        return terms.mul_(scale[:, None]), -scale * total, None, None


class _NearestLoss(torch.autograd.Function):
    """Per row, log(1 + e^{(s_j - s_p)/t}) for j = argmin_j |s_j - s_p|, the first index on ties.

    Through autograd, the (n, N) distances were dropped once the index was found and gather's backward allocated
    an (n, N) zero gradient; here the distance buffer becomes that gradient (zeroed, one entry per row set), so
    again no second backward pass. The (n,) arithmetic is autograd's, in the same order.
    """

    @staticmethod
    def forward(ctx, neg: Tensor, pos: Tensor, temperature: float) -> Tensor:
        distance = torch.sub(neg, pos[:, None]).abs_()
        nearest = distance.argmin(dim=1, keepdim=True)
        picked = (neg.gather(1, nearest).squeeze(1) - pos) / temperature
        ctx.save_for_backward(distance, nearest, picked)
        ctx.temperature = temperature
        return torch.logaddexp(picked, torch.zeros_like(picked))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor, None]:
        distance, nearest, picked = ctx.saved_tensors
        grad_picked = grad / (1 + torch.exp(0.0 - picked)) / ctx.temperature  # logaddexp(picked, 0), then / t
        grad_neg = distance.zero_().scatter_(1, nearest, grad_picked[:, None]) if ctx.needs_input_grad[0] else None
        return grad_neg, -grad_picked, None


def _off_diagonal(square: Tensor) -> Tensor:
    """The (B, B-1) off-diagonal entries of a (B, B) matrix, row by row in column order."""
    b = square.shape[0]
    return square.flatten()[1:].view(b - 1, b + 1)[:, :-1].reshape(b, b - 1)


# Keyed by ``Strategy.weighting``; each maps (pos (n,), neg (n, N), temperature, **knobs) to (n,) losses.
NEGATIVE_WEIGHTINGS = {"all": infonce, "debiased": debiased, "importance": hard, "semi_hard": semi_hard}
