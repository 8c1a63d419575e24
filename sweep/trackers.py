"""Where a sweep's per-epoch scores go besides its own files: TensorBoard always, MLflow or W&B on request.

Every one of them gets the trial's own metrics under their plain names, at the trial's epoch, exactly as `sweep
train` writes them (:func:`trainables.loop.scalars`): never Ray's bookkeeping (``training_iteration``, ``pid``,
``time_this_iter_s``, ...) nor its ``ray/tune/`` prefix, so a retrain overlays its sweep in TensorBoard.

- TensorBoard: event files in each trial's directory (tensorboardX), Ray's own TensorBoard logger replaced;
- ``--tracker mlflow``: Ray Tune's MLflow callback, one MLflow run per trial with its config as params, into
  ``$MLFLOW_TRACKING_URI`` or else ``<sweep>/mlflow.db`` (a local SQLite store: no server, no network);
- ``--tracker wandb``: Ray Tune's W&B callback, offline (``wandb sync`` later) unless ``WANDB_API_KEY`` is set.
"""

from __future__ import annotations

import math
import os
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback
from ray.tune.result import AUTO_RESULT_KEYS

from sweep.confirm import CONFIRM_DIR
from sweep.storage import is_uri, join
from trainables.errors import UserError
from trainables.loop import scalars

TRACKERS = ("mlflow", "wandb")
_OWN = ("trial", "session")  # what the trainable adds to its metrics to say where it stands, not what it measured


def trial_metrics(result: dict[str, Any]) -> dict[str, float]:
    """A Tune result's own metrics, as `sweep train` records them: Ray's keys and the sweep's position left out, and
    the NaN a trial publishes for its metric at an epoch it did not score (`sweep train` has no such entry)."""
    return {k: v for k, v in scalars({k: v for k, v in result.items() if k not in _OWN and k not in AUTO_RESULT_KEYS})
            .items() if math.isfinite(v)}


class TensorBoard(TBXLoggerCallback):
    """Ray's TensorBoard logger with plain tags at the trial's epoch (Ray's: ``ray/tune/<metric>`` per iteration,
    among its bookkeeping)."""

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        if trial not in self._trial_writer:
            self.log_trial_start(trial)
        step = int(result.get("epoch") or result.get("training_iteration") or 0)
        writer = self._trial_writer[trial]
        for key, value in trial_metrics(result).items():
            writer.add_scalar(key, value, global_step=step)
        writer.flush()


class MLflow(MLflowLoggerCallback):
    """Ray's MLflow callback logging the trial's own metrics at its epoch."""

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        run_id = self._trial_runs[trial]
        step = int(result.get("epoch") or result.get("training_iteration") or 0)
        self.mlflow_util.log_metrics(run_id=run_id, metrics_to_log=trial_metrics(result), step=step)


def check_tracker(tracker: str | None) -> None:
    """A tracker that could not log, refused before anything is written (its package is not installed)."""
    if tracker is None:
        return
    if tracker not in TRACKERS:
        raise UserError(f"--tracker {tracker!r} is not one of {', '.join(TRACKERS)}")
    package = "mlflow-skinny" if tracker == "mlflow" else "wandb"
    try:
        __import__(tracker)
    except ImportError:
        raise UserError(f"--tracker {tracker} needs the {tracker} package, which this environment lacks; install "
                        f"it with `.venv/bin/uv pip install {package}`, or leave out --tracker") from None


def callbacks(exp: str, tracker: str | None) -> list[Any]:
    """Tune's loggers for a session of the sweep or of its race (``exp``: its directory): Ray's CSV and JSON (its
    result files), TensorBoard with plain tags, and the tracker asked for, under the sweep's name (the race's runs as
    ``<name>-race``, in the same store)."""
    out: list[Any] = [CSVLoggerCallback(), JsonLoggerCallback(), TensorBoard()]
    if tracker is None:
        return out
    head, _, query = exp.partition("?")
    parts = head.rstrip("/").rsplit("/", 2)
    if parts[-1] == CONFIRM_DIR:  # the race: the sweep's store, its own experiment
        name, exp = f"{parts[-2]}-race", head.rstrip("/").rsplit("/", 1)[0] + (f"?{query}" if query else "")
    else:
        name = parts[-1]
    if tracker == "mlflow":
        uri = os.environ.get("MLFLOW_TRACKING_URI") or (
            f"sqlite:///{join(exp, 'mlflow.db')}" if not is_uri(exp) else None)
        if uri is None:
            raise UserError("--tracker mlflow with a sweep in object storage needs MLFLOW_TRACKING_URI (a tracking "
                            "server, or sqlite:///path/mlflow.db on this machine)")
        out.append(MLflow(tracking_uri=uri, experiment_name=name, tags={"sweep": name}))
    elif tracker == "wandb":
        from ray.air.integrations.wandb import WandbLoggerCallback

        mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
        out.append(WandbLoggerCallback(project=os.environ.get("WANDB_PROJECT", "contrastive-sweeps"), group=name,
                                       mode=mode))
    return out
