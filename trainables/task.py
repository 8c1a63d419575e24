"""What a task is, in one record: everything the epoch loop, ``sweep train`` and the sweep driver need to know.

A task is one folder under ``trainables/tasks/`` whose ``__init__.py`` defines a :class:`Task`, plus one line in
the registry (``trainables/tasks/__init__.py``). The record is checked when it is made, so a task that names a
strategy part it does not implement, a score it does not report or a setting its config lacks fails at import.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from trainables.strategies import PARTS, Strategy


class TaskTrial(Protocol):
    """What the epoch loop needs from a built trial: one training epoch, scores on a split, the state to resume.

    A trial may define ``collapsed(metrics) -> bool`` (from the validation metrics); without it, the loop's rule
    on ``embedding_std`` applies (:func:`trainables.loop.collapsed`).
    """

    cfg: Any
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer

    def train_epoch(self, epoch: int) -> dict[str, Any]: ...  # loss, stop_reason ("" or why to stop), ...

    # "val": the metric and embedding_std; "test": the same scores (the loop prefixes them); ``final``: the trial's
    # last epoch, where costly scores go
    def evaluate(self, split: str, final: bool = True) -> dict[str, float]: ...


def lazy(target: str) -> Callable[..., Any]:
    """``"package.module:function"`` as a function that imports its module on the first call: a record names its
    trial builder without loading models and augmentations until a trial runs."""
    module, _, name = target.partition(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__qualname__ = call.__name__ = f"lazy({target})"
    return call


@dataclass(frozen=True)
class Figure:
    """A report figure shaped like the seed paper's: ``scores`` against the strategy knob ``knob``."""

    knob: str
    scores: tuple[str, ...]


@dataclass(frozen=True)
class Task:
    """One task: its config, strategies, trial and data check, and how a sweep ranks and reports it."""

    name: str
    doc: str
    config: type  # a trainables.config.TaskConfig subclass; its STRATEGIES are the task's presets
    build: Callable[[Any], TaskTrial]  # a validated config -> a trial ready to train
    check_data: Callable[[Any], None]  # fail fast, before a sweep starts, when the data is not there (loads nothing)
    metric: str  # the validation score a sweep ranks on
    mode: str  # "max" or "min"
    columns: tuple[str, ...]  # the scores a report tabulates per strategy, shaped like the seed paper's table
    shown: tuple[str, ...]  # the scores `sweep train` prints per epoch
    smoke: Mapping[str, Any]  # `--smoke-test` settings: seconds, not minutes
    parts: Mapping[str, tuple[str, ...]]  # the strategy parts' members the trial implements, per part
    figures: tuple[Figure, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise TypeError(f"task {self.name!r}: mode is {self.mode!r}, not max or min")
        if set(self.parts) != set(PARTS):
            raise TypeError(f"task {self.name!r}: parts must name every part ({', '.join(PARTS)})")
        for strategy in self.strategies.values():
            for part in PARTS:
                member = getattr(strategy, part)
                if member not in self.parts[part]:
                    raise TypeError(
                        f"strategy {strategy.name!r} of task {self.name!r} names the {part} {member!r}, which the "
                        f"task does not implement (its {part}s: {', '.join(self.parts[part])})"
                    )
        settings = set(self.settings)
        unknown = sorted(set(self.smoke) - settings)
        if unknown:
            raise TypeError(f"task {self.name!r}: smoke settings {unknown} are not settings of its config")
        if getattr(self.config, "TASK", None) != self.name:
            raise TypeError(f"task {self.name!r}: its config's TASK is {getattr(self.config, 'TASK', None)!r}")

    @property
    def strategies(self) -> Mapping[str, Strategy]:
        return self.config.STRATEGIES

    @property
    def settings(self) -> tuple[str, ...]:
        """Every general setting of the task's config (the strategy knobs aside)."""
        return tuple(f.name for f in dataclasses.fields(self.config) if f.name != "knobs")
