"""trainables.augment: per-sample SimCLR views equal torchvision's v2.functional ops image by image."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from trainables.augment import (
    AugmentParams,
    SimCLRAugment,
    default_blur_kernel,
    default_crop_scale,
    make_augment,
    make_eval_transform,
)

RGB_MEAN, RGB_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def _images(n: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, c, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8
    )


def _reference(aug: SimCLRAugment, x: torch.Tensor, p: AugmentParams, n: int) -> torch.Tensor:
    """Sample n through torchvision's v2.functional ops, one image at a time, with the same parameters."""
    img = x[n].float() / 255
    img = TF.resized_crop(
        img,
        int(p.top[n]),
        int(p.left[n]),
        int(p.height[n]),
        int(p.width[n]),
        [aug.image_size, aug.image_size],
        antialias=aug.antialias,
    )
    if p.flip[n]:
        img = TF.horizontal_flip(img)
    if p.jitter[n]:
        ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
        for op in p.order[n].tolist():  # saturation / hue return 1-channel images unchanged
            img = ops[op](img, float(p.factors[n, op]))
    if p.grey[n] and img.shape[0] == 3:
        img = TF.rgb_to_grayscale(img, num_output_channels=3)
    if p.blur[n] and aug.blur_p > 0:
        k = aug.blur_kernel
        img = TF.gaussian_blur(img, [k, k], [float(p.sigma[n])] * 2)
    return TF.normalize(img, list(aug.mean), list(aug.std))


@pytest.mark.parametrize(
    ("shape", "size", "antialias"),
    [
        ((48, 3, 32, 32), 32, False),  # CIFAR: crops are enlarged back to 32
        ((48, 3, 30, 36), 32, True),  # non-square input
        ((24, 3, 96, 96), 32, True),  # STL-10 -> 32-px crops, as HCL: shrinking crops, antialiased
        ((24, 3, 96, 96), 32, False),
        ((64, 1, 8, 8), 8, True),  # digits: 1 channel, no blur by default
    ],
)
def test_every_sample_equals_torchvision_functional(shape, size, antialias) -> None:
    c = shape[1]
    mean, std = (RGB_MEAN, RGB_STD) if c == 3 else ((0.3,), (0.4,))
    aug = make_augment(size, c, mean, std, antialias=antialias)
    x = _images(*shape)
    p = aug.sample_params(shape[0], shape[2], shape[3], torch.Generator().manual_seed(1))
    out = aug.apply(x, p)
    assert out.shape == (shape[0], c, size, size) and out.dtype == torch.float32 and out.isfinite().all()
    ref = torch.stack([_reference(aug, x, p, n) for n in range(shape[0])])
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=0)
    # every branch was exercised in this batch
    assert p.flip.any() and (~p.flip).any() and p.jitter.any() and (~p.jitter).any()


def test_fixed_crop_box_equals_resized_crop() -> None:
    """A hand-set box (no flip, no colour) is exactly v2.functional.resized_crop with antialias=False."""
    aug = make_augment(16, 3, (0.0,) * 3, (1.0,) * 3, blur_p=0.0, antialias=False)
    x = _images(3, 3, 24, 20, seed=5)
    boxes = [(0, 0, 24, 20), (3, 5, 7, 11), (10, 2, 14, 18)]  # (top, left, height, width)
    n = len(boxes)
    top, left, height, width = (torch.tensor(v) for v in zip(*boxes, strict=True))
    off = torch.zeros(n, dtype=torch.bool)
    params = AugmentParams(
        top,
        left,
        height,
        width,
        off,
        off,
        torch.ones(n, 4),
        torch.arange(4).repeat(n, 1),
        off,
        off,
        torch.ones(n),
    )
    out = aug.apply(x, params)
    for i, (top_, left_, h, w) in enumerate(boxes):
        ref = TF.resized_crop(x[i].float() / 255, top_, left_, h, w, [16, 16], antialias=False)
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)


def test_identical_images_get_different_views() -> None:
    """Parameters are drawn per sample: 64 copies of one image come out as (nearly) 64 different views."""
    x = _images(1, 3, 32, 32).expand(64, -1, -1, -1).contiguous()
    out = make_augment(32, 3, RGB_MEAN, RGB_STD)(x, torch.Generator().manual_seed(0))
    flat = out.flatten(1)
    gap = (flat[:, None] - flat[None]).abs().amax(dim=-1)  # (64, 64) largest pixel difference per pair
    assert (gap + torch.eye(64) > 1e-3).all()  # every pair of views differs
    digits = _images(1, 1, 8, 8).expand(64, -1, -1, -1).contiguous()
    out = make_augment(8, 1, (0.3,), (0.4,))(digits, torch.Generator().manual_seed(0))
    assert torch.unique(out.flatten(1), dim=0).shape[0] > 60


def test_same_generator_seed_same_views() -> None:
    aug = make_augment(32, 3, RGB_MEAN, RGB_STD)
    x = _images(16, 3, 32, 32)
    a = aug(x, torch.Generator().manual_seed(7))
    b = aug(x, torch.Generator().manual_seed(7))
    c = aug(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    gen = torch.Generator().manual_seed(7)
    v1, v2 = aug.two_views(x, gen)  # the generator advances: the second view differs
    assert torch.equal(v1, a) and not torch.allclose(v1, v2)


def test_parameter_frequencies_and_crop_rule() -> None:
    aug = make_augment(32, 3, RGB_MEAN, RGB_STD)
    n = 20_000
    p = aug.sample_params(n, 32, 32, torch.Generator().manual_seed(0))
    for flag, rate in ((p.flip, 0.5), (p.jitter, 0.8), (p.grey, 0.2), (p.blur, 0.5)):
        assert abs(flag.float().mean().item() - rate) < 0.015  # 4.5 standard errors at worst
    area = (p.height * p.width).float() / (32 * 32)
    ratio = p.width.float() / p.height.float()
    assert area.min() >= 0.08 * 0.85 and area.max() <= 1.0  # rounding of w, h moves the area a little
    assert ratio.min() >= 0.75 * 0.85 and ratio.max() <= 4 / 3 / 0.85
    assert (p.top >= 0).all() and (p.top + p.height <= 32).all() and (p.left >= 0).all()
    assert (p.left + p.width <= 32).all()
    assert len({tuple(row) for row in p.order[:500].tolist()}) == 24  # all 4! jitter orders occur
    lo, hi = p.factors.min(0).values, p.factors.max(0).values
    torch.testing.assert_close(lo, torch.tensor([0.6, 0.6, 0.6, -0.1]), atol=2e-3, rtol=0)
    torch.testing.assert_close(hi, torch.tensor([1.4, 1.4, 1.4, 0.1]), atol=2e-3, rtol=0)
    assert 0.1 <= p.sigma.min() and p.sigma.max() <= 2.0


def test_crop_fallback_matches_torchvision() -> None:
    """When no try fits, both fall back to the central crop with the ratio clamped into range."""
    aug = make_augment(32, 3, RGB_MEAN, RGB_STD, crop_scale=(1.0, 1.0), crop_ratio=(2.0, 3.0))
    p = aug.sample_params(8, 32, 32, torch.Generator().manual_seed(0))
    ref = RandomResizedCrop.get_params(torch.zeros(3, 32, 32), scale=[1.0, 1.0], ratio=[2.0, 3.0])
    for n in range(8):
        assert (int(p.top[n]), int(p.left[n]), int(p.height[n]), int(p.width[n])) == ref == (8, 0, 16, 32)


def test_defaults_for_tiny_images() -> None:
    assert default_crop_scale(8) == (0.5, 1.0) and default_crop_scale(32) == (0.08, 1.0)
    assert default_blur_kernel(32) == 3 and default_blur_kernel(96) == 9 and default_blur_kernel(64) == 7
    assert (
        make_augment(8, 1, (0.3,), (0.4,)).blur_p == 0.0
        and make_augment(32, 3, RGB_MEAN, RGB_STD).blur_p == 0.5
    )


def test_strength_zero_leaves_colours_alone() -> None:
    aug = make_augment(32, 3, RGB_MEAN, RGB_STD, strength=0.0, grey_p=0.0, blur_p=0.0)
    p = aug.sample_params(32, 32, 32, torch.Generator().manual_seed(0))
    assert torch.equal(p.factors, torch.tensor([[1.0, 1.0, 1.0, 0.0]]).expand(32, 4))
    plain = make_augment(32, 3, RGB_MEAN, RGB_STD, jitter_p=0.0, grey_p=0.0, blur_p=0.0)
    x = _images(32, 3, 32, 32)
    torch.testing.assert_close(aug.apply(x, p), plain.apply(x, p), atol=2e-5, rtol=0)


def test_hue_on_pure_grey_and_tied_colours() -> None:
    """Edge pixels of the HSV conversion: grey (no hue), ties between max channels, pure primaries."""
    values = [
        [0, 0, 0],
        [255, 255, 255],
        [128, 128, 128],
        [255, 0, 0],
        [0, 255, 0],
        [0, 0, 255],
        [255, 255, 0],
        [0, 255, 255],
        [255, 0, 255],
        [200, 100, 100],
        [100, 200, 200],
        [10, 10, 11],
        [250, 249, 250],
        [1, 2, 3],
        [3, 2, 1],
        [90, 180, 45],
    ]
    n, hue = 7, torch.tensor([-0.5, -0.3, -0.1, 0.0, 0.1, 0.25, 0.5])
    x = torch.tensor(values, dtype=torch.uint8).T.reshape(1, 3, 4, 4).expand(n, -1, -1, -1).contiguous()
    aug = make_augment(4, 3, (0.0,) * 3, (1.0,) * 3, blur_p=0.0, antialias=False)
    on = torch.ones(n, dtype=torch.bool)
    off = ~on
    factors = torch.stack([torch.ones(n), torch.ones(n), torch.ones(n), hue], dim=1)
    order = torch.tensor([3, 0, 1, 2]).repeat(n, 1)
    zero, full = torch.zeros(n, dtype=torch.long), torch.full((n,), 4, dtype=torch.long)  # the whole image
    p = AugmentParams(zero, zero, full, full, off, on, factors, order, off, off, torch.ones(n))
    out = aug.apply(x, p)
    for i in range(n):
        torch.testing.assert_close(
            out[i], TF.adjust_hue(x[i].float() / 255, float(hue[i])), atol=1e-6, rtol=0
        )


def test_eval_transform_is_to_tensor_and_normalize() -> None:
    x = _images(5, 3, 12, 9)
    out = make_eval_transform(RGB_MEAN, RGB_STD)(x)
    mean, std = torch.tensor(RGB_MEAN).view(1, 3, 1, 1), torch.tensor(RGB_STD).view(1, 3, 1, 1)
    assert torch.equal(out, (x.float() / 255 - mean) / std)
    torch.testing.assert_close(
        out, TF.normalize(TF.to_dtype(x, torch.float32, scale=True), RGB_MEAN, RGB_STD)
    )
    assert out.shape == x.shape and out.dtype == torch.float32


def test_bad_inputs_are_rejected() -> None:
    aug = make_augment(32, 3, RGB_MEAN, RGB_STD)
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="uint8"):
        aug(torch.rand(2, 3, 32, 32), gen)
    with pytest.raises(ValueError, match="uint8 batch"):
        aug(_images(2, 1, 32, 32), gen)
    with pytest.raises(ValueError, match="mean/std"):
        make_augment(32, 3, (0.5,), (0.5,))
