"""Views of 1-D signals for two-view contrast: per-sample random parameters, one vectorised op per step on the batch.

The steps are the nuisances MNIST-1D itself is generated with (Greydanus 2020: scale, circular translation,
correlated and i.i.d. noise, shear), so a view keeps the digit and changes what the digit does not depend on:

- a random resized crop in time (keep 70-100% of the signal, stretched back to full length by linear
  interpolation), the 1-D analogue of SimCLR's crop;
- a circular shift of up to ``max_shift`` samples;
- an amplitude scale in [1 - scale, 1 + scale] and a shear (a linear ramp of slope in [-shear, shear] added);
- Gaussian noise of standard deviation ``noise``.

Signals are standardised when loaded, so the evaluation transform is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SignalAugment:
    crop: tuple[float, float] = (0.7, 1.0)
    max_shift: int = 8
    scale: float = 0.2
    shear: float = 0.3
    noise: float = 0.1

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Augmented views of ``x`` (n, C, L); the random draws come from ``gen`` (on the CPU) in a fixed order, so a
        trial's views depend on its seed only, on any device."""
        n, _, length = x.shape
        x = x.float()
        dev = x.device

        def uniform(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=gen).to(dev)

        # crop + resize: output position j reads input position start + keep * j / (L - 1), linearly interpolated
        keep = self.crop[0] + (self.crop[1] - self.crop[0]) * uniform(n)
        start = uniform(n) * (1 - keep)
        pos = (start[:, None] + keep[:, None] * torch.linspace(0, 1, length, device=dev)[None]) * (length - 1)
        lo = pos.floor().long().clamp(0, length - 1)
        hi = (lo + 1).clamp(max=length - 1)
        w = (pos - lo)[:, None, :]
        x = x.gather(2, lo[:, None, :].expand_as(x)) * (1 - w) + x.gather(2, hi[:, None, :].expand_as(x)) * w
        # circular shift (MNIST-1D's translation is circular)
        shift = torch.randint(-self.max_shift, self.max_shift + 1, (n,), generator=gen).to(dev)
        idx = (torch.arange(length, device=dev)[None] - shift[:, None]) % length
        x = x.gather(2, idx[:, None, :].expand_as(x))
        # amplitude, shear, noise
        x = x * (1 + self.scale * (2 * uniform(n, 1, 1) - 1))
        ramp = torch.linspace(-0.5, 0.5, length, device=dev)[None, None]
        x = x + self.shear * (2 * uniform(n, 1, 1) - 1) * ramp
        return x + self.noise * torch.randn(x.shape, generator=gen).to(dev)


def identity(x: torch.Tensor) -> torch.Tensor:
    return x.float()
