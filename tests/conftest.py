"""Shared fixtures. One local Ray per test session, started only by the tests that need it."""

from __future__ import annotations

import logging
import os

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray for the whole session: 2 CPUs, loopback only, no dashboard. Never started per test."""
    import ray

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    ray.init(num_cpus=2, include_dashboard=False, dashboard_host="127.0.0.1", logging_level=logging.WARNING,
             log_to_driver=False)
    yield ray
    ray.shutdown()
