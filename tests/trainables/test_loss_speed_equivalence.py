"""The fast losses against a frozen copy of the implementation they replaced: values and gradients to 1e-6.

The ``_ref_*`` functions below are trainables/losses.py as of commit aee4361 (similarity_parts, hard, semi_hard
and their helpers), copied verbatim apart from names and docstrings. They are frozen on purpose: any later change
to the loss code must keep matching them, strategy by strategy, knob by knob, at tiny and large batches, in float32
and float64, on random and degenerate batches (collapsed, orthogonal, ties, an empty semi-hard band).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from trainables import losses
from trainables.losses import NEGATIVE_WEIGHTINGS, similarity_parts, two_view_loss
from trainables.strategies import TWO_VIEW_STRATEGIES as STRATEGIES

# ----------------------------------------------------------------------------------------------------------
# Frozen reference (aee4361)


def _ref_off_diagonal(square: Tensor) -> Tensor:
    b = square.shape[0]
    return square.flatten()[1:].view(b - 1, b + 1)[:, :-1].reshape(b, b - 1)


def _ref_similarity_parts(z1: Tensor, z2: Tensor) -> tuple[Tensor, Tensor]:
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    s11, s12, s22 = z1 @ z1.T, z1 @ z2.T, z2 @ z2.T
    pos = s12.diagonal()
    top = torch.cat([_ref_off_diagonal(s11), _ref_off_diagonal(s12)], dim=1)
    bottom = torch.cat([_ref_off_diagonal(s12.T), _ref_off_diagonal(s22)], dim=1)
    return torch.cat([pos, pos]), torch.cat([top, bottom])


class _RefLogNegativeMass(torch.autograd.Function):
    @staticmethod
    def forward(ctx, neg: Tensor, beta: float, temperature: float) -> Tensor:
        top = neg.amax(dim=1, keepdim=True)
        shifted = neg - top
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


class _RefBandLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, neg: Tensor, pos: Tensor, temperature: float, margin: float) -> Tensor:
        depth = torch.threshold_(neg - pos[:, None], -margin, -math.inf).neg_()
        depth = torch.threshold_(depth, 0.0, math.inf)
        inside = torch.rsub(depth, margin).sign_().relu_()
        terms = depth.clamp_(max=margin).mul_(-1.0 / temperature).exp_().mul_(inside)
        total = terms.sum(dim=1)
        ctx.save_for_backward(terms, total)
        ctx.temperature = temperature
        return torch.log1p(total) + 0.0 * pos

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None, None]:
        terms, total = ctx.saved_tensors
        scale = grad / (ctx.temperature * (1.0 + total))
        return terms * scale[:, None], -scale * total, None, None


def _ref_debias(log_r: Tensor, pos_logit: Tensor, n_neg: int, temperature: float, tau_plus: float) -> Tensor:
    floor = math.log(n_neg) - 1.0 / temperature
    log_ratio = math.log(tau_plus * n_neg) + pos_logit - log_r
    below = log_ratio < -1e-30
    raw = log_r + torch.log(-torch.expm1(torch.where(below, log_ratio, -1.0))) - math.log1p(-tau_plus)
    return torch.where(below & (raw > floor), raw, floor)


def _ref_hard(pos: Tensor, neg: Tensor, temperature: float, tau_plus: float, beta: float) -> Tensor:
    pos_logit = pos / temperature
    log_ng = _RefLogNegativeMass.apply(neg, beta, temperature)
    if tau_plus != 0:
        log_ng = _ref_debias(log_ng, pos_logit, neg.shape[1], temperature, tau_plus)
    return torch.logaddexp(pos_logit, log_ng) - pos_logit


def _ref_semi_hard(pos: Tensor, neg: Tensor, temperature: float, variant: str, margin: float) -> Tensor:
    if variant == "band":
        return _RefBandLoss.apply(neg, pos, temperature, margin)
    with torch.no_grad():
        nearest = (neg - pos[:, None]).abs_().argmin(dim=1, keepdim=True)
    picked = (neg.gather(1, nearest).squeeze(1) - pos) / temperature
    return torch.logaddexp(picked, torch.zeros_like(picked))


_REF_WEIGHTINGS = {
    "all": lambda pos, neg, t: _ref_hard(pos, neg, t, tau_plus=0.0, beta=0.0),
    "debiased": lambda pos, neg, t, tau_plus: _ref_hard(pos, neg, t, tau_plus=tau_plus, beta=0.0),
    "importance": _ref_hard,
    "semi_hard": _ref_semi_hard,
}


def _ref_two_view_loss(z1: Tensor, z2: Tensor, strategy: str, temperature: float, **params) -> Tensor:
    spec = STRATEGIES[strategy]
    knobs = spec.resolve(params)
    pos, neg = _ref_similarity_parts(z1, z2)
    return _REF_WEIGHTINGS[spec.weighting](pos, neg, temperature, **{k: knobs[k] for k in spec.loss_knobs}).mean()


# ----------------------------------------------------------------------------------------------------------
# The grid


CASES = (
    [(name, {}) for name in STRATEGIES]  # every registered strategy at its defaults
    + [("debiased", {"tau_plus": tau}) for tau in (0.0, 0.1, 0.5)]
    + [("hard", {"tau_plus": tau, "beta": beta}) for tau, beta in itertools.product((0.0, 0.1, 0.5), (0.0, 1.0, 4.0))]
    + [("semi_hard", {"variant": variant, "margin": margin})
       for variant, margin in itertools.product(("band", "nearest"), (0.05, 0.5))]
)
BATCHES = (2, 3, 8, 64)


def _batch(kind: str, b: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(z1, z2) of one input kind; d = 2b + 2, so that 2b orthogonal vectors fit."""
    d = 2 * b + 2
    gen = torch.Generator().manual_seed(1000 * b + sum(map(ord, kind)))
    z1 = torch.randn(b, d, generator=gen, dtype=torch.float64)
    if kind == "random":  # positives closer than most negatives
        z2 = z1 + 0.5 * torch.randn(b, d, generator=gen, dtype=torch.float64)
    elif kind == "unrelated":  # positives no closer than negatives: bands hold negatives on both sides
        z2 = torch.randn(b, d, generator=gen, dtype=torch.float64)
    elif kind == "twins":  # identical views: s_p = 1 exactly
        z2 = z1.clone()
    elif kind == "collapsed":  # every vector identical: every cosine 1, every nearest a tie
        z1 = z1[:1].expand(b, d).clone()
        z2 = z1.clone()
    elif kind == "orthogonal":  # all 2b vectors orthogonal: every cosine 0 (s_p too), ties everywhere
        eye = torch.eye(d, dtype=torch.float64)
        z1, z2 = eye[:b].clone(), eye[b:2 * b].clone()
    elif kind == "no_band":  # twins with orthogonal items: s_p = 1, negatives 0, no band below 1 of width < 1
        z1 = 3.0 * torch.eye(d, dtype=torch.float64)[:b]
        z2 = z1.clone()
    elif kind == "nearly_identical":  # views 1e-6 apart: logits (s_j - s_p)/t near 0 from both sides
        z2 = z1 + 1e-6 * torch.randn(b, d, generator=gen, dtype=torch.float64)
    else:
        raise AssertionError(kind)
    return z1.to(dtype), z2.to(dtype)


KINDS = ("random", "unrelated", "twins", "collapsed", "orthogonal", "no_band", "nearly_identical")


def _value_and_grads(loss_fn, z1: Tensor, z2: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor, Tensor]:
    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    loss = loss_fn(a, b, *args, **kwargs)
    ga, gb = torch.autograd.grad(loss, (a, b))
    return loss.detach(), ga, gb


def _assert_close(new: Tensor, ref: Tensor, truth: Tensor, what: str) -> None:
    """|new - ref| <= 1e-6 + 1e-6 |ref| elementwise, NaN where ref has NaN; in float32, plus twice the largest error
    the reference itself makes in that tensor (|ref - truth|, truth being the reference run in float64).

    float32 cannot always honour 1e-6: at t = 0.01 HCL's gradient is a difference of terms ~500 whose last place is
    ~3e-5, so any change in an earlier rounding (exp2 for exp) moves it that much, and the reference is then no
    closer than that to the truth either.
    """
    assert new.dtype == ref.dtype and new.shape == ref.shape, what
    slack = 2 * (ref.double() - truth).abs().nan_to_num(0.0).max().item() if ref.dtype == torch.float32 else 0.0
    close = (new.double() - ref.double()).abs() <= 1e-6 + 1e-6 * ref.double().abs() + slack
    agree = close | (new.isnan() & ref.isnan())
    assert agree.all(), f"{what}: {(~agree).sum().item()} of {agree.numel()} differ; worst |new - ref| " \
        f"{(new.double() - ref.double()).abs().nan_to_num(math.inf).max().item():.3g}, slack {slack:.3g}"


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("t", [0.01, 0.1, 0.5])
@pytest.mark.parametrize(("strategy", "knobs"), CASES, ids=[f"{s}-{k}" for s, k in CASES])
def test_two_view_loss_matches_frozen_reference(strategy, knobs, t, dtype):
    for b, kind in itertools.product(BATCHES, KINDS):
        z1, z2 = _batch(kind, b, dtype)
        new = _value_and_grads(two_view_loss, z1, z2, strategy, t, **knobs)
        ref = _value_and_grads(_ref_two_view_loss, z1, z2, strategy, t, **knobs)
        truth = _value_and_grads(_ref_two_view_loss, z1.double(), z2.double(), strategy, t, **knobs)
        for name, *results in zip(("loss", "grad z1", "grad z2"), new, ref, truth, strict=True):
            _assert_close(*results, f"{name}, B={b}, {kind}")


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("t", [0.01, 0.1, 0.5])
@pytest.mark.parametrize(("strategy", "knobs"), CASES, ids=[f"{s}-{k}" for s, k in CASES])
def test_per_anchor_weightings_match_frozen_reference(strategy, knobs, t, dtype):
    """The registry's functions on their own, from (pos, neg): per-anchor values, and gradients under an
    uneven upstream gradient (not just a mean's)."""
    spec = STRATEGIES[strategy]
    params = {k: spec.resolve(knobs)[k] for k in spec.loss_knobs}
    for b, kind in itertools.product(BATCHES, KINDS):
        z1, z2 = _batch(kind, b, dtype)
        pos, neg = (x.detach() for x in _ref_similarity_parts(z1, z2))
        upstream = torch.rand(pos.shape, generator=torch.Generator().manual_seed(b), dtype=torch.float64)
        results = []
        for fn, precision in ((NEGATIVE_WEIGHTINGS[spec.weighting], dtype), (_REF_WEIGHTINGS[spec.weighting], dtype),
                              (_REF_WEIGHTINGS[spec.weighting], torch.float64)):
            p, n = (x.to(precision).requires_grad_() for x in (pos, neg))
            per_anchor = fn(p, n, t, **params)
            grads = torch.autograd.grad((per_anchor * upstream.to(precision)).sum(), (p, n))
            results.append((per_anchor.detach(), *grads))
        for name, *three in zip(("per-anchor loss", "grad pos", "grad neg"), *results, strict=True):
            _assert_close(*three, f"{name}, B={b}, {kind}")


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("b", BATCHES)
def test_similarity_parts_match_frozen_reference(kind, b):
    z1, z2 = _batch(kind, b, torch.float64)
    for new, ref in zip(similarity_parts(z1, z2), _ref_similarity_parts(z1, z2), strict=True):
        assert torch.equal(new, ref)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(("b", "rows"), [(13, 1), (13, 5), (300, None)])
def test_hcl_row_blocks_match_frozen_reference(monkeypatch, b, rows, dtype):
    """HCL's tilt is formed a block of rows at a time: one row per block, blocks that do not divide the batch (26
    rows in 5s), and the default blocks at B = 300 (several, the last one short)."""
    n, n_neg = 2 * b, 2 * b - 2
    if rows is not None:
        monkeypatch.setattr(losses, "_BLOCK_BYTES", rows * n_neg * torch.finfo(dtype).bits // 8)
        monkeypatch.setattr(losses, "_MAX_BLOCKS", n)
        assert losses._block_rows(torch.empty(n, n_neg, dtype=dtype)) == rows
    else:
        assert n / losses._block_rows(torch.empty(n, n_neg, dtype=dtype)) > 2, "B = 300 is now one or two blocks"
    for (tau_plus, beta), t, kind in itertools.product([(0.1, 1.0), (0.5, 0.5), (0.0, 4.0)], (0.01, 0.5),
                                                      ("random", "unrelated")):
        z1, z2 = _batch(kind, b, dtype)
        knobs = {"tau_plus": tau_plus, "beta": beta}
        new = _value_and_grads(two_view_loss, z1, z2, "hard", t, **knobs)
        ref = _value_and_grads(_ref_two_view_loss, z1, z2, "hard", t, **knobs)
        truth = _value_and_grads(_ref_two_view_loss, z1.double(), z2.double(), "hard", t, **knobs)
        for name, *results in zip(("loss", "grad z1", "grad z2"), new, ref, truth, strict=True):
            _assert_close(*results, f"{name}, {knobs}, t={t}, {kind}")


def test_grid_covers_every_strategy_and_the_degenerate_batches():
    """The grid is what it claims: each registered strategy, and batches where the band is empty or full."""
    assert {s for s, _ in CASES} == set(STRATEGIES)
    pos, neg = _ref_similarity_parts(*_batch("no_band", 8, torch.float64))
    assert not ((neg > pos[:, None] - 0.5) & (neg < pos[:, None])).any()
    pos, neg = _ref_similarity_parts(*_batch("unrelated", 64, torch.float64))
    assert ((neg > pos[:, None] - 0.05) & (neg < pos[:, None])).any(dim=1).float().mean() > 0.5
