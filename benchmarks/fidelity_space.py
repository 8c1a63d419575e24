"""Studies for ``ranking_fidelity.py``: the default study's space (every two-view strategy on MNIST-1D, lr and
temperature tuned under each, the hardness knobs conditional), run three other ways."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # loaded by `sweep run --space file.py:NAME`, and by the benchmark script
    sys.path.insert(0, str(ROOT))

from search_spaces.mnist1d import STUDY  # noqa: E402

# The reference: every trial to the full budget, TPE per strategy (12 trials each by the benchmark's --num-samples).
# Every epoch scored: the rank agreement at epoch k (where ASHA's rung can go) is read from these trials.
REFERENCE = replace(STUDY, name="reference", description="reference: TPE + FIFO, every trial to the full budget",
                    scheduler="fifo", eval_at_rungs=False)
# Contender (b): random search, every trial to the full budget.
RANDOM_FIFO = replace(STUDY, name="random_fifo", description="random search + FIFO", scheduler="fifo",
                      sampler="random")

SMOKE_STRATEGIES = ("infonce", "soft_positive", "hard_negative")


def smoke_space(trial):
    """The default space limited to three strategies: the stock contender's space under ``--smoke``."""
    from search_spaces._study import suggest_knobs
    from search_spaces.digits import RANGES, SWEPT
    from search_spaces.mnist1d import FIXED

    strategy = trial.suggest_categorical("strategy", list(SMOKE_STRATEGIES))
    trial.suggest_float("lr", 3e-4, 1e-2, log=True)
    trial.suggest_float("temperature", 0.1, 1.0, log=True)
    suggest_knobs(trial, strategy, SWEPT, RANGES)
    return dict(FIXED)
