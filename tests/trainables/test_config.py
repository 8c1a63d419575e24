from __future__ import annotations

import dataclasses

import pytest

from trainables.config import TrialConfig
from trainables.strategies import KNOBS, STRATEGIES, TASK_STRATEGIES, get_strategy


def test_defaults_make_a_complete_config():
    cfg = TrialConfig.from_dict({})
    assert cfg.strategy == "infonce" and cfg.knobs == {}


def test_strategy_knobs_take_the_preset_defaults():
    cfg = TrialConfig.from_dict({"strategy": "hard"})
    assert dict(cfg.knobs) == {"tau_plus": 0.1, "beta": 1.0}
    assert cfg.loss_knobs == {"tau_plus": 0.1, "beta": 1.0}
    assert TrialConfig.from_dict({"strategy": "sp70"}).knobs["label_accuracy"] == 0.707


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_round_trips_through_to_dict(name):
    cfg = TrialConfig.from_dict({"strategy": name})
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrialConfig.from_dict({}).lr = 1.0


def test_unknown_config_key_is_rejected_by_name():
    with pytest.raises(ValueError, match="`learning_rate`"):
        TrialConfig.from_dict({"learning_rate": 0.1})


def test_unknown_strategy_is_rejected_listing_the_valid_ones():
    with pytest.raises(ValueError, match="unknown strategy 'hcl'.*infonce"):
        TrialConfig.from_dict({"strategy": "hcl"})


def test_knob_of_another_strategy_is_rejected():
    with pytest.raises(ValueError, match="`beta` is not a knob of strategy 'debiased'"):
        TrialConfig.from_dict({"strategy": "debiased", "beta": 1.0})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("temperature", 0.0),
        ("lr", -1e-3),
        ("batch_size", 1),
        ("epochs", 0),
        ("batch_size", 2.5),
        ("dataset", "imagenet"),
        ("encoder", "vit"),
        ("lr", "fast"),
        ("lr", True),
        ("lr", float("nan")),
        ("eval_every", 0),
        ("evaluate_test", 1),  # a boolean setting takes true or false, not 1
        ("evaluate_test", "yes"),
    ],
)
def test_out_of_range_settings_are_rejected_by_name(key, value):
    with pytest.raises(ValueError, match=f"`{key}`"):
        TrialConfig.from_dict({key: value})


@pytest.mark.parametrize(
    ("strategy", "key", "value"),
    [
        ("hard", "tau_plus", 1.0),
        ("hard", "tau_plus", -0.1),
        ("hard", "beta", -1.0),
        ("semi_hard", "variant", "x"),
        ("semi_hard", "margin", 0.0),
        ("soft_positive", "sp_ratio", 1.5),
        ("sp70", "label_accuracy", 0.0),
        ("pl_sp", "n_clusters", 1),
        ("hard_negative", "class_order", "random"),
    ],
)
def test_out_of_range_knobs_are_rejected_by_name(strategy, key, value):
    with pytest.raises(ValueError, match=f"`{key}`"):
        TrialConfig.from_dict({"strategy": strategy, key: value})


def test_label_knobs_that_would_do_nothing_are_rejected():
    with pytest.raises(ValueError, match="label_accuracy"):
        TrialConfig.from_dict({"strategy": "soft_positive", "label_accuracy": 0.5})
    with pytest.raises(ValueError, match="n_clusters"):
        TrialConfig.from_dict({"strategy": "sp70", "n_clusters": 5})
    cfg = TrialConfig.from_dict({"strategy": "soft_positive", "label_source": "noisy", "label_accuracy": 0.5})
    assert cfg.knobs["label_accuracy"] == 0.5


def test_every_knob_belongs_to_some_strategy():
    used = {k for registry in TASK_STRATEGIES.values() for s in registry.values() for k in s.knobs}
    assert used == set(KNOBS)


def test_every_preset_of_every_task_resolves_with_its_defaults():
    for task, registry in TASK_STRATEGIES.items():
        for name, s in registry.items():
            assert get_strategy(name, task) is s
            assert set(s.resolve({})) == set(s.knobs)
