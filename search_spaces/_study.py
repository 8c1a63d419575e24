"""The Study record and the helpers every study module shares."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

from trainables.errors import UserError

SpaceFn = Callable[[optuna.Trial], "dict[str, Any] | None"]
# "asha": successive halving on the epoch within each strategy; "pooled_asha": Ray's ASHA over all trials at once;
# "fifo": every trial to the full budget (sweep.scheduling)
SCHEDULERS = ("asha", "pooled_asha", "fifo")


@dataclass(frozen=True)
class Study:
    """A named study: its define-by-run space and how the sweep should run it."""

    name: str
    description: str
    space: SpaceFn
    metric: str | None = None  # None: the task's own (its Task record's)
    mode: str | None = None
    num_samples: int = 20  # default trial budget of `sweep run`
    scheduler: str = "asha"  # one of SCHEDULERS
    grid: Mapping[str, tuple[Any, ...]] | None = field(default=None)  # exhaustive grid instead of TPE
    sampler: str = "tpe"  # or "random": random search, the baseline (sweep.study.make_sampler); a grid overrides it
    # Score validation only where the scheduler compares trials (ASHA's rungs) and at the last epoch, unless the
    # space or `--set eval_every` says otherwise: a third or more of a small trial's time, but curves get fewer points.
    eval_at_rungs: bool = False
    # Resources of one trial unless the command line says otherwise (None: 1 CPU; a whole GPU where there is one).
    # A fraction of a GPU packs trials of a small model onto one device.
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None


def describe_space(space: SpaceFn) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The strategy choices and the fixed settings of a define-by-run function, read by running it once.

    A user's function that raises (or calls ``sys.exit()``) is a :class:`UserError` naming the function and the
    exception, in one line; a registered space of this package that raises is a bug, so its exception goes through.
    """
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    try:
        fixed = space(trial)
    except UserError:
        raise
    except (Exception, SystemExit) as exc:
        if _registered(space):
            raise
        detail = (str(exc).splitlines() or [""])[0]
        raise UserError(
            f"search space {_space_name(space)!r} raised {type(exc).__name__}" + (f": {detail}" if detail else "")
            + "; fix the function"
        ) from exc
    fixed = fixed or {}
    if not isinstance(fixed, dict):
        raise UserError(
            f"a search space must return a dict of fixed settings or None, not {type(fixed).__name__}; fix the "
            "function's return value"
        )
    dist = trial.distributions.get("strategy")
    if not isinstance(dist, optuna.distributions.CategoricalDistribution):
        raise UserError(
            "a search space must suggest `strategy` with trial.suggest_categorical('strategy', [...]); add it to "
            "the function"
        )
    return tuple(dist.choices), dict(fixed)


def _registered(space: SpaceFn) -> bool:
    """Whether ``space`` is one of this package's own studies (a user's file is imported as ``user_space_*``)."""
    module = getattr(space, "__module__", None) or ""
    return module == "search_spaces" or module.startswith("search_spaces.")


def _space_name(space: SpaceFn) -> str:
    """``file.function`` as :func:`search_spaces.load_study` names a user's space, else the function's own name."""
    module = getattr(space, "__module__", None) or ""
    name = getattr(space, "__qualname__", None) or getattr(space, "__name__", None) or type(space).__name__
    return f"{module.removeprefix('user_space_')}.{name}" if module.startswith("user_space_") else name


def suggest_knobs(
    trial: optuna.Trial, strategy: str, swept: Mapping[str, tuple[str, ...]], ranges: Mapping[str, tuple]
) -> None:
    """Suggest the hardness knobs that this study sweeps under ``strategy``, each with one range in every branch."""
    for knob in swept.get(strategy, ()):
        kind, *args = ranges[knob]
        if kind == "float":
            trial.suggest_float(knob, *args)
        elif kind == "log":
            trial.suggest_float(knob, *args, log=True)
        elif kind == "int":
            trial.suggest_int(knob, *args)
        else:
            trial.suggest_categorical(knob, args[0])


def branches(space: SpaceFn) -> dict[str, dict[str, optuna.distributions.BaseDistribution]]:
    """Per strategy, what the space searches under it: each parameter's distribution (ranges, log scale, choices)."""
    strategies, _ = describe_space(space)
    out = {}
    for strategy in strategies:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        study.enqueue_trial({"strategy": strategy})
        trial = study.ask()
        space(trial)
        out[strategy] = {k: v for k, v in trial.distributions.items() if k != "strategy"}
    return out


def show_distribution(dist: optuna.distributions.BaseDistribution) -> str:
    """``0.0003 .. 0.01, log`` / ``one of band, nearest`` / ``1 .. 8``."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return "one of " + ", ".join(map(str, dist.choices))
    low, high = getattr(dist, "low", "?"), getattr(dist, "high", "?")
    return f"{low:g} .. {high:g}" + (", log" if getattr(dist, "log", False) else "")
