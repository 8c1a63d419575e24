"""The signal task's encoder: a small 1-D CNN in the shape of MNIST-1D's baseline CNN (which reaches about 94% when
trained supervised), with BatchNorm, whose batch statistics the in-batch negatives share as in the image encoders."""

from __future__ import annotations

import torch
from torch import nn

from trainables.models import ContrastiveModel


class Conv1dEncoder(nn.Module):
    """Four conv-BN-ReLU layers (two at stride 2) and global average pooling: ``(n, C, L)`` -> ``(n, 4 * width)``."""

    def __init__(self, in_channels: int, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        shape = ((in_channels, width, 5, 1), (width, 2 * width, 3, 2), (2 * width, 2 * width, 3, 1),
                 (2 * width, 4 * width, 3, 2))
        for c_in, c_out, kernel, stride in shape:
            layers += [nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
                       nn.BatchNorm1d(c_out), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool1d(1), nn.Flatten())
        self.feature_dim = 4 * width
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_model(in_channels: int, *, width: int, hidden_dim: int, out_dim: int) -> ContrastiveModel:
    encoder = Conv1dEncoder(in_channels, width)
    return ContrastiveModel(encoder, encoder.feature_dim, hidden_dim=hidden_dim, out_dim=out_dim)
