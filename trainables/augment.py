"""SimCLR / HCL augmentation of whole uint8 batches, with per-sample random parameters.

HCL's train transform (image/utils.py) is, per image: RandomResizedCrop(32) -> HorizontalFlip(0.5) ->
ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8 -> RandomGrayscale(0.2) -> GaussianBlur(kernel 10% of the size,
sigma in [0.1, 2], p 0.5) -> Normalize. Running that per image through PIL is what makes small contrastive
trials slow, and calling ``torchvision.transforms.v2`` on a batched tensor is no substitute: it draws ONE set
of parameters for the whole batch, so both views of every image would share crop, flip and colour. Here every
sample draws its own parameters and every step is one vectorised tensor op on the batch (CPU or GPU):

- crop + resize (+ flip) is a per-sample separable linear map ``out = Wy @ x @ Wx^T``: the rows of ``Wy`` and
  ``Wx`` hold the bilinear weights of ``v2.functional.resized_crop`` (align_corners=False, clamped at the
  crop's border); with ``antialias`` they hold the widened triangle filter of torchvision's antialiased resize
  when a crop is shrunk. A flip is the same matrix with its rows reversed, so it costs nothing. (``roi_align``
  and ``grid_sample`` read pixels outside the crop at its border, and cannot antialias.)
- colour jitter follows ``v2.functional``'s blend formulas (brightness = blend with 0, contrast = blend with
  the image's mean grey level, saturation = blend with the grey image, hue = shift in HSV space), in a random
  order per sample, as ``v2.ColorJitter`` does per call; saturation and hue are no-ops for 1-channel images
  (as in torchvision).
- grey-scale, Gaussian blur (reflect padding, torchvision's kernel formula), normalisation: as torchvision.

Each step equals the ``v2.functional`` op on that one image up to float rounding; the tests check it. Blur is
off by default below 16 px: a 3-tap kernel on an 8-px digit erases most of its detail (HCL's 10% rule would
give a 0-px kernel there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch

# v2.functional.rgb_to_grayscale weights (ITU-R 601-2 luma)
_GREY = (0.2989, 0.587, 0.114)
_BRIGHTNESS, _CONTRAST, _SATURATION, _HUE = range(4)


def default_crop_scale(image_size: int) -> tuple[float, float]:
    """RandomResizedCrop area range: torchvision's (0.08, 1) as in HCL, (0.5, 1) for tiny (<= 16 px) images.

    An 8-px digit cropped to 8% of its area keeps about 2x2 pixels, which no longer identifies the digit.
    """
    return (0.5, 1.0) if image_size <= 16 else (0.08, 1.0)


def default_blur_kernel(image_size: int) -> int:
    """SimCLR's kernel of ~10% of the image size, made odd and at least 3 (HCL: int(0.1 * 32) = 3)."""
    k = max(3, int(0.1 * image_size))
    return k + 1 if k % 2 == 0 else k


@dataclass(frozen=True)
class AugmentParams:
    """Per-sample parameters of one augmentation call; every field has the batch size as its first dim."""

    top: torch.Tensor  # int64, crop box in input pixels
    left: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor
    flip: torch.Tensor  # bool
    jitter: torch.Tensor  # bool: colour jitter applied at all
    factors: torch.Tensor  # float (n, 4): brightness, contrast, saturation, hue
    order: torch.Tensor  # int64 (n, 4): order[:, k] is the jitter op applied at stage k
    grey: torch.Tensor  # bool
    blur: torch.Tensor  # bool
    sigma: torch.Tensor  # float

    def to(self, device: torch.device | str) -> AugmentParams:
        return AugmentParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


class SimCLRAugment:
    """Random SimCLR view of a uint8 batch ``(n, C, H, W)`` -> normalised float32 ``(n, C, size, size)``.

    Call it twice on the same batch for two views. Randomness comes only from ``generator`` (drawn on the
    generator's device), so the same generator state gives the same views.
    """

    def __init__(
        self,
        image_size: int,
        channels: int,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        strength: float = 1.0,
        crop_scale: tuple[float, float] | None = None,
        crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        flip_p: float = 0.5,
        jitter_p: float = 0.8,
        grey_p: float = 0.2,
        blur_p: float | None = None,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        antialias: bool = True,
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean/std need {channels} values, got {len(mean)} and {len(std)}")
        if strength < 0:
            raise ValueError(f"strength must be >= 0, got {strength}")
        self.image_size = int(image_size)
        self.channels = channels
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.crop_scale = crop_scale or default_crop_scale(self.image_size)
        self.crop_ratio = crop_ratio
        self.flip_p, self.jitter_p, self.grey_p = flip_p, jitter_p, grey_p
        self.blur_p = (0.5 if self.image_size >= 16 else 0.0) if blur_p is None else blur_p
        self.blur_sigma = blur_sigma
        self.blur_kernel = default_blur_kernel(self.image_size)
        self.antialias = antialias
        # v2.ColorJitter(0.4 s, 0.4 s, 0.4 s, 0.1 s): factors in [max(0, 1 - j), 1 + j], hue in [-h, h]
        j, h = 0.4 * strength, min(0.1 * strength, 0.5)
        self._jitter_low = (max(0.0, 1 - j), max(0.0, 1 - j), max(0.0, 1 - j), -h)
        self._jitter_high = (1 + j, 1 + j, 1 + j, h)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        self._check(x)
        params = self.sample_params(x.shape[0], x.shape[-2], x.shape[-1], generator)
        return self.apply(x, params.to(x.device))

    def two_views(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self(x, generator), self(x, generator)

    # ------------------------------------------------------------------------------------------ parameters

    def sample_params(self, n: int, height: int, width: int, generator: torch.Generator) -> AugmentParams:
        """Draw every random number of one call, in a fixed sequence, on the generator's device."""
        dev = generator.device

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator, device=dev, dtype=torch.float64)

        top, left, h, w = self._crop_boxes(n, height, width, rand)
        flip = rand(n) < self.flip_p
        jitter = rand(n) < self.jitter_p
        low = torch.tensor(self._jitter_low, dtype=torch.float64, device=dev)
        high = torch.tensor(self._jitter_high, dtype=torch.float64, device=dev)
        factors = (low + (high - low) * rand(n, 4)).float()
        order = rand(n, 4).argsort(dim=1)  # one random permutation of the four ops per sample
        grey = rand(n) < self.grey_p
        blur = rand(n) < self.blur_p
        s0, s1 = self.blur_sigma
        sigma = (s0 + (s1 - s0) * rand(n)).float()
        return AugmentParams(top, left, h, w, flip, jitter, factors, order, grey, blur, sigma)

    def _crop_boxes(self, n: int, height: int, width: int, rand) -> tuple[torch.Tensor, ...]:
        """``v2.RandomResizedCrop.get_params`` for n samples at once: 10 tries each, then a centre crop."""
        area = height * width
        (s0, s1), (r0, r1) = self.crop_scale, self.crop_ratio
        target = area * (s0 + (s1 - s0) * rand(n, 10))
        log_r0, log_r1 = math.log(r0), math.log(r1)
        aspect = torch.exp(log_r0 + (log_r1 - log_r0) * rand(n, 10))
        w = torch.sqrt(target * aspect).round().long()
        h = torch.sqrt(target / aspect).round().long()
        ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = ok.long().argmax(dim=1, keepdim=True)  # first successful try
        w, h, any_ok = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1), ok.any(dim=1)
        # fallback: the central crop with the aspect ratio clamped into the allowed range
        in_ratio = width / height
        if in_ratio < min(r0, r1):
            fw, fh = width, int(round(width / min(r0, r1)))
        elif in_ratio > max(r0, r1):
            fh, fw = height, int(round(height * max(r0, r1)))
        else:
            fw, fh = width, height
        w, h = torch.where(any_ok, w, fw), torch.where(any_ok, h, fh)
        u_top, u_left = rand(n), rand(n)
        top = torch.where(any_ok, (u_top * (height - h + 1)).long().clamp_max(height - h), (height - fh) // 2)
        left = torch.where(any_ok, (u_left * (width - w + 1)).long().clamp_max(width - w), (width - fw) // 2)
        return top, left, h, w

    # ------------------------------------------------------------------------------------------ apply

    def apply(self, x: torch.Tensor, p: AugmentParams) -> torch.Tensor:
        """Augment ``x`` with explicit parameters (on x's device): crop/flip, jitter, grey, blur, norm."""
        self._check(x)
        x = x.float().div_(255.0)
        x = self._resized_crop(x, p)
        x = self._colour_jitter(x, p)
        if self.channels == 3:
            idx = torch.nonzero(p.grey).squeeze(1)
            if idx.numel():
                x = x.index_copy_(0, idx, _grey(x.index_select(0, idx)).expand(-1, 3, -1, -1))
        if self.blur_p > 0:
            x = self._blur(x, p)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return x.sub_(mean).div_(std)

    def _resized_crop(self, x: torch.Tensor, p: AugmentParams) -> torch.Tensor:
        n, c, h, w = x.shape
        size = self.image_size
        wy = _resize_weights(p.top, p.height, h, size, self.antialias)  # (n, size, H)
        wx = _resize_weights(p.left, p.width, w, size, self.antialias)  # (n, size, W)
        wx = torch.where(p.flip[:, None, None], wx.flip(1), wx)
        # two bmm's, the W pass with the channels folded into the rows, the H pass with them in the batch
        cols = torch.bmm(x.reshape(n, c * h, w), wx.transpose(1, 2)).view(n * c, h, size)
        wy = wy.repeat_interleave(c, dim=0) if c > 1 else wy
        return torch.bmm(wy, cols).view(n, c, size, size)

    def _colour_jitter(self, x: torch.Tensor, p: AugmentParams) -> torch.Tensor:
        """Each jittered sample gets its four ops in its own random order (as one ``v2.ColorJitter`` call).

        Stage by stage, the samples whose op at that stage is ``op`` are gathered, adjusted in place and
        scattered back, so every sample is touched once per op.
        """
        idx = torch.nonzero(p.jitter).squeeze(1)
        if idx.numel() == 0:
            return x
        xs, factors, order = (
            x.index_select(0, idx),
            p.factors.index_select(0, idx),
            p.order.index_select(0, idx),
        )
        ops = (_BRIGHTNESS, _CONTRAST) if self.channels == 1 else (_BRIGHTNESS, _CONTRAST, _SATURATION, _HUE)
        for stage in range(4):
            for op in ops:
                sel = torch.nonzero(order[:, stage] == op).squeeze(1)
                if sel.numel():
                    part = _JITTER_OPS[op](xs.index_select(0, sel), factors[sel, op])
                    xs.index_copy_(0, sel, part)
        return x.index_copy_(0, idx, xs)

    def _blur(self, x: torch.Tensor, p: AugmentParams) -> torch.Tensor:
        """Separable Gaussian blur with a per-sample sigma; samples not blurred get a delta kernel (exact)."""
        k = self.blur_kernel
        if x.shape[-1] <= k // 2 or x.shape[-2] <= k // 2 or not bool(p.blur.any()):
            return x
        # v2.functional's kernel: softmax(-(t / sigma)^2), t = linspace(-lim, lim, k), lim = (k-1) / 2 sqrt 2
        lim = (k - 1) / (2.0 * math.sqrt(2.0))
        t = torch.linspace(-lim, lim, k, device=x.device)
        kernel = torch.softmax(-((t / p.sigma[:, None]) ** 2), dim=1)  # (n, k)
        delta = torch.zeros(k, device=x.device)
        delta[k // 2] = 1.0
        kernel = torch.where(p.blur[:, None], kernel, delta)[:, None, None, :]  # (n, 1, 1, k)
        r = k // 2
        h_, w_ = x.shape[-2:]
        pad = torch.nn.functional.pad(x, (r, r, r, r), mode="reflect")
        rows = pad[..., :, 0:w_] * kernel[..., 0:1]  # horizontal pass, (n, C, H + 2r, W)
        for i in range(1, k):
            rows.addcmul_(pad[..., :, i : i + w_], kernel[..., i : i + 1])
        out = rows[..., 0:h_, :] * kernel[..., 0:1]  # vertical pass
        for i in range(1, k):
            out.addcmul_(rows[..., i : i + h_, :], kernel[..., i : i + 1])
        return out

    def _check(self, x: torch.Tensor) -> None:
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"expected a uint8 batch (n, {self.channels}, H, W), got {x.dtype} {tuple(x.shape)}"
            )


def make_augment(
    image_size: int,
    channels: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    strength: float = 1.0,
    **kwargs,
) -> SimCLRAugment:
    """HCL's train transform at ``image_size``; ``strength`` scales the colour jitter (SimCLR's s)."""
    return SimCLRAugment(image_size, channels, mean, std, strength=strength, **kwargs)


class EvalTransform:
    """HCL's test transform: ToTensor + Normalize, i.e. ``(x / 255 - mean) / std`` with no resize."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x.float() / 255.0 - mean) / std


def make_eval_transform(mean: Sequence[float], std: Sequence[float]) -> EvalTransform:
    return EvalTransform(mean, std)


# ---------------------------------------------------------------------------------------------- kernels


def _resize_weights(
    start: torch.Tensor, length: torch.Tensor, full: int, size: int, antialias: bool
) -> torch.Tensor:
    """(n, size, full) weights resizing the window [start, start + length) of an axis to ``size`` samples.

    Bilinear (align_corners=False) with the source coordinate clamped to the window, as interpolate on the
    cropped image; with ``antialias`` and a shrinking window, the triangle filter widened by the scale
    (torchvision / PIL antialias), normalised per output sample.
    """
    dev = start.device
    length_f = length.float()[:, None, None]
    scale = length_f / size  # (n, 1, 1)
    centre = (torch.arange(size, device=dev) + 0.5).view(1, size, 1) * scale  # (n, size, 1), window coords
    rel = torch.arange(full, device=dev).view(1, 1, full) - start.float()[:, None, None]  # (n, 1, full)
    src = torch.minimum((centre - 0.5).clamp_min_(0.0), length_f - 1.0)
    weights = (rel - src).abs_().neg_().add_(1.0).clamp_min_(0.0)  # 1 - frac, frac on the two neighbours
    if antialias and bool((scale > 1.0).any()):
        aa = (rel + 0.5 - centre).div_(scale.clamp_min(1.0)).abs_().neg_().add_(1.0).clamp_min_(0.0)
        aa.mul_((rel >= 0) & (rel < length_f))
        aa.div_(aa.sum(dim=2, keepdim=True).clamp_min_(1e-12))
        weights = torch.where(scale > 1.0, aa, weights)
    return weights


def _grey(x: torch.Tensor) -> torch.Tensor:
    """(n, 1, H, W) luma of an RGB (or the image itself for a 1-channel) batch."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(dim=1)
    return (r * _GREY[0] + g * _GREY[1] + b * _GREY[2]).unsqueeze(1)


def _blend_(a: torch.Tensor, b: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """v2.functional._blend with a per-sample ratio, in place on ``a``: clamp(r * a + (1 - r) * b, 0, 1)."""
    r = ratio[:, None, None, None]
    return a.mul_(r).add_(b * (1.0 - r)).clamp_(0.0, 1.0)


def _adjust_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return x.mul_(f[:, None, None, None]).clamp_(0.0, 1.0)  # blend with black: the (1 - f) * 0 term vanishes


def _adjust_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend_(x, _grey(x).mean(dim=(1, 2, 3), keepdim=True), f)


def _adjust_saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend_(x, _grey(x), f)


# where each RGB channel's share of the chroma peaks on the hue circle h6 in [0, 6), and its slope
_HUE_CENTRE, _HUE_SLOPE, _HUE_OFFSET = (3.0, 2.0, 4.0), (1.0, -1.0, -1.0), (-1.0, 2.0, 2.0)


def _adjust_hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """v2.functional.adjust_hue with a per-sample shift ``f``: RGB -> HSV, h += f (mod 1), HSV -> RGB.

    The same maths as torchvision's ``_rgb_to_hsv`` / ``_hsv_to_rgb`` in fewer passes: the hue sector comes
    from the max channel (red before green before blue on ties, as there), and the way back uses
    ``channel = min + chroma * clamp(slope * |h6 - centre| + offset, 0, 1)``, which equals the p/q/t table.
    """
    # (torch.where / masked_fill are slow on CPU, so the branches are float masks)
    r, g, b = x.unbind(dim=1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    chroma = maxc - torch.minimum(torch.minimum(r, g), b)
    is_r = (r == maxc).float()
    is_g = (g == maxc).float().mul_(1.0 - is_r)
    is_b = 1.0 - is_r - is_g
    # position on the hue circle in sixths: sector start (0, 2, 4) + (g - b, b - r, r - g) / chroma
    h6 = (g - b).mul_(is_r).addcmul_(b - r, is_g).addcmul_(r - g, is_b).div_(chroma.clamp_min(1e-12))
    h6.add_(is_g, alpha=2.0).add_(is_b, alpha=4.0)  # grey pixels: 0 / tiny + 0 = 0, as in torchvision
    h6 = h6.add_(6.0 * f[:, None, None]).remainder_(6.0).unsqueeze(1)
    dev = x.device
    centre = torch.tensor(_HUE_CENTRE, device=dev).view(1, 3, 1, 1)
    slope = torch.tensor(_HUE_SLOPE, device=dev).view(1, 3, 1, 1)
    offset = torch.tensor(_HUE_OFFSET, device=dev).view(1, 3, 1, 1)
    share = (h6 - centre).abs_().mul_(slope).add_(offset).clamp_(0.0, 1.0)
    return share.mul_(chroma.unsqueeze(1)).add_((maxc - chroma).unsqueeze(1))


_JITTER_OPS = (_adjust_brightness, _adjust_contrast, _adjust_saturation, _adjust_hue)
