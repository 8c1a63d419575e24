"""What a CUDA device gains from, and a CPU never sees: bf16 autocast and channels-last memory.

bf16 keeps fp32's exponent range, so it needs no loss scaling and a loss that is finite in fp32 stays finite; the
losses themselves still compute in fp32 (callers take ``z.float()`` outside :meth:`Accel.autocast`), because their
log-sum-exps are where the precision matters. Channels-last lets cuDNN pick tensor-core convolutions without
transposing every activation. On a CPU both are off and the trial runs exactly the fp32 code it always ran.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from trainables.errors import UserError

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class Accel:
    device: torch.device
    bf16: bool = False
    channels_last: bool = False

    @classmethod
    def resolve(cls, device: torch.device, precision: str = "auto") -> Accel:
        """``auto``: bf16 and channels-last on a CUDA device that supports bf16 (Ampere and later), else fp32."""
        if precision not in PRECISIONS:
            raise UserError(f"`precision` is {precision!r} but must be one of {', '.join(PRECISIONS)}")
        cuda = device.type == "cuda"
        supported = cuda and torch.cuda.is_bf16_supported()
        if precision == "bf16" and not supported:
            where = "this GPU" if cuda else "a CPU"
            raise UserError(f"precision 'bf16' needs a CUDA device with bf16 support, not {where}; "
                             "use precision: auto (bf16 where supported) or fp32")
        return cls(device, bf16=supported and precision != "fp32", channels_last=cuda)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if not self.bf16:
            yield
            return
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            yield

    def module(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def resident(self, x: torch.Tensor, share: float = 0.25) -> torch.Tensor:
        """``x`` on the device for the whole trial when that is a GPU it fits on (at most ``share`` of its free
        memory), so that batches are indexed and augmented there with no host-to-device copy per batch; else ``x``
        as it is (a CPU trial is untouched)."""
        if self.device.type != "cuda" or x.device == self.device:
            return x
        free, _ = torch.cuda.mem_get_info(self.device)
        return x.to(self.device) if x.numel() * x.element_size() <= share * free else x

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """A batch on the device, channels-last when that is the layout the convolutions want."""
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x
