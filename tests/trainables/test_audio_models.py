"""trainables.tasks.audio_text.models:
shapes and masks, padding invariance of the CRNN, the masked BatchNorm and per-clip
upsampling against torch's, which parts train, and one optimisation smoke run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainables.tasks.audio_text.data import PAD_ID
from trainables.tasks.audio_text.models import (
    AudioTextModel,
    CRNNEncoder,
    MaskedBatchNorm2d,
    WordEncoder,
    interpolate_frames,
    pool_embeddings,
)

D, MELS = 16, 64


pytestmark = pytest.mark.usefixtures("one_thread")


def _mask(lengths: list[int], width: int | None = None) -> torch.Tensor:
    width = width or max(lengths)
    return torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]


def _table(vocab: int = 12, dim: int = D) -> torch.Tensor:
    table = F.normalize(torch.randn(vocab, dim), dim=1)
    table[PAD_ID] = 0
    return table


@pytest.fixture
def encoder() -> CRNNEncoder:
    torch.manual_seed(0)
    return CRNNEncoder(MELS, D, conv_width=4, gru_units=D // 2)


def test_crnn_shapes_unit_frames_and_zero_padding(encoder: CRNNEncoder) -> None:
    mask = _mask([30, 17, 9])
    with torch.no_grad():
        frames, out_mask = encoder(torch.randn(3, 30, MELS), mask)
    assert frames.shape == (3, 30, D) and torch.equal(out_mask, mask)
    assert torch.allclose(frames[mask].norm(dim=-1), torch.ones(int(mask.sum())), atol=1e-5)
    assert float(frames[~mask].abs().sum()) == 0.0
    with torch.no_grad():
        frames, out_mask = encoder(torch.randn(2, 12, MELS))  # no mask: every frame is real
    assert frames.shape == (2, 12, D) and bool(out_mask.all())


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_padding_never_reaches_real_frames(mode: str) -> None:
    """Extra frames, whatever they hold, leave the real frames' outputs unchanged (dropout off in train mode)."""
    torch.manual_seed(0)
    encoder = CRNNEncoder(MELS, D, conv_width=4, gru_units=D // 2, dropout=0.0)
    encoder.train(mode == "train")
    lengths = [26, 13, 7]
    mask = _mask(lengths)
    mels = torch.randn(3, 26, MELS) * mask[..., None]
    reference, _ = encoder(mels, mask)
    padded_mask = _mask(lengths, 41)
    padded = torch.where(padded_mask[..., None], F.pad(mels, (0, 0, 0, 15)), 100 * torch.randn(3, 41, MELS))
    frames, _ = encoder(padded, padded_mask)
    assert torch.allclose(frames[:, :26], reference, atol=1e-5)
    if mode == "eval":  # and a clip alone, unpadded, gets what it gets in a batch
        alone, _ = encoder(mels[2:, :7])
        assert torch.allclose(alone, reference[2:, :7], atol=1e-5)


def test_masked_batchnorm_equals_batchnorm_without_padding() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 3, 10, 8) * 2 + 1
    ours, theirs = MaskedBatchNorm2d(3), nn.BatchNorm2d(3)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 2)
        ours.bias.uniform_(-1, 1)
    theirs.load_state_dict(ours.state_dict())
    assert torch.allclose(ours(x, torch.ones(4, 10, dtype=torch.bool)), theirs(x), atol=1e-5)
    assert torch.allclose(ours.running_mean, theirs.running_mean, atol=1e-6)
    assert torch.allclose(ours.running_var, theirs.running_var, atol=1e-5)
    # with padding: the statistics of the real steps alone
    mask = _mask([10, 6, 3, 8])
    y = ours(x, mask)
    real = x.permute(0, 2, 1, 3)[mask]  # (n_real, C, F)
    mean, var = real.mean(dim=(0, 2)), real.var(dim=(0, 2), unbiased=False)
    expected = (x - mean[:, None, None]) / torch.sqrt(var[:, None, None] + ours.eps) * ours.weight[:, None, None]
    assert torch.allclose(y, expected + ours.bias[:, None, None], atol=1e-4)


def test_per_clip_upsampling_equals_torch_interpolate() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 7, 5)
    steps, frames = torch.tensor([7, 4, 1]), torch.tensor([29, 17, 3])
    out = interpolate_frames(x, steps, frames, 30)
    for i, (s, t) in enumerate(zip(steps.tolist(), frames.tolist(), strict=True)):
        ref = F.interpolate(x[i : i + 1, :s].transpose(1, 2), t, mode="linear", align_corners=False)
        assert torch.allclose(out[i, :t], ref[0].T, atol=1e-6)


def test_few_mel_bands_and_a_projection_to_the_word_size() -> None:
    torch.manual_seed(0)
    encoder = CRNNEncoder(8, 10, conv_width=3, gru_units=5 + 2)  # 2 x 7 != 10: a linear layer maps 14 -> 10
    assert isinstance(encoder.proj, nn.Linear)
    frames, _ = encoder(torch.randn(2, 16, 8), _mask([16, 9]))
    assert frames.shape == (2, 16, 10) and torch.isfinite(frames).all()
    with pytest.raises(ValueError, match="dropout"):
        CRNNEncoder(64, 64, dropout=1.0)


def test_gradients_stay_finite_through_padding(encoder: CRNNEncoder) -> None:
    """All-zero pooling windows of padded frames must not turn the gradient into NaN."""
    mels = torch.randn(3, 40, MELS, requires_grad=True)
    frames, mask = encoder(mels, _mask([40, 12, 5]))
    frames.sum().backward()
    assert torch.isfinite(mels.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)


def test_word_encoder_normalises_and_masks() -> None:
    torch.manual_seed(0)
    text = WordEncoder(_table() * 3)
    words = torch.tensor([[2, 5, 7], [3, 1, PAD_ID]])
    out, mask = text(words)
    assert out.shape == (2, 3, D) and torch.equal(mask, words != PAD_ID)
    assert torch.allclose(out[mask].norm(dim=-1), torch.ones(5), atol=1e-5) and float(out[1, 2].abs().sum()) == 0
    projected = WordEncoder(_table(), projection=True)
    plain = WordEncoder(projected.embedding.weight.detach())
    assert torch.allclose(projected(words)[0], plain(words)[0], atol=1e-6)  # the projection starts at identity


def test_pool_embeddings_mean_of_real_positions() -> None:
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]]])
    assert torch.allclose(pool_embeddings(x, torch.tensor([[True, True, False]])), torch.tensor([[0.5**0.5] * 2]))
    assert torch.allclose(pool_embeddings(x), F.normalize(x.mean(1), dim=-1))


def _step_loss(model: AudioTextModel, mels, frame_mask, words, word_mask) -> torch.Tensor:
    """1 - cosine of the pooled embeddings of each positive pair: a simple loss to move the encoders."""
    frames, embedded = model(mels, frame_mask, words, word_mask)
    return 1 - (pool_embeddings(frames, frame_mask) * pool_embeddings(embedded, word_mask)).sum(-1).mean()


def test_frozen_table_gets_no_gradient_while_the_audio_encoder_does() -> None:
    torch.manual_seed(0)
    model = AudioTextModel.build(_table(), MELS, conv_width=4, gru_units=D // 2)
    assert not model.text.embedding.weight.requires_grad
    words = torch.tensor([[2, 3, PAD_ID], [4, 5, 6]])
    _step_loss(model, torch.randn(2, 20, MELS), _mask([20, 11]), words, words != PAD_ID).backward()
    assert model.text.embedding.weight.grad is None
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.audio.parameters())
    learned = AudioTextModel.build(_table(), MELS, trainable_words=True, conv_width=4, gru_units=D // 2)
    _step_loss(learned, torch.randn(2, 20, MELS), _mask([20, 11]), words, words != PAD_ID).backward()
    grad = learned.text.embedding.weight.grad
    assert grad is not None and float(grad[2].abs().sum()) > 0 and float(grad[PAD_ID].abs().sum()) == 0
    with pytest.raises(ValueError, match="share a size"):
        AudioTextModel(CRNNEncoder(MELS, 8, conv_width=2, gru_units=4), WordEncoder(_table()))


def test_a_few_adam_steps_decrease_a_simple_loss() -> None:
    torch.manual_seed(0)
    model = AudioTextModel.build(_table(), MELS, conv_width=4, gru_units=D // 2)
    frame_mask = _mask([24, 20, 16, 12])
    mels = torch.randn(4, 24, MELS) * frame_mask[..., None]
    words = torch.tensor([[2, 3], [4, 5], [6, 7], [8, 9]])
    batch = (mels, frame_mask, words, words != PAD_ID)
    model.eval()
    with torch.no_grad():
        before = float(_step_loss(model, *batch))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(15):
        optimiser.zero_grad()
        _step_loss(model, *batch).backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        after = float(_step_loss(model, *batch))
    assert after < before - 0.05, (before, after)
