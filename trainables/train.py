"""``sweep train``: one trial without Ray, its metrics to ``metrics.jsonl`` and TensorBoard, its state to
``checkpoint.pt``, each written atomically, so an interrupted run resumes where it stopped."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from trainables.errors import UserError
from trainables.files import write_atomic
from trainables.loop import run_trial, scalars
from trainables.tasks import build_trial, get_task, parse_config


def train(config: Mapping[str, Any], out_dir: str | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run one trial without Ray (``sweep train``): metrics to ``metrics.jsonl`` and TensorBoard, state to
    ``checkpoint.pt`` in ``out_dir``, each written atomically; a directory with a checkpoint is resumed."""
    from tensorboardX import SummaryWriter

    cfg = parse_config(config)
    if out_dir is None:
        return run_trial(build_trial(cfg), lambda m, s: log(_epoch_line(m, cfg.epochs, cfg.task)))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.pt"
    state = _read_checkpoint(ckpt) if ckpt.exists() else None
    if state is not None:
        if state["config"] != cfg.to_dict():
            raise UserError(f"{out} holds a checkpoint of a different config; use a new --out directory")
        log(f"resuming from {ckpt} (epoch {state['epoch']})")
    history_path = out / "metrics.jsonl"
    history = _read_history(history_path, state["epoch"] if state else 0) if history_path.exists() else []
    writer = SummaryWriter(str(out))

    def report(metrics: dict[str, Any], trial_state: dict[str, Any]) -> None:
        for key, value in scalars(metrics).items():
            writer.add_scalar(key, value, metrics["epoch"])
        writer.flush()
        history.append(json.dumps(metrics))
        write_atomic(ckpt, lambda f: torch.save(trial_state, f))
        write_atomic(history_path, ("\n".join(history) + "\n").encode())
        log(_epoch_line(metrics, cfg.epochs, cfg.task))

    try:
        return run_trial(build_trial(cfg), report, state=state)
    finally:
        writer.close()


def _read_checkpoint(path: Any) -> dict[str, Any]:
    """The state `sweep train` saved in ``--out``; a file that is not one is the user's to remove, in one line."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, AttributeError, ImportError) as err:
        detail = f"{type(err).__name__}: {str(err).splitlines()[0]}" if str(err) else type(err).__name__
        raise UserError(f"{path} is not a readable checkpoint ({detail}); remove it to start afresh, or use a new "
                        "--out directory") from err
    if not isinstance(state, dict) or not {"config", "epoch", "model", "optimizer", "rng"} <= set(state):
        raise UserError(f"{path} is not a checkpoint of `sweep train`; remove it to start afresh, or use a new --out "
                        "directory")
    return state


def _read_history(path: Any, upto: int) -> list[str]:
    """The lines of ``metrics.jsonl`` up to epoch ``upto`` (those after it are redone on resume)."""
    kept = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            epoch = json.loads(line)["epoch"]
        except (ValueError, TypeError, KeyError):
            raise UserError(f"{path} line {n} is not a metrics record of `sweep train`; remove the file (the "
                            "checkpoint keeps the trial), or use a new --out directory") from None
        if isinstance(epoch, (int, float)) and epoch <= upto:
            kept.append(line)
    return kept


def _epoch_line(m: Mapping[str, Any], epochs: int, task: str = "image") -> str:
    shown = get_task(task).shown
    keys = shown + tuple("test_" + k for k in shown)
    scores = "".join(f"  {k} {m[k]:.4f}" for k in keys if k in m)
    line = (
        f"epoch {m['epoch']:>3}/{epochs}  loss {m['loss']:.4f}{scores}  "
        f"({m['time_train_s']:.1f}s train, {m['time_eval_s']:.1f}s eval)"
    )
    return line + (f"  stopped: {m['stop_reason']}" if m.get("stop_reason") else "")
