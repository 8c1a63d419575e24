"""Sweeps over positive/negative sampling strategies for contrastive self-supervised learning.

The Python API (:mod:`sweep.api`): ``sweep.load(name, storage)``, ``sweep.run(space, ...)``,
``sweep.list_sweeps(storage)``; the command line is ``sweep`` (:mod:`sweep.cli`). Names are imported on first use,
so the command line starts without loading pandas, Optuna or Ray.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

try:
    __version__ = metadata.version("contrastive-sweeps")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "unknown"

__all__ = ["Sweep", "__version__", "list_sweeps", "load", "run"]


def __getattr__(name: str) -> Any:
    if name in ("Sweep", "list_sweeps", "load", "run"):
        from sweep import api

        return getattr(api, name)
    raise AttributeError(f"module 'sweep' has no attribute {name!r}")
