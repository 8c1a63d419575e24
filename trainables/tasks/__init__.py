"""The task registry: one explicit line per task, read by ``trainables`` and ``sweep`` alike.

A new task is one folder here (its ``__init__.py`` defines a :class:`~trainables.task.Task`) plus one line below.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainables.errors import UserError, quoted
from trainables.task import Task
from trainables.tasks import audio_text, audio_visual, image, signal, temporal

TASKS: dict[str, Task] = {
    t.name: t for t in (image.TASK, signal.TASK, audio_text.TASK, audio_visual.TASK, temporal.TASK)
}
DEFAULT_TASK = "image"  # a config without `task` is the image task's


def get_task(name: Any) -> Task:
    """The registered task ``name``, or UserError listing the tasks."""
    if not isinstance(name, str) or name not in TASKS:  # a list or a mapping is not hashable
        raise UserError(f"`task` is {quoted(name)} but must be one of {', '.join(TASKS)}")
    return TASKS[name]


def parse_config(config: Mapping[str, Any]) -> Any:
    """The config of the task that ``config['task']`` names (image when absent), validated."""
    if not isinstance(config, Mapping):
        raise UserError(f"a trial config must be a mapping of settings (key: value), not {type(config).__name__}")
    return get_task(config.get("task", DEFAULT_TASK)).config.from_dict(config)


def build_trial(config: Mapping[str, Any] | Any) -> Any:
    """A trial ready to train from a config dict or a validated config."""
    cfg = parse_config(config) if isinstance(config, Mapping) else config
    return get_task(cfg.task).build(cfg)
