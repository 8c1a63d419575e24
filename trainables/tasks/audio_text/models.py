"""Encoders of the audio-text task (Xie et al.): a CRNN over log-mel frames and a word-vector text encoder.

Both map into one space of the word dimension d, one embedding per frame and per word, so that Xie's score (mean
ReLU frame-word cosine, ``trainables.tasks.audio_text.losses``) compares them directly. Every output is
L2-normalised at real positions and zero at padding, and comes with its mask (True = real).

Padding never reaches a real frame: the CRNN re-zeroes padded frames before every convolution, its BatchNorms take
their statistics over real frames only, the GRU runs on packed sequences and the upsampling is per clip. A clip
therefore gets the same frame embeddings however much padding its batch adds (up to floating-point rounding), in
training and in eval mode. This deliberately departs from the original code, where zero-padded frames pass through
the CNN and GRU and shift the scores with the batch's composition.

- [0] Xie et al., 2023, On Negative Sampling for Contrastive Audio-Text Retrieval, arXiv:2211.04070
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainables.tasks.audio_text.data import PAD_ID

_TIME_POOL = (2, 2, 1)  # the paper's LPPool kernels over time: 4x fewer GRU steps than frames
_FREQ_POOL = 4  # and over frequency at every stage (64 mels -> 16 -> 4 -> 1)


def _lengths_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    return torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]


class MaskedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d over ``(B, C, T, F)`` whose training statistics count only real time steps.

    Padding would otherwise enter the batch mean and variance and so change every clip's features with the
    batch's padding. In eval mode it is plain BatchNorm (running statistics).
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if not self.training or mask is None:
            return super().forward(x)
        xm = x * mask[:, None, :, None]  # (B, C, T, F), zero at padding
        count = mask.sum() * x.shape[-1]
        mean = xm.sum(dim=(0, 2, 3)) / count
        var = (xm.square().sum(dim=(0, 2, 3)) / count - mean.square()).clamp_min(0)  # one pass over x
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_mean.lerp_(mean, factor)
                self.running_var.lerp_(unbiased, factor)
        scale = torch.rsqrt(var + self.eps)
        shift = -mean * scale
        if self.affine:
            scale, shift = scale * self.weight, shift * self.weight + self.bias
        return torch.addcmul(shift[None, :, None, None], x, scale[None, :, None, None])


def lp_pool4(x: torch.Tensor, kernel: tuple[int, int]) -> torch.Tensor:
    """The paper's LP-pooling with p = 4, ``(sum x^4)^(1/4)`` over non-overlapping windows, floored above zero.

    torch's LPPool2d has an infinite gradient at an all-zero window (0 ** (1/4)), and a masked clip has many:
    times the zero gradient that the mask sends back, that is NaN. Flooring the sum at 1e-12 keeps the gradient
    finite; real windows never come that close to zero. Squares and square roots: pow is several times slower.
    """
    total = F.avg_pool2d(x.square().square(), kernel) * (kernel[0] * kernel[1])
    return total.clamp_min(1e-12).sqrt().sqrt()


def interpolate_frames(
    x: torch.Tensor, src_lengths: torch.Tensor, dst_lengths: torch.Tensor, width: int
) -> torch.Tensor:
    """Per-clip linear upsampling ``(B, S, d)`` -> ``(B, width, d)``, clip b from its S_b steps to its T_b frames.

    Equals ``F.interpolate(mode="linear", align_corners=False)`` applied to each clip alone; the paper
    interpolates the padded batch, which ties a clip's frames to the longest clip in its batch. Positions past
    T_b repeat the last step (the caller masks them).
    """
    b, _, d = x.shape
    src = src_lengths.clamp_min(1)[:, None]
    scale = src.to(x.dtype) / dst_lengths.clamp_min(1)[:, None].to(x.dtype)
    t = torch.arange(width, device=x.device, dtype=x.dtype)[None, :]
    pos = ((t + 0.5) * scale - 0.5).clamp_min(0)
    lo = torch.minimum(pos.floor().long(), src - 1)
    hi = torch.minimum(lo + 1, src - 1)
    frac = (pos - lo.to(x.dtype)).clamp(0, 1)[..., None]
    x_lo = x.gather(1, lo[..., None].expand(b, width, d))
    x_hi = x.gather(1, hi[..., None].expand(b, width, d))
    return x_lo + (x_hi - x_lo) * frac


class CRNNEncoder(nn.Module):
    """Xie et al.'s CRNN, narrowed to train in seconds on a CPU: log-mel ``(B, T, n_mels)`` -> ``(B, T, d)``.

    Three stages of one, two and two (BatchNorm, 3x3 conv, LeakyReLU(0.1)) blocks, the first BatchNorm on the input,
    with ``conv_width``, ``2 conv_width``, ``2 conv_width`` channels (the paper: 32, 128, 128), each stage ending in
    an LP-pool (p=4) over time (2, 2, 1) and frequency (4); dropout; a bidirectional GRU of ``gru_units`` per
    direction; linear interpolation back to the T input frames. When ``2 gru_units != out_dim`` a linear layer
    maps the GRU to ``out_dim`` (the paper has none: its GRU is 150 x 2 = 300, Word2Vec's size).

    At the defaults (45k parameters) a training step on 32 synthetic clips of ~80 frames takes ~0.15 s on one CPU
    thread; the first stage, at full time and mel resolution, dominates it (``conv_width=8`` or 32 mels halve it).

    Clips need at least 4 frames (80 ms) for one GRU step; shorter ones still get one step, but padding can then
    reach it through the pooling window.
    """

    def __init__(
        self, n_mels: int = 64, out_dim: int = 64, *, conv_width: int = 16, gru_units: int = 32, dropout: float = 0.3
    ) -> None:
        super().__init__()
        if min(n_mels, out_dim, conv_width, gru_units) < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(
                f"n_mels, out_dim, conv_width, gru_units must be positive and dropout in [0, 1); got {n_mels}, "
                f"{out_dim}, {conv_width}, {gru_units}, {dropout}"
            )
        widths = (conv_width, 2 * conv_width, 2 * conv_width)
        self.norms, self.convs = nn.ModuleList(), nn.ModuleList()  # norms[0] is the paper's input BatchNorm
        self.stage_of: list[int] = []  # which stage each conv belongs to (pool after its last conv)
        self.freq_kernels: list[int] = []
        channels, freq = 1, n_mels
        for stage, (width, n_convs) in enumerate(zip(widths, (1, 2, 2), strict=True)):
            for _ in range(n_convs):
                self.norms.append(MaskedBatchNorm2d(channels))
                self.convs.append(nn.Conv2d(channels, width, 3, padding=1, bias=False))
                self.stage_of.append(stage)
                channels = width
            self.freq_kernels.append(min(_FREQ_POOL, freq))  # few mel bands: pool what is left, never to zero
            freq //= self.freq_kernels[-1]
        self.act = nn.LeakyReLU(0.1)
        self.dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(channels * freq, gru_units, batch_first=True, bidirectional=True)
        self.proj: nn.Module = nn.Identity() if 2 * gru_units == out_dim else nn.Linear(2 * gru_units, out_dim)
        self.out_dim = out_dim
        for m in self.modules():  # Kaiming-normal as the paper's init_weights
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0.1, nonlinearity="leaky_relu")
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, mels: torch.Tensor, frame_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame embeddings, L2-normalised, zero at padding.

        Args:
            mels: log-mel frames. Shape: (B, T, n_mels).
            frame_mask: True at real frames, a prefix of each row; None if no frame is padding. Shape: (B, T).

        Returns:
            ``(frames, frame_mask)``. Shapes: (B, T, out_dim), (B, T).
        """
        b, t, _ = mels.shape
        if frame_mask is None:
            frame_mask = torch.ones((b, t), dtype=torch.bool, device=mels.device)
        frame_mask = frame_mask.bool()
        lengths = frame_mask.sum(1)
        x, steps = mels.unsqueeze(1), lengths.clone()
        mask = _lengths_mask(steps, t)
        for i, (norm, conv) in enumerate(zip(self.norms, self.convs, strict=True)):
            x = norm(x, mask) * mask[:, None, :, None]  # zeros past the end: what an unpadded clip's conv sees
            x = self.act(conv(x))
            stage = self.stage_of[i]
            if i == len(self.convs) - 1 or self.stage_of[i + 1] != stage:
                x = lp_pool4(x, (_TIME_POOL[stage], self.freq_kernels[stage]))
                steps = steps // _TIME_POOL[stage]
                mask = _lengths_mask(steps, x.shape[2])
        x = self.dropout(x)
        x = x.permute(0, 2, 1, 3).flatten(2)  # (B, S, C * F)
        steps = steps.clamp_min(1)
        packed = nn.utils.rnn.pack_padded_sequence(x, steps.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        out = interpolate_frames(self.proj(out), steps, lengths, t)  # a linear map commutes with interpolation
        return F.normalize(out, dim=-1) * frame_mask[..., None], frame_mask


class WordEncoder(nn.Module):
    """Word-vector lookup, L2-normalised per word, zero at padding: ``(B, W)`` ids -> ``(B, W, d)``.

    As in the paper the table is frozen (Word2Vec there, its stand-in here) and the text branch has no trainable
    parameter: caption-caption scores S_tt, which the text-based selections rank negatives by, then stay fixed,
    and only the audio encoder learns to meet the words. ``trainable=True`` trains the table, for vocabularies
    without pre-trained vectors (``AudioTextData.trainable_words``). ``projection=True`` adds a d x d linear map
    started at the identity, off by default because it would make S_tt move during training.
    """

    def __init__(self, embeddings: torch.Tensor, *, trainable: bool = False, projection: bool = False) -> None:
        super().__init__()
        if embeddings.ndim != 2 or embeddings.shape[0] <= PAD_ID:
            raise ValueError(f"embeddings must be a (vocab, dim) table, got {tuple(embeddings.shape)}")
        self.embedding = nn.Embedding.from_pretrained(
            embeddings.detach().clone().float(), freeze=not trainable, padding_idx=PAD_ID
        )
        d = embeddings.shape[1]
        self.projection: nn.Linear | None = None
        if projection:
            self.projection = nn.Linear(d, d, bias=False)
            nn.init.eye_(self.projection.weight)
        self.out_dim = d

    def forward(self, words: torch.Tensor, word_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Word embeddings and mask (from ``words != PAD_ID`` when not given). Shapes: (B, W, d), (B, W)."""
        mask = words != PAD_ID if word_mask is None else word_mask.bool()
        x = F.normalize(self.embedding(words), dim=-1)
        if self.projection is not None:
            x = F.normalize(self.projection(x), dim=-1)
        return x * mask[..., None], mask


def pool_embeddings(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over real positions, L2-normalised: ``(B, L, d)`` -> ``(B, d)``, for the pooled cosine score."""
    if mask is None:
        return F.normalize(x.mean(1), dim=-1)
    w = mask.to(x.dtype)[..., None]
    return F.normalize((x * w).sum(1) / w.sum(1).clamp_min(1), dim=-1)


class AudioTextModel(nn.Module):
    """The two encoders of one trial, in one module so that a checkpoint holds both."""

    def __init__(self, audio: CRNNEncoder, text: WordEncoder) -> None:
        super().__init__()
        if audio.out_dim != text.out_dim:
            raise ValueError(f"audio and text embeddings must share a size, got {audio.out_dim} and {text.out_dim}")
        self.audio = audio
        self.text = text

    @classmethod
    def build(
        cls,
        embeddings: torch.Tensor,
        n_mels: int,
        *,
        trainable_words: bool = False,
        conv_width: int = 16,
        gru_units: int = 32,
        dropout: float = 0.3,
        projection: bool = False,
    ) -> AudioTextModel:
        """Encoders for a word table ``embeddings`` (V, d): the audio frames land in the words' d dimensions."""
        text = WordEncoder(embeddings, trainable=trainable_words, projection=projection)
        audio = CRNNEncoder(n_mels, text.out_dim, conv_width=conv_width, gru_units=gru_units, dropout=dropout)
        return cls(audio, text)

    def forward(
        self, mels: torch.Tensor, frame_mask: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(frames (B, T, d), words (B, W, d))``, normalised, zero at padding."""
        return self.audio(mels, frame_mask)[0], self.text(words, word_mask)[0]
