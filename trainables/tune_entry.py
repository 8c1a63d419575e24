"""The thin Ray boundary: the one module of trainables/ that imports Ray.

It turns :func:`trainables.train.run_trial`'s per-epoch callback into ``tune.report`` with a checkpoint, and a
checkpoint back into the state ``run_trial`` resumes from. Each checkpoint holds the trial's state *and its whole
history so far* (``history.json``), written before the driver hears of the epoch: the newest checkpoint on disk is
therefore the trial's record of truth, whatever happened to the driver since.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import torch
from ray import tune

from trainables.files import HISTORY_FILE, STATE_FILE
from trainables.train import run_trial

# Keys the sweep adds to a trial's config; they say where the trial stands in the sweep, not how it trains.
TRIAL_KEY = "sweep_trial"  # the trial's number in the sweep (its Optuna trial number), stable across resumes
SESSION_KEY = "sweep_session"  # which driver session runs it (0 for `sweep run`, then 1, 2, ... per resume)
RESUME_KEY = "sweep_resume"  # a checkpoint from an earlier session to continue from, or None
SWEEP_KEYS = (TRIAL_KEY, SESSION_KEY, RESUME_KEY)


def load_checkpoint(directory: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The trial state and the history saved in one checkpoint directory."""
    d = Path(directory)
    state = torch.load(d / STATE_FILE, map_location="cpu", weights_only=False)
    history = json.loads((d / HISTORY_FILE).read_text()) if (d / HISTORY_FILE).exists() else []
    return state, history


def trainable(config: dict[str, Any]) -> None:
    """Function trainable for ``tune.Tuner``: one trial, resumed from the newest checkpoint there is.

    Ray's own checkpoint (a retry after a worker fault in this session) comes first; else the checkpoint an
    earlier driver session left on disk (``sweep_resume``); else the trial starts from scratch.
    """
    ctx = tune.get_context()
    config = dict(config)
    sweep = {k: config.pop(k, None) for k in SWEEP_KEYS}
    if config.get("num_threads") is None:  # use the CPUs Ray reserved for this trial, no more
        cpus = ctx.get_trial_resources().required_resources.get("CPU", 1)
        config["num_threads"] = max(1, int(cpus))
    state, history = None, []
    checkpoint = tune.get_checkpoint()
    if checkpoint is None and sweep[RESUME_KEY]:
        checkpoint = tune.Checkpoint(sweep[RESUME_KEY])
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state, history = load_checkpoint(d)
        history = [row for row in history if row["epoch"] <= state["epoch"]]
    # Stage checkpoints inside the trial directory, not in /tmp, so a killed trial leaves nothing behind elsewhere.
    staging = Path(ctx.get_trial_dir()) / ".staging"
    where = {
        "trial": sweep[TRIAL_KEY],
        "session": sweep[SESSION_KEY],
        "node_id": _node_id(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "num_threads": config["num_threads"],
    }

    def report(metrics: dict[str, Any], trial_state: dict[str, Any]) -> None:
        row = {**metrics, **where, "timestamp": time.time()}
        history.append(row)
        stage = staging / f"epoch_{metrics['epoch']:05d}"
        stage.mkdir(parents=True, exist_ok=True)
        torch.save(trial_state, stage / STATE_FILE)
        (stage / HISTORY_FILE).write_text(json.dumps(history))
        # Tune adds its own hostname, pid and timestamp to what it is given: hand it only ours.
        published = {**metrics, "trial": where["trial"], "session": where["session"]}
        tune.report(published, checkpoint=tune.Checkpoint.from_directory(str(stage)))
        shutil.rmtree(stage, ignore_errors=True)

    run_trial(config, report, state=state)


def _node_id() -> str:
    import ray

    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # not inside a Ray worker (a test calling the trainable directly)
        return ""
