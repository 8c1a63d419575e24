"""The thin Ray boundary: the one module of trainables/ that imports Ray.

It turns :func:`trainables.loop.run_trial`'s per-epoch callback into ``tune.report`` with a checkpoint, and a
checkpoint back into the state ``run_trial`` resumes from. Each checkpoint holds the trial's state *and its whole
history so far* (``history.json``), written before the driver hears of the epoch: the newest checkpoint on disk is
therefore the trial's record of truth, whatever happened to the driver since.

Where a checkpoint is staged before Ray copies it to storage matters. ``tune.get_context().get_trial_dir()`` is not
the trial's directory in storage: for a function trainable it is Ray's *driver staging* folder of the trial
(``<ray session>/artifacts/<ts>/<experiment>/driver_artifacts/<trial>``), and the driver's experiment-state save
copies the whole of ``driver_artifacts`` to the experiment directory in a background thread, with no exclusions.
A stage there is copied while it is written or just after it is deleted (a ``FileNotFoundError`` traceback from
``experiment_state.py``), and its copies pile up in the sweep directory. So each trial stages in a folder of its
own on the worker's local disk, outside every directory Ray syncs: :func:`staging_root`/<pid>/<trial id>/. The
trial removes it when it ends; what a killed worker leaves there is removed by the next trial that starts on that
host. Nothing in it is ever read back: a resume reads only the checkpoints Ray copied to storage.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from ray import tune

from trainables.files import HISTORY_FILE, STATE_FILE
from trainables.loop import run_trial
from trainables.task import Task
from trainables.tasks import DEFAULT_TASK, get_task

# Keys the sweep adds to a trial's config; they say where the trial stands in the sweep, not how it trains.
TRIAL_KEY = "sweep_trial"  # the trial's number in the sweep (its Optuna trial number), stable across resumes
SESSION_KEY = "sweep_session"  # which driver session runs it (0 for `sweep run`, then 1, 2, ... per resume)
RESUME_KEY = "sweep_resume"  # a checkpoint from an earlier session to continue from, or None
# The score the sweep ranks on: Tune refuses a result without the metric its scheduler and searcher watch, so an
# epoch where validation is not scored (``eval_every`` > 1) publishes it as NaN; the trial's own history leaves it out.
METRIC_KEY = "sweep_metric"
SWEEP_KEYS = (TRIAL_KEY, SESSION_KEY, RESUME_KEY, METRIC_KEY)

STAGING_PREFIX = "sweep-staging"  # <temp folder>/sweep-staging-<uid>/<host>/<pid>/<trial id>/epoch_NNNNN/


def load_checkpoint(directory: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The trial state and the history saved in one checkpoint directory."""
    d = Path(directory)
    state = torch.load(d / STATE_FILE, map_location="cpu", weights_only=False)
    history = json.loads((d / HISTORY_FILE).read_text()) if (d / HISTORY_FILE).exists() else []
    return state, history


def trainable(config: dict[str, Any], task: Task | None = None) -> None:
    """Function trainable for ``tune.Tuner``: one trial, resumed from the newest checkpoint there is.

    Ray's own checkpoint (a retry after a worker fault in this session) comes first; else the checkpoint an
    earlier driver session left on disk (``sweep_resume``); else the trial starts from scratch. ``task`` is the
    record the driver sent (a task it registered that this worker's registry may lack); without it, the registry's.
    """
    ctx = tune.get_context()
    config = dict(config)
    sweep = {k: config.pop(k, None) for k in SWEEP_KEYS}
    if config.get("num_threads") is None:  # use the CPUs Ray reserved for this trial, no more
        cpus = ctx.get_trial_resources().required_resources.get("CPU", 1)
        config["num_threads"] = max(1, int(cpus))
    staging = open_stage(ctx.get_trial_id() or "trial")
    try:
        _run(config, sweep, staging, task)
    finally:  # also on the SystemExit Ray raises in tune.report to stop a trial
        close_stage(staging)


def _run(config: dict[str, Any], sweep: dict[str, Any], staging: Path, task: Task | None) -> None:
    state, history = None, []
    checkpoint = tune.get_checkpoint()
    if checkpoint is None and sweep[RESUME_KEY]:
        checkpoint = tune.Checkpoint(sweep[RESUME_KEY])
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state, history = load_checkpoint(d)
        history = [row for row in history if row["epoch"] <= state["epoch"]]
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
        if sweep[METRIC_KEY] and sweep[METRIC_KEY] not in published:
            published[sweep[METRIC_KEY]] = float("nan")
        # Ray copies the stage to <trial dir in storage>/checkpoint_NNNNNN (uploads it, for a URI) before this returns.
        tune.report(published, checkpoint=tune.Checkpoint.from_directory(str(stage)))
        shutil.rmtree(stage, ignore_errors=True)

    record = task if task is not None else get_task(config.get("task", DEFAULT_TASK))
    run_trial(record.build(record.config.from_dict(config)), report, state=state)


# --- checkpoint staging on the worker's local disk ----------------------------------------------------------------


def staging_root() -> Path:
    """Where this user's trial workers on this host stage checkpoints: ``<temp>/sweep-staging-<uid>/<host>``.

    Under the worker's temporary folder (``TMPDIR``), never under Ray's session folder or the sweep's storage: no
    sync of Ray's walks it. The per-user folder is private (0700); one another user made, or a link, is refused.
    """
    user = _private_dir(Path(tempfile.gettempdir()) / f"{STAGING_PREFIX}-{_uid()}")
    host = user / (socket.gethostname().replace(os.sep, "_") or "host")
    host.mkdir(exist_ok=True)
    return host


def open_stage(trial_id: str) -> Path:
    """A fresh, empty staging folder for this trial in this worker process, after clearing what dead ones left."""
    root = staging_root()
    remove_stale_stages(root)  # this process's own earlier stages too: it runs one trial at a time
    stage = root / str(os.getpid()) / trial_id
    stage.mkdir(parents=True)
    return stage


def close_stage(stage: Path) -> None:
    """Delete a trial's staging folder, and its process's folder once empty."""
    shutil.rmtree(stage, ignore_errors=True)
    try:
        stage.parent.rmdir()
    except OSError:
        pass


def remove_stale_stages(root: Path | None = None) -> list[Path]:
    """Delete the staging folders of worker processes that are gone (a SIGKILL, or a worker Ray ended while its
    trial sat in ``tune.report``), and this process's own; return what was removed. A live process's are kept."""
    root = staging_root() if root is None else root
    removed = []
    try:
        entries = list(root.iterdir())
    except FileNotFoundError:
        return removed
    for entry in entries:
        try:
            pid = int(entry.name)
        except ValueError:
            continue
        if pid == os.getpid() or not _alive(pid):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    if pid <= 0:  # os.kill(0, ...) would signal our own process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, someone else's
        return True
    return True


def _uid() -> str:
    getuid = getattr(os, "getuid", None)
    return str(getuid()) if getuid else os.environ.get("USERNAME", "user")


def _private_dir(path: Path) -> Path:
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    owner = getattr(os, "getuid", lambda: info.st_uid)()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != owner:
        raise RuntimeError(f"checkpoint staging folder {path} is not a folder of this user's; remove it")
    return path


def _node_id() -> str:
    import ray

    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # not inside a Ray worker (a test calling the trainable directly)
        return ""
