"""trainables.models: output shapes per encoder, HCL's CIFAR stem and head, gradients, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainables.models import ENCODERS, ContrastiveModel, ProjectionHead, build_encoder


@pytest.mark.parametrize(
    ("name", "channels", "width", "size", "feature_dim"),
    [
        ("small_resnet", 1, 32, 8, 64),  # the embedded digits
        ("small_resnet", 3, 16, 32, 32),
        ("small_resnet", 3, 16, 96, 32),  # any input size: global average pooling
        ("resnet18", 3, 32, 32, 512),
        ("resnet18", 1, 32, 8, 512),
    ],
)
def test_feature_shapes(name: str, channels: int, width: int, size: int, feature_dim: int) -> None:
    torch.manual_seed(0)
    backbone, dim = build_encoder(name, channels, width=width)
    assert dim == feature_dim
    h = backbone(torch.randn(2, channels, size, size))
    assert h.shape == (2, feature_dim) and torch.isfinite(h).all()


def test_resnet50_on_a_tiny_batch() -> None:
    backbone, dim = build_encoder("resnet50", 3)
    assert dim == 2048
    backbone.eval()  # two images are enough for shapes; eval mode keeps BatchNorm out of it
    with torch.no_grad():
        assert backbone(torch.randn(2, 3, 32, 32)).shape == (2, 2048)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_resnets_have_the_cifar_stem(name: str) -> None:
    backbone, _ = build_encoder(name, 1)
    conv1 = backbone.conv1
    assert (conv1.in_channels, conv1.kernel_size, conv1.stride, conv1.padding) == (1, (3, 3), (1, 1), (1, 1))
    assert isinstance(backbone.maxpool, nn.Identity) and isinstance(backbone.fc, nn.Identity)


def test_projection_head_is_hcls() -> None:
    head = ProjectionHead(64)
    first, bn, relu, last = head.net
    assert (
        isinstance(first, nn.Linear)
        and first.bias is None
        and (first.in_features, first.out_features) == (64, 512)
    )
    assert isinstance(bn, nn.BatchNorm1d) and isinstance(relu, nn.ReLU)
    assert isinstance(last, nn.Linear) and last.bias is not None and last.out_features == 128


def test_contrastive_model_forward_and_gradients() -> None:
    torch.manual_seed(0)
    model = ContrastiveModel.build("small_resnet", 1, width=8, hidden_dim=32, out_dim=16)
    h, z = model(torch.randn(6, 1, 8, 8))
    assert h.shape == (6, 16) and z.shape == (6, 16)
    z.pow(2).sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
    assert model.backbone.stem[0].weight.grad.abs().sum() > 0  # the gradient reaches the first conv


def test_small_resnet_structure() -> None:
    backbone, dim = build_encoder("small_resnet", 3, width=8)
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].stride == (1, 1) and convs[0].kernel_size == (3, 3)  # CIFAR stem, no max-pool
    assert not any(isinstance(m, nn.MaxPool2d) for m in backbone.modules())
    assert backbone.layers(torch.randn(2, 8, 8, 8)).shape == (2, 16, 4, 4)  # stage 2 halves the size
    assert dim == 16


def test_unknown_encoder_lists_the_names() -> None:
    assert ENCODERS == ("small_resnet", "resnet18", "resnet50")
    with pytest.raises(ValueError, match="small_resnet, resnet18, resnet50"):
        build_encoder("vit", 3)
