"""Studies: one module each, an Optuna define-by-run function plus its fixed settings, registered by name.

Roles follow the tuning playbook: the strategy is the *scientific* parameter; ``lr`` and ``temperature`` are
*nuisance* parameters tuned under every strategy so the comparison is fair; the strategy's hardness knobs are
conditional on it; everything the function returns is *fixed*. A study only suggests and returns constants: no
computation belongs in it (Ray warns past 1 s, and it is re-run for every trial).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from search_spaces import audio_text_negatives, av_sampling, digits, mnist1d, stl10_hcl, temporal_context
from search_spaces._study import SCHEDULERS, Study, branches, describe_space, show_distribution
from trainables.errors import UserError, did_you_mean

SPACES: Mapping[str, Study] = {
    s.name: s
    for s in (
        mnist1d.STUDY,
        digits.STUDY,
        stl10_hcl.STUDY,
        audio_text_negatives.STUDY,
        av_sampling.STUDY,
        temporal_context.STUDY,
    )
}

__all__ = ["SCHEDULERS", "SPACES", "Study", "describe_space", "describe_study", "load_study"]


def load_study(spec: str) -> Study:
    """A registered study by name, or ``path/to/file.py:NAME`` for a user's own define-by-run function or Study.

    Every way the spec or the user's file can be wrong (an unknown name, a missing or non-Python file, a file that
    raises or calls ``sys.exit()`` while it is imported, no such function) raises :class:`UserError` in one line.
    """
    if spec in SPACES:
        return SPACES[spec]
    if ":" not in spec:
        raise UserError(
            f"unknown search space {spec!r}{did_you_mean(spec, SPACES)}; choose one of: {', '.join(SPACES)} "
            "(or give your own as path/to/file.py:function)"
        )
    path_str, _, func_name = spec.rpartition(":")
    path = Path(path_str).expanduser().resolve()
    if not path.is_file():
        raise UserError(
            f"search space file {path_str!r} not found; give an existing path/to/file.py:function"
        )
    # Registered under a stable module name so that pickled references to the function resolve on resume.
    module_name = f"user_space_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:  # not a .py file: importlib has no loader for it
        raise UserError(f"search space file {path} is not a Python file; give path/to/file.py:function")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except SystemExit as exc:  # a script's `sys.exit()` must not end the CLI as if it had finished
        sys.modules.pop(module_name, None)
        raise UserError(
            f"search space file {path} called sys.exit({exc.code!r}) while being imported; a space file must "
            "define its function (or Study), not exit"
        ) from None
    except Exception as exc:  # a user's file: report the error in one line, not a traceback
        sys.modules.pop(module_name, None)
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise UserError(
            f"could not import search space file {path}: {type(exc).__name__}: {detail}; fix the file"
        ) from None
    found = getattr(module, func_name, None)
    name = f"{path.stem}.{func_name}"
    if isinstance(found, Study):  # a whole study: its scheduler, sampler, grid and budget too
        return replace(found, name=name, description=found.description or f"user study {spec}")
    if not callable(found):
        raise UserError(f"{path} has no function or Study {func_name!r}; give path/to/file.py:function")
    return Study(name=name, description=f"user space {spec}", space=found)


def describe_study(spec: str) -> dict[str, Any]:
    """What `sweep spaces NAME` prints: the study's strategies with what it searches under each (ranges, scale,
    choices), its fixed settings, its default trials, budget, scheduler, rungs and metric. Nothing runs."""
    from sweep.ranking import asha_rungs
    from trainables.tasks import DEFAULT_TASK, get_task, parse_config

    study = load_study(spec)
    strategies, fixed = describe_space(study.space)
    task = get_task(fixed.get("task", DEFAULT_TASK))
    config = parse_config({**fixed, "strategy": strategies[0]})
    searched = branches(study.space)
    metric, mode = study.metric or task.metric, study.mode or task.mode
    rungs = asha_rungs(config.epochs) if study.scheduler in ("asha", "pooled_asha") else []
    out = {
        "name": study.name, "description": study.description, "task": task.name, "metric": metric, "mode": mode,
        "num_samples": study.num_samples, "epochs": config.epochs, "scheduler": study.scheduler, "rungs": rungs,
        "sampler": "grid" if study.grid else study.sampler, "fixed": fixed,
        "strategies": {s: {k: show_distribution(d) for k, d in searched[s].items()} for s in strategies},
        "preset_knobs": {s: {k: v for k, v in task.strategies[s].defaults.items() if k not in searched[s]}
                         for s in strategies if s in task.strategies},
    }
    lines = [
        f"{study.name}: {study.description}",
        f"task {task.name}; ranked by validation {metric} ({mode}); {study.num_samples} trials by default, "
        f"{config.epochs} epochs each at most; scheduler {study.scheduler}"
        + (f" (rungs at epochs {', '.join(map(str, rungs))})" if rungs else "") + f"; sampler {out['sampler']}",
        "fixed: " + ", ".join(f"{k}={v}" for k, v in fixed.items()),
        "searched under each strategy:",
    ]
    width = max(len(s) for s in strategies)
    for s in strategies:
        knobs = "; ".join(f"{k} {v}" for k, v in out["strategies"][s].items()) or "nothing"
        preset = ", ".join(f"{k}={v}" for k, v in out["preset_knobs"].get(s, {}).items())
        lines.append(f"  {s:<{width}}  {knobs}" + (f" (fixed by the preset: {preset})" if preset else ""))
    out["text"] = "\n".join(lines)
    return out
