"""Shared fixtures. One local Ray per test session, started only by the tests that need it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# tests/ holds folders named like the packages (tests/sweep, tests/search_spaces, tests/trainables). pytest puts
# tests/ on sys.path, where each would be a namespace package hiding the real one (the editable install's finder
# comes after sys.path): `from search_spaces import SPACES` then fails under `.venv/bin/pytest`. A regular package
# anywhere on sys.path wins over a namespace one, so the repository root on sys.path restores the real packages.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.append(_ROOT)

# Read by Ray when it is first imported (collection imports it): a local Ray binds to 127.0.0.1 only.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")


@pytest.fixture(autouse=True, scope="session")
def _quiet_optuna():
    """As the CLI does: no INFO line each time a test opens a sweep's study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray for the whole session: 2 CPUs, loopback only, no dashboard. Never started per test."""
    import ray

    from sweep.ray_start import init_ray

    init_ray(None, dashboard=False, num_cpus=2)  # the sweep's own start-up path
    yield ray
    ray.shutdown()
