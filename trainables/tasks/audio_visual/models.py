"""Encoders, projection heads and the cross-modal InfoNCE loss of the audio-visual task (Wang et al.).

Both encoders are narrowed copies of Wang's (AVID-CMA's) so that a trial trains in seconds on a CPU, and both end
in a global max-pool, as Wang's do:

- ``AudioCNN``: Wang's "Conv2D depth 10" over log-mel ``(B, T, n_mels)``, read as one channel of T x n_mels;
  ``width`` replaces Wang's 64 (his channels 64, 64, 128, 256, 512 become w, w, 2w, 4w, 8w).
- ``FrameEncoder``: a per-frame 2D residual CNN in place of Wang's R(2+1)D-18, sized for 32 x 32 frames; the max
  over frames and positions is what Wang's adaptive 3D max-pool takes over the clip volume.
- ``AVModel``: the two encoders plus the two heads of the loss; ``av_infonce`` is the loss.

- [0] Wang et al., 2022, Positive and Negative Sampling Strategies for Self-Supervised Learning on Audio-Video
  Data (github.com/shanwangshan/positive-negative-sampling-strategy)
- [1] Morgado et al., 2021, Audio-Visual Instance Discrimination with Cross-Modal Agreement (AVID-CMA)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainables.losses import check_pair, check_positive, cross_modal_infonce
from trainables.models import BasicBlock

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TEMPORAL_POOLS = ("max", "mean")


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():  # torchvision's ResNet initialisation, as trainables.models
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class Basic2DBlock(nn.Module):
    """AVID-CMA's (and so Wang's) audio block: two (3x3 conv, BN, ReLU), the first strided, with NO shortcut.

    STRATEGIES.md calls these blocks "residual-style", but ``models/network_blocks.py`` adds no identity path;
    the plain block is kept here, since that is the network whose numbers Wang reports.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))


class AudioCNN(nn.Module):
    """Wang's "Conv2D depth 10" at base width ``width``: log-mel ``(B, T, n_mels)`` -> features ``(B, 8 width)``.

    A 7x7 stride-2 conv (BN, ReLU), then blocks of w, 2w (stride 2), 4w (stride 2), 8w channels, then a global
    max-pool. At width 16 (128 features, 0.3 M parameters) forward and backward on 64 clips of 50-100 x 64 take
    0.2-0.3 s on one thread of a busy CPU, half of it in the last block (8w channels); cost grows ~width^2. The
    max-pool makes any T and n_mels work: Wang pre-trains on 128 bands and tests on 64.
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"`width` is {width} but must be >= 1")
        self.conv1 = nn.Sequential(
            nn.Conv2d(1, width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(
            Basic2DBlock(width, width),
            Basic2DBlock(width, 2 * width, stride=2),
            Basic2DBlock(2 * width, 4 * width, stride=2),
            Basic2DBlock(4 * width, 8 * width),
        )
        self.feature_dim = 8 * width
        _init_weights(self)

    def forward(self, mels: Tensor) -> Tensor:
        """Pooled features. Shape: mels (B, T, n_mels) or (B, 1, T, n_mels) -> (B, feature_dim)."""
        if mels.ndim == 3:
            mels = mels.unsqueeze(1)
        if mels.ndim != 4 or mels.shape[1] != 1:
            raise ValueError(f"`mels` must have shape (B, T, n_mels) or (B, 1, T, n_mels); got {tuple(mels.shape)}")
        return torch.amax(self.blocks(self.conv1(mels)), dim=(2, 3))


class FrameEncoder(nn.Module):
    """Frames ``(B, F, 3, H, W)`` -> features ``(B, 8 width)``: a small residual 2D CNN on each frame, pooled.

    The stand-in for Wang's R(2+1)D-18 (stages 64, 128, 256, 512): a 3x3 stride-1 stem (the CIFAR stem of
    ``trainables.models``, as frames are 32 px), then BasicBlocks of w, 2w, 4w (each stride 2: 32 -> 16 -> 8 -> 4
    px) and 8w channels. At width 8 (64 features, 77 k parameters) forward and backward on 64 clips of 4 frames take
    ~0.1 s on one thread of a busy CPU, linear in F; width 16 costs ~3x.

    Each frame is max-pooled over positions; ``temporal_pool="max"`` (the default) then takes the max over frames,
    which is exactly the max over the clip volume of Wang's adaptive 3D max-pool; ``"mean"`` averages the frames.
    Nothing mixes frames before the pool, so frame order is not seen (R(2+1)D's temporal convs see it). BatchNorm
    statistics are taken over the B x F frames of a batch.

    uint8 frames are scaled to [0, 1] and normalised with ``mean`` / ``std`` (ImageNet's, as Wang); floating frames
    are taken as already normalised, so a caller's float augmentation pipeline can normalise itself.
    """

    def __init__(
        self,
        width: int = 8,
        *,
        temporal_pool: str = "max",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"`width` is {width} but must be >= 1")
        if temporal_pool not in TEMPORAL_POOLS:
            raise ValueError(f"`temporal_pool` is {temporal_pool!r} but must be one of {', '.join(TEMPORAL_POOLS)}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"`mean` and `std` must be 3 values each, std > 0; got {mean} and {std}")
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(
            BasicBlock(width, width, stride=2),
            BasicBlock(width, 2 * width, stride=2),
            BasicBlock(2 * width, 4 * width, stride=2),
            BasicBlock(4 * width, 8 * width),
        )
        self.temporal_pool = temporal_pool
        self.feature_dim = 8 * width
        # not persistent: constructor arguments, so a checkpoint holds weights only
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        _init_weights(self)

    def forward(self, frames: Tensor) -> Tensor:
        """Pooled features. Shape: frames (B, F, 3, H, W), uint8 or normalised float -> (B, feature_dim)."""
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"`frames` must have shape (B, F, 3, H, W); got {tuple(frames.shape)}")
        b, f = frames.shape[:2]
        x = frames.flatten(0, 1)
        if x.dtype == torch.uint8:
            x = (x.float().div_(255.0) - self.mean) / self.std
        per_frame = torch.amax(self.blocks(self.stem(x)), dim=(2, 3)).view(b, f, -1)
        return per_frame.amax(1) if self.temporal_pool == "max" else per_frame.mean(1)


class AVModel(nn.Module):
    """Audio and video encoders plus the two projection heads of Wang's loss (one biased Linear each).

    In Wang's code the heads belong to the loss module and are left out of the checkpoint; they live here so that
    one optimiser and one trial state hold everything a resumed trial needs. Downstream reads ``self.audio``
    only, never the heads.
    """

    def __init__(self, audio: AudioCNN, video: FrameEncoder, *, proj_dim: int = 128) -> None:
        super().__init__()
        if proj_dim < 1:
            raise ValueError(f"`proj_dim` is {proj_dim} but must be >= 1")
        self.audio = audio
        self.video = video
        self.audio_head = nn.Linear(audio.feature_dim, proj_dim)
        self.video_head = nn.Linear(video.feature_dim, proj_dim)
        self.proj_dim = proj_dim

    @classmethod
    def build(
        cls,
        *,
        audio_width: int = 16,
        video_width: int = 8,
        proj_dim: int = 128,
        temporal_pool: str = "max",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> AVModel:
        video = FrameEncoder(video_width, temporal_pool=temporal_pool, mean=mean, std=std)
        return cls(AudioCNN(audio_width), video, proj_dim=proj_dim)

    def forward(self, mels: Tensor, frames: Tensor) -> tuple[Tensor, Tensor]:
        """L2-normalised projections ``(a, v)``, row i of each from clip i. Shapes: (B, proj_dim) each."""
        a = F.normalize(self.audio_head(self.audio(mels)), dim=1)
        v = F.normalize(self.video_head(self.video(frames)), dim=1)
        return a, v


def av_infonce(a: Tensor, v: Tensor, temperature: float) -> Tensor:
    """Wang's cross-modal InfoNCE: L = (L_{V->A} + L_{A->V}) / 2, the positive of row i in column i.

    With S[i, j] = v_i . a_j / t, L_{V->A} = mean_i -log softmax_j(S[i, :])[i] and L_{A->V} the same down the
    columns of S: each anchor has the B - 1 other clips of the other modality as negatives and none of its own.
    Rows are L2-normalised here (Wang's ``normalize=True``; a no-op on ``AVModel``'s outputs, so raw head outputs
    work too). Log-sum-exp in float32 keeps t = 0.01 finite. Swapping ``a`` and ``v`` transposes S and gives the
    same loss.

    Args:
        a: audio projections. Shape: (B, d), B >= 2.
        v: video projections; row i is the positive of a's row i. Shape: (B, d).
        temperature: t > 0 (Wang: 0.07).

    Returns:
        Scalar loss; ln B when every cosine is equal.

    Raises:
        ValueError: temperature not a finite number > 0; shapes not both (B, d) or B < 2.
    """
    check_positive(temperature, "temperature")
    check_pair(a, v, "`a` and `v`")
    if a.dtype in (torch.float16, torch.bfloat16):  # cosines divided by a small t need float32 resolution
        a, v = a.float(), v.float()
    with torch.autocast(a.device.type, enabled=False):
        return cross_modal_infonce(F.normalize(v, dim=1) @ F.normalize(a, dim=1).T, temperature)  # (B_v, B_a)
