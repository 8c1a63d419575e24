"""Encoders and the projection head of the image task.

An encoder is a backbone that maps a normalised batch ``(n, C, H, W)`` to a flat feature ``h`` of
``feature_dim``; the downstream probes read ``h`` and the contrastive loss reads ``z = head(h)``, as in
SimCLR / HCL. All encoders use HCL's CIFAR stem (3x3 conv, stride 1, no max-pool), so they work on 8-px digits
and 32-px crops as well as on 96-px STL-10 test images (global average pooling makes the size free).

- ``small_resnet``: the default for the embedded digits, two stages of one BasicBlock each; a trial of it
  trains in seconds on a CPU.
- ``resnet18`` / ``resnet50``: torchvision's networks (``weights=None``) with the CIFAR stem, as in HCL/DCL.
"""

from __future__ import annotations

import torch
from torch import nn

ENCODERS: tuple[str, ...] = ("small_resnet", "resnet18", "resnet50")


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs + identity / 1x1 projection shortcut), as torchvision's."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """CIFAR-stem ResNet with stages of ``width`` and ``2 * width`` channels (the second at stride 2).

    Sized for the embedded 8x8 digits (about 0.5 M multiply-adds per image at width 16, 2.1 M at width 32),
    yet it keeps the residual / BatchNorm structure of the real ResNets, whose batch statistics the in-batch
    negatives share.
    """

    def __init__(self, in_channels: int, width: int = 32, blocks: tuple[int, ...] = (1, 1)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        channels = width
        for stage, count in enumerate(blocks):
            out = width * 2**stage
            for i in range(count):
                layers.append(BasicBlock(channels, out, stride=2 if stage > 0 and i == 0 else 1))
                channels = out
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = channels
        for m in self.modules():  # torchvision's ResNet initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.layers(self.stem(x))), 1)


def _torchvision_resnet(name: str, in_channels: int) -> tuple[nn.Module, int]:
    """torchvision ResNet with HCL's CIFAR stem: conv1 -> 3x3 stride 1, max-pool and fc removed."""
    from torchvision import (
        models,
    )  # imported here: torchvision.models is slow to import, small_resnet needs none

    net = models.resnet18(weights=None) if name == "resnet18" else models.resnet50(weights=None)
    feature_dim = net.fc.in_features
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net, feature_dim


def build_encoder(name: str, in_channels: int, *, width: int = 32) -> tuple[nn.Module, int]:
    """Return ``(backbone, feature_dim)``; the backbone maps ``(n, C, H, W)`` to ``(n, feature_dim)``.

    ``width`` sets the base width of ``small_resnet``; torchvision's ResNets keep their own (64 at the base).
    """
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; expected one of {', '.join(ENCODERS)}")
    if in_channels < 1 or width < 1:
        raise ValueError(f"in_channels and width must be positive, got {in_channels} and {width}")
    if name == "small_resnet":
        net = SmallResNet(in_channels, width)
        return net, net.feature_dim
    return _torchvision_resnet(name, in_channels)


class ProjectionHead(nn.Module):
    """HCL's head g: Linear (no bias) -> BatchNorm1d -> ReLU -> Linear (with bias)."""

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim, bias=True),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class ContrastiveModel(nn.Module):
    """Backbone f plus head g; ``forward`` returns unnormalised ``(h, z)`` (the loss and probes normalise)."""

    def __init__(
        self, backbone: nn.Module, feature_dim: int, *, hidden_dim: int = 512, out_dim: int = 128
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = ProjectionHead(feature_dim, hidden_dim, out_dim)
        self.feature_dim = feature_dim
        self.out_dim = out_dim

    @classmethod
    def build(
        cls, encoder: str, in_channels: int, *, width: int = 32, hidden_dim: int = 512, out_dim: int = 128
    ) -> ContrastiveModel:
        backbone, feature_dim = build_encoder(encoder, in_channels, width=width)
        return cls(backbone, feature_dim, hidden_dim=hidden_dim, out_dim=out_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.backbone(x)
        return h, self.head(h)
