"""The trial configuration: every default in one place, every value checked before any compute is spent.

A config arrives as a flat dict (from a search space, a YAML/JSON file, or a resumed checkpoint). Strategy knobs
(``tau_plus``, ``beta``, ``sp_ratio``, ...) sit at the top level beside the general settings, spelled as in
:data:`trainables.strategies.KNOBS`. An unknown key, an unknown strategy, a knob that the chosen strategy does not
have or a value out of range raises ``ValueError`` naming the key: a misspelt knob must fail the trial at once, not
run a default configuration for hours.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from trainables.data import DATASETS
from trainables.models import ENCODERS
from trainables.strategies import KNOBS, Strategy, get_strategy

TASKS = ("image",)
DEVICES = ("auto", "cpu", "cuda")

# The score a sweep ranks on, per task, and its direction. The validation split is used; test is for finalists.
METRIC = "linear_acc"
MODE = "max"


@dataclass(frozen=True)
class TrialConfig:
    """One trial of the image task. Field defaults are the project's defaults; search spaces override them."""

    strategy: str = "infonce"
    task: str = "image"
    # optimisation (Adam as in HCL/DCL)
    lr: float = 1e-3
    weight_decay: float = 1e-6
    temperature: float = 0.5
    batch_size: int = 128
    epochs: int = 20
    seed: int = 0
    # data
    dataset: str = "digits"
    data_root: str | None = None
    image_size: int | None = None
    limit: int | None = None  # keep only the first `limit` items of each split (smoke tests)
    # model
    encoder: str = "small_resnet"
    width: int = 32
    proj_hidden_dim: int = 512
    proj_dim: int = 128
    # evaluation on the validation split, every epoch (the epoch is ASHA's time unit)
    probe_epochs: int = 100
    knn_k: int = 200
    # execution
    device: str = "auto"
    num_threads: int | None = None
    # strategy knobs, resolved against the strategy's preset defaults (read-only)
    knobs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def strategy_spec(self) -> Strategy:
        return get_strategy(self.strategy)

    @property
    def loss_knobs(self) -> dict[str, Any]:
        return {k: self.knobs[k] for k in self.strategy_spec.loss_knobs}

    def part_knobs(self, part: str) -> dict[str, Any]:
        return {k: v for k, v in self.knobs.items() if KNOBS[k].part == part}

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> TrialConfig:
        """Validate a flat config dict; raise ValueError naming the first offending key."""
        if not isinstance(config, Mapping):
            raise ValueError(f"a trial config must be a mapping of settings, not {type(config).__name__}")
        general = {f.name for f in dataclasses.fields(cls)} - {"knobs"}
        unknown = [k for k in config if k not in general and k not in KNOBS]
        if unknown:
            raise ValueError(
                f"unknown config key `{unknown[0]}`; valid keys are the settings "
                f"({', '.join(sorted(general))}) and the strategy knobs ({', '.join(KNOBS)})"
            )
        strategy = get_strategy(config.get("strategy", cls.strategy))
        knobs = strategy.resolve({k: v for k, v in config.items() if k in KNOBS})
        _check_conditional_knobs(strategy, config, knobs)
        values = {k: v for k, v in config.items() if k in general}
        return cls(**_check_general(values), knobs=MappingProxyType(knobs))

    def to_dict(self) -> dict[str, Any]:
        """The flat form `from_dict` takes: settings that differ from nothing are all written out."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "knobs"}
        out.update((k, v) for k, v in self.knobs.items() if k not in _inactive(self.knobs))
        return out


# Knobs that act only under one label source; under another they would silently do nothing.
_LABEL_SOURCE_OF = {"label_accuracy": "noisy", "n_clusters": "pseudo"}


def _inactive(knobs: Mapping[str, Any]) -> set[str]:
    source = knobs.get("label_source")
    return {k for k, needed in _LABEL_SOURCE_OF.items() if k in knobs and source != needed}


def _check_conditional_knobs(strategy: Strategy, given: Mapping[str, Any], knobs: Mapping[str, Any]) -> None:
    for key in _inactive(knobs) & set(given):
        raise ValueError(
            f"`{key}` applies only with label_source '{_LABEL_SOURCE_OF[key]}' (strategy "
            f"'{strategy.name}' uses '{knobs['label_source']}')"
        )


def _number(
    key: str,
    value: Any,
    *,
    integer: bool = False,
    low: float | None = None,
    low_open: bool = False,
    high: float | None = None,
    optional: bool = False,
) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value:
        raise ValueError(f"`{key}` is {value!r} but must be a{'n integer' if integer else ' number'}")
    if integer:
        if int(value) != value:
            raise ValueError(f"`{key}` is {value!r} but must be an integer")
        value = int(value)
    else:
        value = float(value)
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"`{key}` is {value} but must be {'>' if low_open else '>='} {low}")
    if high is not None and value > high:
        raise ValueError(f"`{key}` is {value} but must be <= {high}")
    return value


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"`{key}` is {value!r} but must be one of {', '.join(choices)}")
    return value


def _check_general(v: dict[str, Any]) -> dict[str, Any]:
    checks = {
        "task": lambda k, x: _choice(k, x, TASKS),
        "lr": lambda k, x: _number(k, x, low=0.0, low_open=True, high=10.0),
        "weight_decay": lambda k, x: _number(k, x, low=0.0),
        "temperature": lambda k, x: _number(k, x, low=0.0, low_open=True, high=100.0),
        "batch_size": lambda k, x: _number(k, x, integer=True, low=2),
        "epochs": lambda k, x: _number(k, x, integer=True, low=1),
        "seed": lambda k, x: _number(k, x, integer=True, low=0),
        "dataset": lambda k, x: _choice(k, x, DATASETS),
        "data_root": lambda k, x: x if x is None or isinstance(x, str) else _choice(k, x, ("a path",)),
        "image_size": lambda k, x: _number(k, x, integer=True, low=4, optional=True),
        "limit": lambda k, x: _number(k, x, integer=True, low=10, optional=True),
        "encoder": lambda k, x: _choice(k, x, ENCODERS),
        "width": lambda k, x: _number(k, x, integer=True, low=1),
        "proj_hidden_dim": lambda k, x: _number(k, x, integer=True, low=1),
        "proj_dim": lambda k, x: _number(k, x, integer=True, low=2),
        "probe_epochs": lambda k, x: _number(k, x, integer=True, low=1),
        "knn_k": lambda k, x: _number(k, x, integer=True, low=1),
        "device": lambda k, x: _choice(k, x, DEVICES),
        "num_threads": lambda k, x: _number(k, x, integer=True, low=1, optional=True),
    }
    return {k: checks[k](k, x) if k in checks else x for k, x in v.items()}
