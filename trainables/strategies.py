"""Named sampling strategies as presets of four independent parts.

Every method this project sweeps is a choice of

- a *positive constructor* (data): which item supplies the second view of anchor i;
- a *batch sampler* (data): which items share a batch, hence which negatives exist;
- a *negative weighting* (loss): how the in-batch negatives enter the softmax;
- a *loss family*: ``softmax`` (NT-Xent / InfoNCE) or ``hinge`` (bidirectional margin triplet, Xie et al.).

A strategy fixes the parts and gives default values to their knobs; the knobs stay free, so a search space can
sweep ``tau_plus`` or ``sp_ratio`` under any strategy that has them. The registry key, the config value and the CLI
choice are the same string everywhere. Each task has its own presets (its Task record's ``strategies``):
``infonce`` is the same idea in the image task (two views) and in the audio-text task (a clip and its caption), so it
is the same name.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from trainables.errors import UserError, did_you_mean, quoted

INT_MAX = 2**63 - 1  # the largest integer torch and numpy hold (int64)


@dataclass(frozen=True)
class Knob:
    """One checked value: a strategy knob (its part, type and range) or, with part "setting", a trial setting."""

    part: str  # "positive" | "sampler" | "weighting" | "setting"
    doc: str
    low: float | None = None  # numeric range, inclusive unless the *_open flag says otherwise
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] | None = None
    integer: bool = False
    optional: bool = False  # None is allowed and means "not set"

    def check(self, name: str, value: Any) -> Any:
        """Return ``value`` coerced to the knob's type, or raise UserError naming the knob and the allowed values.

        A number must be finite (NaN and infinities are refused whatever the range), an integer knob's value a whole
        number; bool is not a number here.
        """
        if value is None and self.optional:
            return None
        if self.choices is not None:
            # the type first: 1 is not True, and a numpy array's `==` has no truth value
            if not any(type(value) is type(c) and value == c for c in self.choices):
                raise UserError(f"`{name}` is {quoted(value)} but must be {self.rule()}")
            return value
        if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy scalars too
            raise UserError(f"`{name}` is {quoted(value)} but must be {self.rule()}")
        if not isinstance(value, numbers.Integral) and not math.isfinite(value):  # an int is always finite
            raise UserError(f"`{name}` is {quoted(value)} but must be {self.rule(finite=True)}")
        if self.integer:
            if int(value) != value:
                raise UserError(f"`{name}` is {quoted(value)} but must be {self.rule()}")
            value = int(value)
            if self.high is None and value > INT_MAX:  # torch and numpy take int64; beyond it is a typo anyway
                raise UserError(f"`{name}` is {quoted(value)} but must be at most 2**63 - 1 ({self.rule()})")
        else:
            try:
                value = float(value)
            except OverflowError:  # an integer beyond float's range
                raise UserError(f"`{name}` is {quoted(value)} but must be {self.rule()}") from None
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            raise UserError(f"`{name}` is {quoted(value)} but must be {self.rule()}")
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            raise UserError(f"`{name}` is {quoted(value)} but must be {self.rule()}")
        return value

    def rule(self, finite: bool = False) -> str:
        """What the knob accepts, as the end of "must be ...": ``an integer >= 2``, ``a number > 0 and <= 10``."""
        if self.choices is not None:
            rule = f"one of {', '.join(str(c).lower() if isinstance(c, bool) else str(c) for c in self.choices)}"
        else:
            bounds = []
            if self.low is not None:
                bounds.append(f"{'>' if self.low_open else '>='} {_number(self.low)}")
            if self.high is not None:
                bounds.append(f"{'<' if self.high_open else '<='} {_number(self.high)}")
            article = "a finite " if finite else "an " if self.integer else "a "
            kind = article + ("integer" if self.integer else "number")
            rule = kind + (" " + " and ".join(bounds) if bounds else "")
        return rule + (", or null (not set)" if self.optional else "")


def _number(x: float) -> str:
    """A bound as a user writes it: 2, 0.5, 4294967295 (not 2.0 or 4.29e+09)."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


# Every knob of every part, with its one spelling. Ranges are what the formulas allow, not what is sensible.
KNOBS: Mapping[str, Knob] = MappingProxyType(
    {
        "tau_plus": Knob(
            "weighting",
            "class-prior estimate of DCL/HCL (probability that a negative is a false one)",
            low=0.0,
            high=1.0,
            high_open=True,
        ),
        "beta": Knob("weighting", "HCL concentration: negatives weighted by exp(beta * s / t)", low=0.0),
        "variant": Knob(
            "weighting",
            "semi-hard rule: `band` keeps s_p - margin < s_n < s_p (FaceNet); `nearest` "
            "keeps the one negative whose similarity is closest to the positive's (Xie et al.)",
            choices=("band", "nearest"),
        ),
        "margin": Knob(
            "weighting",
            "width of the semi-hard band, and the hinge loss's margin, in score units",
            low=0.0,
            high=2.0,
            low_open=True,
        ),
        "select_by": Knob(
            "weighting",
            "score that ranks the candidate negatives: `cross` (audio-text, each direction on its own), `text` "
            "(caption-caption) or `audio` (clip-clip); the within-modality ones pick one index for both directions",
            choices=("cross", "text", "audio"),
        ),
        "k": Knob("weighting", "negatives kept per anchor and direction (Xie et al. keep 1)", low=1, integer=True),
        "delta": Knob("positive", "the positive is a frame up to delta steps away in the temporal sequence", low=0,
                      integer=True),
        "crop_number": Knob("positive", "object videos are cut into clips of 1 + Poisson(crop_number) frames",
                            low=0.0),
        "p_change_room": Knob("positive", "probability that the sequence switches room before each clip", low=0.0,
                              high=1.0),
        "chunk_ratio": Knob("positive", "share of all clips the sequence visits", low=0.0, high=1.0, low_open=True),
        "label_weight": Knob("weighting", "weight of Aubret et al.'s label-alignment loss (0 = off, 1 = on)",
                             low=0.0),
        "sp_ratio": Knob(
            "positive", "probability that the positive is another item with the same label", low=0.0, high=1.0
        ),
        "label_source": Knob(
            "positive",
            "labels that define `same label`: `true`, `noisy` (corrupted to "
            "label_accuracy) or `pseudo` (k-means of the current embeddings)",
            choices=("true", "noisy", "pseudo"),
        ),
        "label_accuracy": Knob(
            "positive",
            "fraction of items whose noisy label is right (label_source=noisy)",
            low=0.0,
            high=1.0,
            low_open=True,
        ),
        "n_clusters": Knob(
            "positive",
            "number of k-means clusters for pseudo-labels (label_source=pseudo)",
            low=2,
            integer=True,
        ),
        "class_order": Knob(
            "sampler",
            "order of the single-class batches: `fixed` (Wang et al.) or `shuffled`",
            choices=("fixed", "shuffled"),
        ),
    }
)

# Which knobs each member of each part reads. A strategy's knobs are the union over its parts.
POSITIVE_KNOBS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "same_instance": (),
        "soft_class": ("sp_ratio", "label_source", "label_accuracy", "n_clusters"),
        "cross_modal": (),  # the paired caption of a clip
        "temporal": ("delta", "crop_number", "p_change_room", "chunk_ratio"),  # a neighbour in a sequence of views
    }
)
SAMPLER_KNOBS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"random": (), "random_keep_last": (), "one_per_class": (), "single_class": ("class_order",)}
)
WEIGHTING_KNOBS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "all": (),
        "debiased": ("tau_plus",),
        "importance": ("tau_plus", "beta"),
        "semi_hard": ("variant", "margin"),
        "uniform_one": (),  # one candidate drawn at random per direction
        "mean": (),  # every candidate, the hinge averaged
        "hard_k": ("select_by", "k"),  # the k highest-scoring candidates
        "easy_k": ("select_by", "k"),  # the k lowest-scoring candidates
    }
)
FAMILY_KNOBS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    # softmax_labels: NT-Xent plus Aubret et al.'s label alignment (NT-Xent between images and embedded one-hots)
    {"softmax": (), "hinge": ("margin",), "softmax_labels": ("label_weight",)}
)
# The four parts, in the order a preset names them; each task implements some members of each (its Task record).
PARTS = ("positive", "sampler", "weighting", "family")


@dataclass(frozen=True)
class Strategy:
    """A preset: one member of each part plus default values for the parts' knobs."""

    name: str
    positive: str
    sampler: str
    weighting: str
    family: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    doc: str = ""

    @property
    def knobs(self) -> tuple[str, ...]:
        parts = POSITIVE_KNOBS[self.positive] + SAMPLER_KNOBS[self.sampler] + self.loss_knobs
        return tuple(dict.fromkeys(parts))

    @property
    def loss_knobs(self) -> tuple[str, ...]:
        """The weighting's and the family's knobs; ``margin`` is one knob when both read it (FaceNet's band is
        the triplet margin)."""
        return tuple(dict.fromkeys(WEIGHTING_KNOBS[self.weighting] + FAMILY_KNOBS[self.family]))

    def resolve(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults merged with ``overrides``, each value checked; an unknown knob raises UserError."""
        for key in overrides:
            if key not in self.knobs:
                allowed = ", ".join(self.knobs) or "none"
                raise UserError(f"`{key}` is not a knob of strategy '{self.name}' (its knobs: {allowed})")
        merged = {**self.defaults, **overrides}
        return {key: KNOBS[key].check(key, merged[key]) for key in self.knobs}


def preset(
    name: str, positive: str, sampler: str, weighting: str, doc: str, family: str = "softmax", **defaults: Any
) -> Strategy:
    strategy = Strategy(name, positive, sampler, weighting, family, MappingProxyType(defaults), doc)
    missing = set(strategy.knobs) - set(defaults)
    if missing:  # a preset must give every knob a default, so that a bare strategy name is a complete config
        raise TypeError(f"preset {name!r} lacks defaults for {sorted(missing)}")
    return strategy


SOFT_DEFAULTS = {"label_accuracy": 1.0, "n_clusters": 10}

# The two-view strategies: the image task's presets, and the names the public loss API
# (`trainables.losses.two_view_loss`) takes, so they live here with the shared parts. One line each.
TWO_VIEW_STRATEGIES: Mapping[str, Strategy] = MappingProxyType(
    {
        s.name: s
        for s in (
            preset(
                "infonce", "same_instance", "random", "all", "SimCLR NT-Xent: every other view is a negative"
            ),
            preset(
                "debiased",
                "same_instance",
                "random",
                "debiased",
                "DCL (Chuang et al. 2020): subtract tau_plus of the positive mass, clamp at N e^(-1/t)",
                tau_plus=0.1,
            ),
            preset(
                "hard",
                "same_instance",
                "random",
                "importance",
                "HCL (Robinson et al. 2021): DCL with negatives tilted by exp(beta s/t), weights not detached",
                tau_plus=0.1,
                beta=1.0,
            ),
            preset(
                "semi_hard",
                "same_instance",
                "random",
                "semi_hard",
                "only negatives just below the positive (band) or nearest to it",
                variant="band",
                margin=0.2,
            ),
            preset(
                "easy_negative",
                "same_instance",
                "one_per_class",
                "all",
                "Wang et al.: batches of one item per class, so no same-class negative",
            ),
            preset(
                "hard_negative",
                "same_instance",
                "single_class",
                "all",
                "Wang et al.: every batch from a single class, so every negative is same-class",
                class_order="fixed",
            ),
            preset(
                "soft_positive",
                "soft_class",
                "random",
                "all",
                "Wang et al.: positive is another item of the same label with probability sp_ratio",
                sp_ratio=1.0,
                label_source="true",
                **SOFT_DEFAULTS,
            ),
            preset(
                "sp50",
                "soft_class",
                "random",
                "all",
                "soft_positive with sp_ratio 0.5 (Wang et al.'s SP50)",
                sp_ratio=0.5,
                label_source="true",
                **SOFT_DEFAULTS,
            ),
            preset(
                "sp70",
                "soft_class",
                "random",
                "all",
                "soft_positive on labels corrupted to 70.7% accuracy (Wang et al.'s SP70)",
                sp_ratio=1.0,
                label_source="noisy",
                **{**SOFT_DEFAULTS, "label_accuracy": 0.707},
            ),
            preset(
                "pl_sp",
                "soft_class",
                "random",
                "all",
                "soft_positive on k-means pseudo-labels of the current embeddings (Wang et al.'s PL-SP)",
                sp_ratio=1.0,
                label_source="pseudo",
                **SOFT_DEFAULTS,
            ),
        )
    }
)


def get_strategy(name: str, registry: Mapping[str, Strategy] = TWO_VIEW_STRATEGIES, task: str = "image") -> Strategy:
    """The strategy ``name`` of a task's ``registry``, or UserError listing the valid names."""
    try:
        return registry[name]
    except (KeyError, TypeError):
        raise UserError(f"unknown strategy {quoted(name)} for task {task!r}{did_you_mean(name, registry)}; choose one "
                        f"of: {', '.join(registry)}") from None
