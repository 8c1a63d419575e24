"""trainables.losses: closed forms, exact identities, loop references, gradients, numerics, contract."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch

from trainables.losses import NEGATIVE_WEIGHTINGS, similarity_parts, two_view_loss
from trainables.strategies import TWO_VIEW_STRATEGIES as STRATEGIES
from trainables.strategies import WEIGHTING_KNOBS


def _views(b: int, d: int, seed: int, noise: float = 0.5, dtype: torch.dtype = torch.float64):
    """Seeded (z1, z2) with z2 a noisy copy of z1, so positives are closer than most negatives."""
    gen = torch.Generator().manual_seed(seed)
    z1 = torch.randn(b, d, generator=gen, dtype=dtype)
    return z1, z1 + noise * torch.randn(b, d, generator=gen, dtype=dtype)


# ----------------------------------------------------------------------------------------------------------
# Loop references: plain Python over float64 cosines, linear space, written from STRATEGIES.md 1(a), 2(a), 6.3


def _anchors(z1: np.ndarray, z2: np.ndarray):
    """Yield (s_p, [s_j for the N negatives]) for each of the 2B anchors, negatives in index order."""
    z = np.concatenate([z1, z2])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z)
    for i in range(n):
        p = (i + n // 2) % n
        yield float(z[i] @ z[p]), [float(z[i] @ z[j]) for j in range(n) if j not in (i, p)]


def ref_hcl(z1, z2, t, tau_plus=0.0, beta=0.0):
    """HCL batch estimator; DCL at beta = 0, NT-Xent at beta = tau_plus = 0. Returns (loss, #clamped)."""
    losses, clamped = [], 0
    for s_p, s_neg in _anchors(z1, z2):
        n_neg, pos = len(s_neg), math.exp(s_p / t)
        imp = [math.exp(beta * s / t) for s in s_neg]
        r = sum(w / (sum(imp) / n_neg) * math.exp(s / t) for w, s in zip(imp, s_neg, strict=True))
        raw, floor = (r - tau_plus * n_neg * pos) / (1 - tau_plus), n_neg * math.exp(-1 / t)
        clamped += raw < floor
        losses.append(-math.log(pos / (pos + max(raw, floor))))
    return sum(losses) / len(losses), clamped


def ref_semi_hard(z1, z2, t, variant, margin):
    """InfoNCE over the band s_p - margin < s_j < s_p, or over the single nearest negative (first on ties)."""
    losses = []
    for s_p, s_neg in _anchors(z1, z2):
        if variant == "band":
            chosen = [s for s in s_neg if s_p - margin < s < s_p]
        else:
            chosen = [min(s_neg, key=lambda s, s_p=s_p: abs(s - s_p))]
        pos = math.exp(s_p / t)
        losses.append(-math.log(pos / (pos + sum(math.exp(s / t) for s in chosen))))
    return sum(losses) / len(losses), 0


REFERENCES = {"all": ref_hcl, "debiased": ref_hcl, "importance": ref_hcl, "semi_hard": ref_semi_hard}

CASES = [  # (strategy, knobs); the tau_plus = 0.9 and (0.5, beta 4) cases clamp some anchors
    ("infonce", {}),
    ("debiased", {"tau_plus": 0.1}),
    ("debiased", {"tau_plus": 0.9}),
    ("hard", {"tau_plus": 0.1, "beta": 1.0}),
    ("hard", {"tau_plus": 0.0, "beta": 2.0}),
    ("hard", {"tau_plus": 0.5, "beta": 4.0}),
    ("semi_hard", {"variant": "band", "margin": 0.2}),
    ("semi_hard", {"variant": "band", "margin": 1.0}),
    ("semi_hard", {"variant": "nearest", "margin": 0.2}),
]


def _reference(z1: torch.Tensor, z2: torch.Tensor, strategy: str, t: float, knobs: dict) -> tuple[float, int]:
    ref = REFERENCES[STRATEGIES[strategy].weighting]
    return ref(z1.detach().double().numpy(), z2.detach().double().numpy(), t, **knobs)


def _fd_grad(z1: torch.Tensor, z2: torch.Tensor, strategy: str, t: float, knobs: dict, h: float = 1e-6):
    """Central finite differences of the loop reference with respect to every entry of z1 and z2."""
    grads = []
    for z in (z1, z2):
        grad = torch.zeros_like(z)
        for idx in np.ndindex(*z.shape):
            old = z[idx].item()
            z[idx] = old + h
            up = _reference(z1, z2, strategy, t, knobs)[0]
            z[idx] = old - h
            down = _reference(z1, z2, strategy, t, knobs)[0]
            z[idx] = old
            grad[idx] = (up - down) / (2 * h)
        grads.append(grad)
    return grads


def _autograd(z1: torch.Tensor, z2: torch.Tensor, strategy: str, t: float, **knobs):
    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    loss = two_view_loss(a, b, strategy, t, **knobs)
    ga, gb = torch.autograd.grad(loss, (a, b))
    return loss.detach(), ga, gb


# ----------------------------------------------------------------------------------------------------------
# Closed forms


class TestClosedForm:
    """z1 = z2 = eye(2), t = 0.5: each anchor has s_p = 1 and two negatives with s = 0 (N = 2)."""

    eye = torch.eye(2, dtype=torch.float64)

    def test_infonce(self):
        expected = math.log(1 + 2 * math.exp(-2))
        assert two_view_loss(self.eye, self.eye, "infonce", 0.5).item() == pytest.approx(expected, abs=1e-12)
        assert expected == pytest.approx(0.2395448, abs=1e-7)

    def test_debiased_above_the_floor(self):
        raw = (2 - 0.1 * 2 * math.exp(2)) / 0.9  # (R - tau+ N pos) / (1 - tau+) = 0.580 > floor 2e^-2 = 0.271
        assert raw > 2 * math.exp(-2)
        expected = -math.log(math.exp(2) / (math.exp(2) + raw))
        loss = two_view_loss(self.eye, self.eye, "debiased", 0.5, tau_plus=0.1)
        assert loss.item() == pytest.approx(expected, abs=1e-12)
        assert expected == pytest.approx(0.0755924, abs=1e-7)

    def test_debiased_at_the_floor(self):
        assert 2 - 0.2 * 2 * math.exp(2) < 0  # tau_plus = 0.2: the subtraction goes negative, Ng = 2e^-2
        expected = math.log(1 + 2 * math.exp(-2) * math.exp(-2))
        loss = two_view_loss(self.eye, self.eye, "debiased", 0.5, tau_plus=0.2)
        assert loss.item() == pytest.approx(expected, abs=1e-12)

    @pytest.mark.parametrize("beta", [0.5, 1.0, 6.0, 50.0])
    def test_hard_equals_debiased_when_negatives_are_equally_similar(self, beta):
        loss = two_view_loss(self.eye, self.eye, "hard", 0.5, tau_plus=0.1, beta=beta)
        assert loss.item() == pytest.approx(0.0755924, abs=1e-7)

    def test_semi_hard(self):
        # Band (0.8, 1) holds no negative: no loss term. Nearest picks a cosine-0 negative.
        loss, g1, g2 = _autograd(self.eye, self.eye, "semi_hard", 0.5, variant="band")
        assert loss.item() == 0.0 and not g1.any() and not g2.any()
        loss = two_view_loss(self.eye, self.eye, "semi_hard", 0.5, variant="nearest")
        assert loss.item() == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-12)

    def test_band_is_strict_at_both_ends(self):
        # Gaps are exactly -1 here, and exactly 0 in a collapsed batch: neither end of the band is included.
        at_edge = two_view_loss(self.eye, self.eye, "semi_hard", 0.5, variant="band", margin=1.0)
        inside = two_view_loss(self.eye, self.eye, "semi_hard", 0.5, variant="band", margin=1.5)
        ones = torch.ones(3, 4, dtype=torch.float64)
        assert at_edge.item() == 0.0 and two_view_loss(ones, ones, "semi_hard", 0.5, margin=1.0).item() == 0.0
        assert inside.item() == pytest.approx(math.log(1 + 2 * math.exp(-2)), abs=1e-12)

    @pytest.mark.parametrize("strategy", ["infonce", "easy_negative", "soft_positive"])
    def test_collapsed_batch(self, strategy):
        z = torch.ones(3, 4, dtype=torch.float64)  # every cosine is 1: loss = log(2B - 1)
        assert two_view_loss(z, z, strategy, 0.5).item() == pytest.approx(math.log(5), abs=1e-12)
        assert math.log(5) == pytest.approx(1.6094379, abs=1e-7)


# ----------------------------------------------------------------------------------------------------------
# Exact identities


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("t", [0.07, 0.5])
@pytest.mark.parametrize("tau_plus", [0.05, 0.1, 0.5])
def test_hard_at_beta_zero_is_debiased_exactly(seed, t, tau_plus):
    z1, z2 = _views(6, 8, seed, dtype=torch.float32)
    hard = _autograd(z1, z2, "hard", t, tau_plus=tau_plus, beta=0.0)
    dcl = _autograd(z1, z2, "debiased", t, tau_plus=tau_plus)
    assert all(torch.equal(a, b) for a, b in zip(hard, dcl, strict=True))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("t", [0.07, 0.5])
def test_debiased_at_tau_zero_is_infonce_exactly(seed, t):
    z1, z2 = _views(6, 8, seed, dtype=torch.float32)
    dcl = _autograd(z1, z2, "debiased", t, tau_plus=0.0)
    nce = _autograd(z1, z2, "infonce", t)
    assert all(torch.equal(a, b) for a, b in zip(dcl, nce, strict=True))


def test_similarity_parts_layout():
    z1, z2 = _views(3, 5, seed=0)
    pos, neg = similarity_parts(z1, z2)
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    full = z @ z.T
    assert pos.shape == (6,) and neg.shape == (6, 4)
    for k in range(6):
        partner = (k + 3) % 6
        assert pos[k].item() == pytest.approx(full[k, partner].item(), abs=1e-12)
        others = [full[k, j].item() for j in range(6) if j not in (k, partner)]
        assert neg[k].tolist() == pytest.approx(others, abs=1e-12)


# ----------------------------------------------------------------------------------------------------------
# Loop references and gradients


@pytest.mark.parametrize(("strategy", "knobs"), CASES)
@pytest.mark.parametrize(("b", "d"), [(3, 5), (4, 7)])
@pytest.mark.parametrize("t", [0.1, 0.5])
def test_matches_loop_reference(strategy, knobs, b, d, t):
    z1, z2 = _views(b, d, seed=10 * b + d, noise=1.0)
    expected, _ = _reference(z1, z2, strategy, t, knobs)
    loss = two_view_loss(z1, z2, strategy, t, **knobs)
    assert torch.allclose(loss, torch.tensor(expected, dtype=torch.float64), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("strategy", "knobs"), [c for c in CASES if c[1].get("tau_plus", 0) >= 0.5])
def test_clamp_is_exercised_for_some_but_not_all_anchors(strategy, knobs):
    z1, z2 = _views(4, 7, seed=47, noise=1.0)
    _, clamped = _reference(z1, z2, strategy, 0.5, knobs)
    assert 0 < clamped < 8


def test_band_selects_something_in_the_reference_grid():
    z1, z2 = _views(4, 7, seed=47, noise=1.0)
    loss = two_view_loss(z1, z2, "semi_hard", 0.5, variant="band", margin=0.2)
    assert 0 < loss.item() < two_view_loss(z1, z2, "infonce", 0.5).item()


@pytest.mark.parametrize(("strategy", "knobs"), CASES)
@pytest.mark.parametrize("t", [0.1, 0.5])
def test_gradient_matches_finite_differences_of_the_reference(strategy, knobs, t):
    z1, z2 = _views(3, 5, seed=35, noise=1.0)
    _, g1, g2 = _autograd(z1, z2, strategy, t, **knobs)
    f1, f2 = _fd_grad(z1.clone(), z2.clone(), strategy, t, knobs)
    assert torch.allclose(g1, f1, rtol=1e-5, atol=1e-7)
    assert torch.allclose(g2, f2, rtol=1e-5, atol=1e-7)


def test_hcl_weights_are_not_detached():
    """Same value as an estimator with stop-gradient weights, but a different gradient."""
    z1, z2 = _views(4, 6, seed=4)
    t, tau_plus, beta = 0.5, 0.1, 2.0

    def detached(a, b):
        pos, neg = similarity_parts(a, b)
        n_neg = neg.shape[1]
        weights = n_neg * torch.softmax(beta * neg / t, dim=1).detach()
        r = (weights * torch.exp(neg / t)).sum(dim=1)
        p = torch.exp(pos / t)
        ng = torch.clamp((r - tau_plus * n_neg * p) / (1 - tau_plus), min=n_neg * math.exp(-1 / t))
        return -torch.log(p / (p + ng)).mean()

    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    loss_d = detached(a, b)
    grad_d = torch.autograd.grad(loss_d, (a, b))
    loss, *grad = _autograd(z1, z2, "hard", t, tau_plus=tau_plus, beta=beta)
    assert torch.allclose(loss, loss_d, rtol=1e-12)
    assert not torch.allclose(grad[0], grad_d[0], rtol=1e-3)


# ----------------------------------------------------------------------------------------------------------
# Numerics


NUMERIC_CASES = [(name, {}) for name in sorted(STRATEGIES)] + [
    ("debiased", {"tau_plus": 0.5}),
    ("hard", {"tau_plus": 0.1, "beta": 50.0}),
    ("hard", {"tau_plus": 0.5, "beta": 50.0}),
    ("semi_hard", {"variant": "nearest"}),
]


@pytest.mark.parametrize(("strategy", "knobs"), NUMERIC_CASES)
@pytest.mark.parametrize("t", [0.01, 0.5])
def test_finite_for_nearly_identical_views_in_float32(strategy, knobs, t):
    z1, z2 = _views(16, 32, seed=5, noise=1e-6, dtype=torch.float32)
    loss, g1, g2 = _autograd(z1, z2, strategy, t, **knobs)
    assert torch.isfinite(loss) and torch.isfinite(g1).all() and torch.isfinite(g2).all()


@pytest.mark.parametrize(("strategy", "knobs"), NUMERIC_CASES)
def test_finite_for_a_collapsed_batch_at_small_temperature(strategy, knobs):
    z = torch.ones(4, 8)
    loss, g1, g2 = _autograd(z, z, strategy, 0.01, **knobs)
    assert torch.isfinite(loss) and torch.isfinite(g1).all() and torch.isfinite(g2).all()


def test_half_precision_is_computed_in_float32():
    z1, z2 = _views(8, 16, seed=6, dtype=torch.float32)
    expected = two_view_loss(z1, z2, "hard", 0.05, beta=50.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = two_view_loss(z1, z2, "hard", 0.05, beta=50.0)
    from_bf16 = two_view_loss(z1.bfloat16(), z2.bfloat16(), "hard", 0.05, beta=50.0)
    assert under_autocast.dtype == from_bf16.dtype == torch.float32
    assert torch.equal(under_autocast, expected) and torch.allclose(from_bf16, expected, rtol=0.05)


# ----------------------------------------------------------------------------------------------------------
# Contract over the whole registry


@pytest.fixture(params=sorted(STRATEGIES))
def strategy(request):
    return request.param


class TestContract:
    """Every registered strategy, at its default knobs, behaves as a loss."""

    t = 0.5

    def test_finite_scalar(self, strategy):
        loss = two_view_loss(*_views(8, 4, seed=7, dtype=torch.float32), strategy, self.t)
        assert loss.shape == () and torch.isfinite(loss)

    def test_symmetric_in_the_views(self, strategy):
        z1, z2 = _views(8, 4, seed=7)
        swapped = two_view_loss(z2, z1, strategy, self.t)
        assert torch.allclose(two_view_loss(z1, z2, strategy, self.t), swapped, rtol=1e-12)

    def test_gradient_reaches_both_views(self, strategy):
        _, g1, g2 = _autograd(*_views(8, 4, seed=7, dtype=torch.float32), strategy, self.t)
        assert g1.abs().sum() > 0 and g2.abs().sum() > 0

    def test_nan_embedding_gives_nan(self, strategy):
        z1, z2 = _views(8, 4, seed=7)
        z1[3, 0] = math.nan
        assert torch.isnan(two_view_loss(z1, z2, strategy, self.t))

    def test_sgd_decreases_the_loss(self, strategy):
        z1, z2 = _views(8, 4, seed=7, dtype=torch.float32)
        losses = []
        for _ in range(30):  # plain SGD on the embeddings themselves, lr 0.1
            z1, z2 = z1.detach().requires_grad_(), z2.detach().requires_grad_()
            loss = two_view_loss(z1, z2, strategy, self.t)
            g1, g2 = torch.autograd.grad(loss, (z1, z2))
            z1, z2 = z1 - 0.1 * g1, z2 - 0.1 * g2
            losses.append(loss.item())
        assert losses[-1] < losses[0]


def test_a_second_backward_pass_raises(strategy):
    """The losses build their (n, N) gradient in the buffer saved for it, so a retained graph cannot be
    backpropagated again: autograd must say so rather than return a wrong gradient."""
    z1, z2 = (z.requires_grad_() for z in _views(8, 4, seed=7, dtype=torch.float32))
    for knobs in ({}, {"variant": "nearest"}) if strategy == "semi_hard" else ({},):
        loss = two_view_loss(z1, z2, strategy, 0.5, **knobs)
        loss.backward(retain_graph=True)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()


def test_registry_matches_the_weighting_knobs():
    # the two-view softmax weightings; the audio-text hinge selections live in trainables.tasks.audio_text.losses
    assert set(NEGATIVE_WEIGHTINGS) == {s.weighting for s in STRATEGIES.values()}
    for name, fn in NEGATIVE_WEIGHTINGS.items():
        params = list(inspect.signature(fn).parameters)
        assert params[:3] == ["pos", "neg", "temperature"]
        assert set(params[3:]) == set(WEIGHTING_KNOBS[name])


# ----------------------------------------------------------------------------------------------------------
# API validation


@pytest.mark.parametrize(("args", "kwargs", "match"), [
    (("nope", 0.5), {}, "unknown strategy"),
    (("infonce", 0.5), {"tau_plus": 0.1}, "tau_plus"),
    (("hard", 0.5), {"gamma": 1.0}, "gamma"),
    (("soft_positive", 0.5), {"sp_ratio": 0.5}, "sp_ratio"),
    (("infonce", 0.0), {}, "temperature"),
    (("infonce", -0.5), {}, "temperature"),
    (("infonce", math.nan), {}, "temperature"),
    (("debiased", 0.5), {"tau_plus": 1.0}, "tau_plus"),
    (("debiased", 0.5), {"tau_plus": -0.1}, "tau_plus"),
    (("hard", 0.5), {"beta": -1.0}, "beta"),
    (("semi_hard", 0.5), {"variant": "farthest"}, "variant"),
    (("semi_hard", 0.5), {"margin": 0.0}, "margin"),
])
def test_invalid_arguments_raise(args, kwargs, match):
    z1, z2 = _views(4, 3, seed=8)
    with pytest.raises(ValueError, match=match):
        two_view_loss(z1, z2, *args, **kwargs)


@pytest.mark.parametrize("shapes", [((1, 3), (1, 3)), ((4, 3), (4, 2)), ((4,), (4,))])
def test_bad_shapes_raise(shapes):
    with pytest.raises(ValueError, match="B >= 2"):
        two_view_loss(torch.randn(*shapes[0]), torch.randn(*shapes[1]), "infonce", 0.5)
