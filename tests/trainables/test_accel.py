"""bf16 and channels-last are for CUDA only: a CPU trial must run the plain fp32 code, and asking for bf16 where
there is none must be refused in one line."""

from __future__ import annotations

import pytest
import torch

from trainables.accel import Accel
from trainables.tasks import parse_config


def test_cpu_runs_fp32_in_the_default_layout():
    accel = Accel.resolve(torch.device("cpu"), "auto")
    assert (accel.bf16, accel.channels_last) == (False, False)
    x = torch.zeros(2, 3, 8, 8)
    assert accel.images(x).is_contiguous()  # not channels-last
    with accel.autocast():
        assert not torch.is_autocast_enabled("cpu") and not torch.is_autocast_enabled("cuda")


def test_bf16_on_a_cpu_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="precision 'bf16' needs a CUDA device.*use precision: auto"):
        Accel.resolve(torch.device("cpu"), "bf16")


@pytest.mark.parametrize(("precision", "supported", "bf16"), [("auto", True, True), ("fp32", True, False),
                                                              ("auto", False, False)])
def test_cuda_gets_channels_last_and_bf16_where_supported(monkeypatch, precision, supported, bf16):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    accel = Accel.resolve(torch.device("cuda"), precision)
    assert (accel.bf16, accel.channels_last) == (bf16, True)


def test_precision_is_a_checked_setting_of_the_image_tasks():
    assert parse_config({"precision": "bf16"}).precision == "bf16"
    assert parse_config({"task": "temporal", "strategy": "time", "precision": "fp32"}).precision == "fp32"
    with pytest.raises(ValueError, match="precision"):
        parse_config({"precision": "fp16"})
