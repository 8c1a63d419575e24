"""The thin Ray boundary: the one module of trainables/ that imports Ray.

It turns :func:`trainables.train.run_trial`'s per-epoch callback into ``tune.report`` with a checkpoint, and a
restored Tune checkpoint back into the state ``run_trial`` resumes from.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from ray import tune

from trainables.train import run_trial

STATE_FILE = "state.pt"


def load_state(directory: str | Path) -> dict[str, Any]:
    return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=False)


def trainable(config: dict[str, Any]) -> None:
    """Function trainable for ``tune.Tuner``: one trial, resumed from Tune's latest checkpoint when there is one."""
    ctx = tune.get_context()
    config = dict(config)
    if config.get("num_threads") is None:  # use the CPUs Ray reserved for this trial, no more
        cpus = ctx.get_trial_resources().required_resources.get("CPU", 1)
        config["num_threads"] = max(1, int(cpus))
    state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = load_state(d)
    # Stage checkpoints inside the trial directory, not in /tmp, so a killed trial leaves nothing behind elsewhere.
    staging = Path(ctx.get_trial_dir()) / ".staging"

    def report(metrics: dict[str, Any], trial_state: dict[str, Any]) -> None:
        stage = staging / f"epoch_{metrics['epoch']:05d}"
        stage.mkdir(parents=True, exist_ok=True)
        torch.save(trial_state, stage / STATE_FILE)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(stage)))
        shutil.rmtree(stage, ignore_errors=True)

    run_trial(config, report, state=state)
