"""What every task's trial configuration shares: every default in one place, every value checked before any
compute is spent.

A config arrives as a flat dict (from a search space, a YAML/JSON file, or a resumed checkpoint). Strategy knobs
(``tau_plus``, ``beta``, ``sp_ratio``, ...) sit at the top level beside the general settings, spelled as in
:data:`trainables.strategies.KNOBS`. An unknown key, an unknown strategy, a knob that the chosen strategy does not
have or a value out of range (NaN or an infinity included, a fraction for an integer setting, a seed outside
[0, 2**32 - 1]) raises :class:`~trainables.errors.UserError` naming the key and what it accepts: a misspelt knob must
fail the trial at once, not run a default configuration for hours.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

from trainables.accel import PRECISIONS
from trainables.errors import UserError, did_you_mean, quoted
from trainables.strategies import KNOBS, Knob, Strategy, get_strategy

SEED_MAX = 2**32 - 1
MAX_THREADS = 1024  # torch.set_num_threads takes a C int; far more threads than cores only thrashes
DEVICES = ("auto", "cpu", "cuda")

# The general settings' rules, checked by the same code as the strategy knobs.
COMMON: Mapping[str, Knob] = MappingProxyType(
    {
        "lr": Knob("setting", "Adam learning rate", low=0.0, low_open=True, high=10.0),
        "weight_decay": Knob("setting", "Adam weight decay", low=0.0),
        "temperature": Knob("setting", "softmax temperature", low=0.0, low_open=True, high=100.0),
        "batch_size": Knob("setting", "items per batch", low=2, integer=True),
        "epochs": Knob("setting", "full budget", low=1, integer=True),
        # numpy's legacy seed (np.random.seed, which seed_everything calls) takes 32 bits
        "seed": Knob("setting", "seeds data split, init and every epoch", low=0, high=SEED_MAX, integer=True),
        "limit": Knob("setting", "items kept per split", low=10, integer=True, optional=True),
        "eval_every": Knob("setting", "epochs between validation scores", low=1, integer=True),
        "evaluate_test": Knob("setting", "score the test split at the last epoch", choices=(False, True)),
        "device": Knob("setting", "where the trial runs", choices=DEVICES),
        "num_threads": Knob("setting", "torch CPU threads", low=1, high=MAX_THREADS, integer=True, optional=True),
    }
)
# The image encoders' compute precision: `auto` is bf16 (with channels-last) on a CUDA device that has it, fp32 on a
# CPU; see trainables.accel. The audio tasks' GRU and 1-D convolutions stay in fp32.
PRECISION = Knob("setting", "compute precision on CUDA (a CPU computes fp32)", choices=PRECISIONS)


class TaskConfig:
    """What every task's config shares: parsing a flat dict, the strategy's parts and knobs, the flat form back."""

    TASK: ClassVar[str]
    SETTINGS: ClassVar[Mapping[str, Knob]]
    STRATEGIES: ClassVar[Mapping[str, Strategy]]
    PATHS: ClassVar[tuple[str, ...]] = ("data_root",)

    strategy: str
    knobs: Mapping[str, Any]

    @property
    def strategy_spec(self) -> Strategy:
        return get_strategy(self.strategy, self.STRATEGIES, self.TASK)

    @property
    def loss_knobs(self) -> dict[str, Any]:
        return {k: self.knobs[k] for k in self.strategy_spec.loss_knobs}

    def part_knobs(self, part: str) -> dict[str, Any]:
        return {k: v for k, v in self.knobs.items() if KNOBS[k].part == part}

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> Any:
        """Validate a flat config dict; raise UserError naming the first offending key."""
        if not isinstance(config, Mapping):
            raise UserError(f"a trial config must be a mapping of settings (key: value), not {type(config).__name__}")
        general = {f.name for f in dataclasses.fields(cls)} - {"knobs"}
        unknown = [k for k in config if k not in general and k not in KNOBS]
        if unknown:
            raise UserError(
                f"unknown config key `{unknown[0]}` for task {cls.TASK!r}"
                f"{did_you_mean(unknown[0], [*general, *KNOBS])}; valid keys are the settings "
                f"({', '.join(sorted(general))}) and the strategy knobs ({', '.join(KNOBS)})"
            )
        strategy = get_strategy(config.get("strategy", cls.strategy), cls.STRATEGIES, cls.TASK)
        knobs = strategy.resolve({k: v for k, v in config.items() if k in KNOBS})
        _check_conditional_knobs(strategy, config, knobs)
        values = {k: v for k, v in config.items() if k in general}
        for key in cls.PATHS:
            if values.get(key) is not None and not isinstance(values[key], str):
                raise UserError(f"`{key}` is {quoted(values[key])} but must be a path (a string), or null (not set)")
        checked = {k: cls.SETTINGS[k].check(k, x) if k in cls.SETTINGS else x for k, x in values.items()}
        return cls(**checked, knobs=MappingProxyType(knobs))

    def to_dict(self) -> dict[str, Any]:
        """The flat form `from_dict` takes: settings that differ from nothing are all written out."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "knobs"}  # type: ignore
        out.update((k, v) for k, v in self.knobs.items() if k not in _inactive(self.knobs))
        return out


# Knobs that act only under one label source; under another they would silently do nothing.
_LABEL_SOURCE_OF = {"label_accuracy": "noisy", "n_clusters": "pseudo"}


def _inactive(knobs: Mapping[str, Any]) -> set[str]:
    source = knobs.get("label_source")
    return {k for k, needed in _LABEL_SOURCE_OF.items() if k in knobs and source != needed}


def _check_conditional_knobs(strategy: Strategy, given: Mapping[str, Any], knobs: Mapping[str, Any]) -> None:
    for key in _inactive(knobs) & set(given):
        raise UserError(
            f"`{key}` applies only with label_source '{_LABEL_SOURCE_OF[key]}' (strategy "
            f"'{strategy.name}' uses '{knobs['label_source']}'); remove it or set label_source: "
            f"{_LABEL_SOURCE_OF[key]}"
        )
