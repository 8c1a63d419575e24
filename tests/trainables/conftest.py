"""Fixtures of the trainables tests."""

from __future__ import annotations

import io

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread is fastest, and spares the OpenMP spin-waits of a busy machine (30x here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_collecting(config, state=None):
    """Run a trial without Ray; return its per-epoch metrics and (copied) states, persisted at once as every real
    reporter does, since the state it is handed is live."""
    from trainables.loop import run_trial
    from trainables.tasks import build_trial

    rows, states = [], []

    def report(metrics, trial_state):
        buf = io.BytesIO()
        torch.save(trial_state, buf)
        buf.seek(0)
        rows.append(metrics)
        states.append(torch.load(buf, weights_only=False))

    run_trial(build_trial(config), report, state=state)
    return rows, states


@pytest.fixture
def collect():
    return run_collecting
