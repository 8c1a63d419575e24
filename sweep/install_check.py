"""`python -m sweep.install_check`: load every native library the project uses, or name the one that does not load.

A wheel built against another torch imports fine and fails only when its shared library is first loaded (torchaudio
2.11.1 beside torch 2.11.0: ``undefined symbol``), so each check exercises the library, not just the import.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def _torch() -> None:
    import torch

    torch.nn.functional.conv1d(torch.ones(1, 1, 8), torch.ones(1, 1, 3)).sum().item()


def _torchvision() -> None:
    import torch
    import torchvision

    torchvision.ops.nms(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([1.0]), 0.5)  # the C++ ops library


def _torchaudio() -> None:
    import torch
    import torchaudio
    import torchaudio._extension as ext  # loads _torchaudio and libtorchaudio, raising if a symbol is missing

    if not ext._IS_TORCHAUDIO_EXT_AVAILABLE:
        raise ImportError("its native extension _torchaudio is missing")
    torchaudio.transforms.MelSpectrogram(sample_rate=8000, n_fft=64, n_mels=8)(torch.zeros(1, 800))


def _soundfile() -> None:
    import io

    import numpy as np
    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, np.zeros(16, dtype="float32"), 8000, format="WAV")  # libsndfile, through cffi
    buf.seek(0)
    soundfile.read(buf)


def _pyarrow() -> None:
    import io

    import pyarrow as pa
    import pyarrow.fs  # noqa: F401 (the filesystems behind s3:// storage)
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({"x": [1, 2]}), buf)
    buf.seek(0)
    pq.read_table(buf)


def _ray() -> None:
    import ray._raylet  # noqa: F401 (Ray's core, a native extension)


CHECKS: dict[str, Callable[[], None]] = {
    "torch": _torch,
    "torchvision": _torchvision,
    "torchaudio": _torchaudio,
    "soundfile": _soundfile,
    "pyarrow": _pyarrow,
    "ray": _ray,
}


def main() -> int:
    failed = 0
    for name, check in CHECKS.items():
        try:
            check()
        except Exception as exc:  # whatever a broken wheel raises: ImportError, OSError, RuntimeError
            failed += 1
            cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"install check: {name} does not load ({cause}); reinstall the locked environment with "
                  "`make clean setup`", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
