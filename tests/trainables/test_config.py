from __future__ import annotations

import dataclasses
import math

import pytest

from trainables.errors import UserError
from trainables.strategies import KNOBS, get_strategy
from trainables.strategies import TWO_VIEW_STRATEGIES as STRATEGIES
from trainables.tasks import TASKS, parse_config
from trainables.tasks.image.config import ImageConfig

TASK_STRATEGIES = {name: task.strategies for name, task in TASKS.items()}
TASK_CONFIGS = {name: task.config for name, task in TASKS.items()}


def check_data(cfg):
    TASKS[cfg.task].check_data(cfg)


def test_defaults_make_a_complete_config():
    cfg = ImageConfig.from_dict({})
    assert cfg.strategy == "infonce" and cfg.knobs == {}


def test_strategy_knobs_take_the_preset_defaults():
    cfg = ImageConfig.from_dict({"strategy": "hard"})
    assert dict(cfg.knobs) == {"tau_plus": 0.1, "beta": 1.0}
    assert cfg.loss_knobs == {"tau_plus": 0.1, "beta": 1.0}
    assert ImageConfig.from_dict({"strategy": "sp70"}).knobs["label_accuracy"] == 0.707


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_round_trips_through_to_dict(name):
    cfg = ImageConfig.from_dict({"strategy": name})
    assert ImageConfig.from_dict(cfg.to_dict()) == cfg


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ImageConfig.from_dict({}).lr = 1.0


def test_unknown_config_key_is_rejected_by_name():
    with pytest.raises(ValueError, match="`learning_rate`"):
        ImageConfig.from_dict({"learning_rate": 0.1})


def test_unknown_strategy_is_rejected_listing_the_valid_ones():
    with pytest.raises(ValueError, match="unknown strategy 'hcl'.*infonce"):
        ImageConfig.from_dict({"strategy": "hcl"})


def test_knob_of_another_strategy_is_rejected():
    with pytest.raises(ValueError, match="`beta` is not a knob of strategy 'debiased'"):
        ImageConfig.from_dict({"strategy": "debiased", "beta": 1.0})


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
        ImageConfig.from_dict({key: value})


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
        ImageConfig.from_dict({"strategy": strategy, key: value})


def test_label_knobs_that_would_do_nothing_are_rejected():
    with pytest.raises(ValueError, match="label_accuracy"):
        ImageConfig.from_dict({"strategy": "soft_positive", "label_accuracy": 0.5})
    with pytest.raises(ValueError, match="n_clusters"):
        ImageConfig.from_dict({"strategy": "sp70", "n_clusters": 5})
    cfg = ImageConfig.from_dict({"strategy": "soft_positive", "label_source": "noisy", "label_accuracy": 0.5})
    assert cfg.knobs["label_accuracy"] == 0.5


def test_every_knob_belongs_to_some_strategy():
    used = {k for registry in TASK_STRATEGIES.values() for s in registry.values() for k in s.knobs}
    assert used == set(KNOBS)


def test_every_preset_of_every_task_resolves_with_its_defaults():
    for task, registry in TASK_STRATEGIES.items():
        for name, s in registry.items():
            assert get_strategy(name, registry, task) is s
            assert set(s.resolve({})) == set(s.knobs)


# --- the user's mistakes are UserError (one line, exit 2 in the CLI), not a plain ValueError (a bug) ---------------

BAD_CONFIGS = {
    "unknown key": ({"learning_rate": 0.1}, "`learning_rate`"),
    "unknown strategy": ({"strategy": "hcl"}, "unknown strategy 'hcl'"),
    "unknown task": ({"task": "video"}, "`task`"),
    "task not a name": ({"task": ["image"]}, "`task`"),
    "strategy not a name": ({"strategy": ["hard"]}, "unknown strategy"),
    "knob of another strategy": ({"strategy": "debiased", "beta": 1.0}, "`beta` is not a knob"),
    "out of range": ({"temperature": 0.0}, r"`temperature` is 0.0 but must be a number > 0 and <= 100"),
    "out of range knob": ({"strategy": "hard", "tau_plus": 1.0}, "`tau_plus`"),
    "inactive knob": ({"strategy": "sp70", "n_clusters": 5}, "`n_clusters` applies only with label_source"),
    "batch_size inf": ({"batch_size": float("inf")}, r"`batch_size` is inf but must be a finite integer >= 2"),
    "epochs nan": ({"epochs": float("nan")}, r"`epochs` is nan but must be a finite integer >= 1"),
    "epochs fraction": ({"epochs": 2.5}, r"`epochs` is 2.5 but must be an integer >= 1"),
    "epochs huge": ({"epochs": 2**70}, r"`epochs` .* at most 2\*\*63 - 1"),
    "limit fraction": ({"limit": 20.5}, "`limit`"),
    "limit inf": ({"limit": float("-inf")}, "`limit`"),
    "seed huge": ({"seed": 2**70}, r"`seed` .* must be an integer >= 0 and <= 4294967295"),
    "seed negative": ({"seed": -1}, r"`seed` is -1 but must be an integer >= 0 and <= 4294967295"),
    "seed just past 32 bits": ({"seed": 2**32}, "`seed`"),
    "lr inf": ({"lr": float("inf")}, r"`lr` is inf but must be a finite number > 0 and <= 10"),
    "lr beyond float": ({"lr": 10**400}, r"`lr` is .*\(401 characters\)"),
    "weight_decay nan": ({"weight_decay": float("nan")}, "`weight_decay` is nan"),
    "knob inf": ({"strategy": "hard", "beta": float("inf")}, "`beta` is inf"),
    "bool for a number": ({"batch_size": True}, "`batch_size` is True but must be an integer"),
    "number for a bool": ({"evaluate_test": 1}, "`evaluate_test` is 1 but must be one of false, true"),
    "string for a number": ({"lr": "1e-3"}, "`lr` is '1e-3'"),
    "path not a string": ({"data_root": 3}, "`data_root` is 3 but must be a path"),
    "too many threads": ({"num_threads": 10**6}, "`num_threads`"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_configs_raise_user_error_naming_the_key_and_the_rule(case):
    config, message = BAD_CONFIGS[case]
    with pytest.raises(UserError, match=message) as info:
        parse_config(config)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("task", sorted(TASK_STRATEGIES))
@pytest.mark.parametrize(
    "value", [float("inf"), float("-inf"), float("nan"), 2.5, 2**70, -(2**70), 10**400, True, "x", [1], {}]
)
def test_no_bad_number_escapes_parse_config_as_anything_but_user_error(task, value):
    """Every setting and knob of every strategy of every task: a UserError or a valid config, never a TypeError,
    OverflowError or plain ValueError."""
    cls = TASK_CONFIGS[task]
    skip = ("knobs", "task", "strategy", *cls.PATHS)  # a path takes any string
    settings = [f.name for f in dataclasses.fields(cls) if f.name not in skip]
    for strategy, spec in TASK_STRATEGIES[task].items():
        for key in settings + list(spec.knobs):
            try:
                cfg = parse_config({"task": task, "strategy": strategy, key: value})
            except UserError:
                continue
            got = getattr(cfg, key, None) if key in settings else cfg.knobs[key]
            assert isinstance(got, (int, float)) and math.isfinite(got), (key, value, got)


def test_a_missing_dataset_root_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cifar10 needs a data root"):
        check_data(parse_config({"dataset": "cifar10"}))
    with pytest.raises(UserError, match="the folder does not exist"):
        check_data(parse_config({"dataset": "stl10", "data_root": str(tmp_path / "nope")}))
    with pytest.raises(UserError, match="clotho needs a data root"):
        check_data(parse_config({"task": "audio_text", "dataset": "clotho"}))


def test_a_path_setting_for_the_wrong_dataset_is_a_user_error_before_the_sweep(tmp_path):
    with pytest.raises(UserError, match="`word_vectors` applies to dataset clotho only"):
        check_data(parse_config({"task": "audio_text", "word_vectors": str(tmp_path / "w.txt")}))
    with pytest.raises(UserError, match="`context_json` applies to dataset mvimgnet only"):
        check_data(parse_config({"task": "temporal", "context_json": str(tmp_path / "rooms.json")}))


def test_a_cuda_device_without_cuda_is_a_user_error(monkeypatch):
    import torch

    from trainables.loop import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="`device` is 'cuda' but no CUDA device is visible"):
        resolve_device("cuda")
