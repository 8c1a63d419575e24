"""trainables.tasks.audio_visual.downstream:
both protocols beat chance on class-dependent log-mels, leave the given encoder as it
was, are functions of their seed, and apply the mel standardisation they are given."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainables.tasks.audio_visual.downstream import fine_tune, linear_probe
from trainables.tasks.audio_visual.models import AudioCNN

pytestmark = pytest.mark.usefixtures("one_thread")

C, T, M = 3, 16, 24


def _split(n: int, seed: int, *, amp: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise log-mels in which class c raises mel bands [8c, 8c + 8) by ``amp``, balanced classes."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % C
    bands = (torch.arange(M)[None, :] // (M // C) == y[:, None]).float()
    return torch.randn(n, T, M, generator=g) + amp * bands[:, None, :], y


TRAIN, EVAL = _split(192, 0), _split(96, 1)


class MeanOverTime(nn.Module):
    """A stub encoder whose features are the mel profile: separable by construction."""

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        return mels.mean(1)


def _encoder() -> AudioCNN:
    torch.manual_seed(0)
    return AudioCNN(width=4)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_linear_probe_on_separable_stub_features() -> None:
    assert linear_probe(MeanOverTime(), TRAIN, EVAL) >= 0.95
    shuffled = EVAL[1][torch.randperm(96, generator=torch.Generator().manual_seed(0))]
    assert linear_probe(MeanOverTime(), TRAIN, (EVAL[0], shuffled)) < 0.6  # labels unrelated to the mels: chance


def test_probe_and_fine_tune_of_a_random_encoder_beat_chance() -> None:
    enc = _encoder()
    assert linear_probe(enc, TRAIN, EVAL) > 0.6  # chance is 1/3
    assert fine_tune(enc, TRAIN, EVAL) > 0.6


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_linear_probe_leaves_parameters_batchnorm_statistics_and_mode_unchanged(mode: str) -> None:
    enc = _encoder()
    enc.train(mode == "train")
    before = _state(enc)
    linear_probe(enc, TRAIN, EVAL, epochs=2)
    for key, value in _state(enc).items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=key)
    assert all(m.training == (mode == "train") for m in enc.modules())


def test_fine_tune_trains_a_copy_and_leaves_the_encoder_untouched() -> None:
    enc = _encoder().train()
    enc.conv1[0].weight.requires_grad_(False)
    before = _state(enc)
    fine_tune(enc, TRAIN, EVAL, epochs=1)
    for key, value in _state(enc).items():  # parameters, running statistics and num_batches_tracked
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=key)
    assert all(m.training for m in enc.modules())
    assert not enc.conv1[0].weight.requires_grad
    assert all(p.grad is None for p in enc.parameters())


@pytest.mark.parametrize("protocol", [linear_probe, fine_tune])
def test_deterministic_in_seed_whatever_the_global_rng(protocol) -> None:
    enc = _encoder()
    kwargs = {"epochs": 1} if protocol is fine_tune else {"epochs": 5}
    torch.manual_seed(123)
    first = protocol(enc, TRAIN, EVAL, seed=7, **kwargs)
    torch.manual_seed(456)
    assert protocol(enc, TRAIN, EVAL, seed=7, **kwargs) == first
    assert protocol(enc, TRAIN, EVAL, seed=7, device="cpu", **kwargs) == first


@pytest.mark.parametrize("protocol", [linear_probe, fine_tune])
def test_mel_mean_and_std_are_applied_to_the_inputs(protocol) -> None:
    enc = _encoder()
    mean, std = torch.linspace(-3, 3, M), torch.linspace(0.5, 2, M)
    raw_train, raw_eval = (TRAIN[0] * std + mean, TRAIN[1]), (EVAL[0] * std + mean, EVAL[1])
    kwargs = {"epochs": 1} if protocol is fine_tune else {"epochs": 5}
    standardised = protocol(enc, ((raw_train[0] - mean) / std, TRAIN[1]), ((raw_eval[0] - mean) / std, EVAL[1]),
                            **kwargs)
    assert protocol(enc, raw_train, raw_eval, mel_mean=mean, mel_std=std, **kwargs) == standardised


def test_num_classes_may_exceed_the_labels() -> None:
    assert linear_probe(MeanOverTime(), TRAIN, EVAL, num_classes=5) >= 0.95
    with pytest.raises(ValueError, match="num_classes"):
        linear_probe(MeanOverTime(), TRAIN, EVAL, num_classes=2)


@pytest.mark.parametrize(
    ("train", "kwargs", "match"),
    [
        ((TRAIN[0], TRAIN[1][:-1]), {}, "train_split"),
        ((TRAIN[0][:, 0], TRAIN[1]), {}, "train_split"),
        ((TRAIN[0], TRAIN[1] - 1), {}, "labels"),
        ((TRAIN[0], TRAIN[1].float()), {}, "labels"),
        (TRAIN, {"epochs": 0}, "epochs"),
        (TRAIN, {"batch_size": 0}, "batch_size"),
        (TRAIN, {"lr": 0.0}, "lr"),
        (TRAIN, {"weight_decay": -1.0}, "weight_decay"),
        (TRAIN, {"dropout": 1.0}, "dropout"),
    ],
)
@pytest.mark.parametrize("protocol", [linear_probe, fine_tune])
def test_bad_arguments_are_rejected(protocol, train, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        protocol(MeanOverTime(), train, EVAL, **kwargs)
