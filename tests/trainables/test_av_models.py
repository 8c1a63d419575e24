"""trainables.tasks.audio_visual.models:
encoder shapes and input handling, normalised projections, Wang's cross-modal InfoNCE
against a direct computation and its closed forms, gradients to both branches, and one optimisation smoke run."""

from __future__ import annotations

import math

import pytest
import torch

from trainables.tasks.audio_visual.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AudioCNN,
    AVModel,
    FrameEncoder,
    av_infonce,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _clips(b: int, *, t: int = 24, mels: int = 16, frames: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, t, mels, generator=g),
        torch.randint(0, 256, (b, frames, 3, 32, 32), generator=g, dtype=torch.uint8),
    )


def _directions(a: torch.Tensor, v: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """L_{V->A} and L_{A->V} as Wang writes them, in float64 and outside log space: exp, then ratio, then log."""
    a = a.double() / a.double().norm(dim=1, keepdim=True)
    v = v.double() / v.double().norm(dim=1, keepdim=True)
    e = torch.exp(v @ a.T / t)  # e[i, j] = exp(v_i . a_j / t)
    return -torch.log(e.diagonal() / e.sum(dim=1)).mean(), -torch.log(e.diagonal() / e.sum(dim=0)).mean()


def _direct_loss(a: torch.Tensor, v: torch.Tensor, t: float) -> torch.Tensor:
    v_to_a, a_to_v = _directions(a, v, t)
    return 0.5 * (v_to_a + a_to_v)


# ------------------------------------------------------------------------------------------------ encoders


def test_audio_cnn_shapes_any_length_and_band_count() -> None:
    enc = AudioCNN(width=4)
    assert enc.feature_dim == 32
    for t, mels in ((24, 16), (50, 64), (9, 7)):
        assert enc(torch.randn(3, t, mels)).shape == (3, 32)
    assert enc(torch.randn(3, 1, 24, 16)).shape == (3, 32)  # an explicit channel axis
    with pytest.raises(ValueError, match="mels"):
        enc(torch.randn(3, 2, 24, 16))
    with pytest.raises(ValueError, match="width"):
        AudioCNN(width=0)


def test_frame_encoder_normalises_uint8_and_takes_float_as_normalised() -> None:
    enc = FrameEncoder(width=4).eval()
    assert enc.feature_dim == 32
    _, frames = _clips(3)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1)
    out = enc(frames)
    assert out.shape == (3, 32)
    torch.testing.assert_close(out, enc((frames.float() / 255 - mean) / std), rtol=1e-5, atol=1e-5)
    custom = FrameEncoder(width=4, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)).eval()
    custom.load_state_dict(enc.state_dict())  # mean / std are not in the state: same weights load
    torch.testing.assert_close(custom(frames), enc((frames.float() / 255 - 0.5) / 0.25), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="frames"):
        enc(frames[:, 0])
    with pytest.raises(ValueError, match="temporal_pool"):
        FrameEncoder(temporal_pool="attention")


@pytest.mark.parametrize("pool", ["max", "mean"])
def test_frame_encoder_temporal_pool_over_per_frame_features(pool: str) -> None:
    enc = FrameEncoder(width=4, temporal_pool=pool).eval()  # eval: no batch statistics shared across frames
    _, frames = _clips(2, frames=3)
    per_frame = torch.stack([enc(frames[:, f : f + 1]) for f in range(3)], dim=1)  # (B, F, d)
    expected = per_frame.amax(1) if pool == "max" else per_frame.mean(1)
    torch.testing.assert_close(enc(frames), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(enc(frames.flip(1)), expected, rtol=1e-5, atol=1e-6)  # frame order is not seen


def test_av_model_returns_normalised_projections_from_biased_heads() -> None:
    model = AVModel.build(audio_width=4, video_width=4, proj_dim=16)
    mels, frames = _clips(5)
    a, v = model(mels, frames)
    assert a.shape == v.shape == (5, 16)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(v.norm(dim=1), torch.ones(5))
    assert model.audio_head.bias is not None and model.video_head.bias is not None
    assert model.audio_head.in_features == model.audio.feature_dim == 32
    assert model.video_head.in_features == model.video.feature_dim == 32


# ------------------------------------------------------------------------------------------------ the loss


@pytest.mark.parametrize("b", [2, 5, 16])
def test_av_infonce_matches_direct_computation(b: int) -> None:
    g = torch.Generator().manual_seed(b)
    a, v = torch.randn(b, 8, generator=g), torch.randn(b, 8, generator=g)  # unnormalised: normalised inside
    loss = av_infonce(a, v, 0.5)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), _direct_loss(a, v, 0.5), rtol=1e-5, atol=1e-6)


def test_av_infonce_is_symmetric_in_the_two_modalities() -> None:
    g = torch.Generator().manual_seed(1)
    a, v = torch.randn(7, 8, generator=g), torch.randn(7, 8, generator=g)
    for t in (0.07, 0.5):
        torch.testing.assert_close(av_infonce(a, v, t), av_infonce(v, a, t), rtol=1e-6, atol=1e-6)
    v_to_a, a_to_v = _directions(a, v, 0.5)  # not vacuous: the two directions differ, only their mean is symmetric
    assert abs(float(v_to_a - a_to_v)) > 1e-3


@pytest.mark.parametrize("t", [0.01, 0.07, 1.0])
def test_av_infonce_is_ln_b_for_identical_constant_embeddings(t: float) -> None:
    z = torch.ones(6, 4)
    torch.testing.assert_close(av_infonce(z, 3 * z, t), torch.tensor(math.log(6)))


def test_av_infonce_stays_finite_at_small_temperature() -> None:
    g = torch.Generator().manual_seed(2)
    a = torch.nn.functional.normalize(torch.randn(32, 16, generator=g), dim=1)
    aligned = a.clone().requires_grad_(True)
    loss = av_infonce(a, aligned, 0.01)  # the positives dominate: ~0, and exp(1/0.01) would overflow float32
    loss.backward()
    assert torch.isfinite(loss) and 0 <= loss.item() < 1e-3
    assert torch.isfinite(aligned.grad).all()
    rand = torch.randn(32, 16, generator=g)
    loss = av_infonce(a, rand, 0.01)
    torch.testing.assert_close(loss.double(), _direct_loss(a, rand, 0.01), rtol=1e-4, atol=1e-4)


def test_av_infonce_upcasts_half_inputs() -> None:
    g = torch.Generator().manual_seed(3)
    a, v = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    loss = av_infonce(a.bfloat16(), v.bfloat16(), 0.07)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, av_infonce(a.bfloat16().float(), v.bfloat16().float(), 0.07))


@pytest.mark.parametrize(
    ("a_shape", "v_shape", "t", "match"),
    [
        ((4, 8), (4, 8), 0.0, "temperature"),
        ((4, 8), (4, 8), -0.1, "temperature"),
        ((4, 8), (4, 8), math.inf, "temperature"),
        ((4, 8), (4, 8), True, "temperature"),
        ((4, 8), (5, 8), 0.1, "shape"),
        ((4, 8), (4, 6), 0.1, "shape"),
        ((1, 8), (1, 8), 0.1, "B >= 2"),
        ((4, 8, 1), (4, 8, 1), 0.1, "shape"),
    ],
)
def test_av_infonce_rejects_bad_arguments(a_shape, v_shape, t, match) -> None:
    with pytest.raises(ValueError, match=match):
        av_infonce(torch.randn(a_shape), torch.randn(v_shape), t)


# ----------------------------------------------------------------------------------------------- training


def test_gradient_reaches_both_encoders_and_heads() -> None:
    model = AVModel.build(audio_width=4, video_width=4, proj_dim=16)
    mels, frames = _clips(6)
    av_infonce(*model(mels, frames), 0.07).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


def test_a_few_steps_lower_the_loss_on_a_toy_paired_batch() -> None:
    torch.manual_seed(0)
    model = AVModel.build(audio_width=4, video_width=4, proj_dim=16)
    mels, frames = _clips(16)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = av_infonce(*model(mels, frames), 0.1)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3, losses
