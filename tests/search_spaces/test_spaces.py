from __future__ import annotations

from collections import Counter

import optuna
import pytest

from search_spaces import SPACES, describe_space, load_study
from sweep.study import SpaceWithOverrides, make_searcher
from trainables.config import TrialConfig
from trainables.strategies import STRATEGIES

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _suggest(searcher, n):
    return [searcher.suggest(f"t{i}") for i in range(n)]


@pytest.mark.parametrize("name", sorted(SPACES))
def test_every_generated_config_is_accepted_by_the_trial(name):
    study = SPACES[name]
    strategies, fixed = describe_space(study.space)
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(
        space=study.space, metric=study.metric, mode=study.mode, sampler=optuna.samplers.RandomSampler(seed=0)
    )
    configs = _suggest(searcher, 200)
    for config in configs:
        cfg = TrialConfig.from_dict(config)
        assert cfg.strategy in strategies
        assert set(config) - {"strategy", "lr", "temperature"} - set(fixed) <= set(cfg.strategy_spec.knobs)
    assert {c["strategy"] for c in configs} == set(strategies)


def test_digits_covers_every_image_strategy_and_sweeps_hardness_knobs():
    strategies, _ = describe_space(SPACES["digits"].space)
    assert set(strategies) == set(STRATEGIES)
    for strategy, expected in {
        "infonce": set(),
        "hard": {"tau_plus", "beta"},
        "debiased": {"tau_plus"},
        "soft_positive": {"sp_ratio"},
        "sp70": set(),
    }.items():
        params = optuna.trial.FixedTrial(
            {
                "strategy": strategy,
                "lr": 1e-3,
                "temperature": 0.5,
                "tau_plus": 0.1,
                "beta": 1.0,
                "sp_ratio": 0.5,
            }
        )
        SPACES["digits"].space(params)
        assert set(params.params) - {"strategy", "lr", "temperature"} == expected


def test_stl10_hcl_is_hcl_grid():
    study = SPACES["stl10_hcl"]
    assert study.grid["beta"] == (0.0, 0.5, 1.0, 2.0, 6.0) and study.grid["tau_plus"] == (0.0, 0.1)
    assert study.num_samples == 10 and study.scheduler == "fifo"
    searcher = make_searcher(
        study.space,
        metric=study.metric,
        mode=study.mode,
        seed=0,
        max_t=400,
        strategies=("hard",),
        num_samples=10,
        grid=study.grid,
    )
    configs = _suggest(searcher, 10)
    assert len({(c["beta"], c["tau_plus"]) for c in configs}) == 10
    assert {(c["temperature"], c["lr"], c["strategy"]) for c in configs} == {(0.5, 1e-3, "hard")}


def test_every_strategy_gets_an_equal_share_of_trials():
    strategies, _ = describe_space(SPACES["digits"].space)
    searcher = make_searcher(
        SPACES["digits"].space,
        metric="linear_acc",
        mode="max",
        seed=0,
        max_t=12,
        strategies=strategies,
        num_samples=3 * len(strategies),
    )
    counts = Counter(c["strategy"] for c in _suggest(searcher, 3 * len(strategies)))
    assert set(counts.values()) == {3} and set(counts) == set(strategies)


def test_same_seed_same_configs():
    def configs(seed):
        s = make_searcher(
            SPACES["digits"].space,
            metric="linear_acc",
            mode="max",
            seed=seed,
            max_t=12,
            strategies=tuple(STRATEGIES),
            num_samples=12,
        )
        return _suggest(s, 12)

    assert configs(3) == configs(3)
    assert configs(3) != configs(4)


def test_cli_overrides_top_the_fixed_settings():
    space = SpaceWithOverrides(SPACES["digits"].space, {"epochs": 3, "seed": 7})
    trial = optuna.create_study().ask()
    fixed = space(trial)
    assert fixed["epochs"] == 3 and fixed["seed"] == 7 and fixed["dataset"] == "digits"


def test_user_space_from_a_file(tmp_path):
    f = tmp_path / "mine.py"
    f.write_text(
        "def space(trial):\n    trial.suggest_categorical('strategy', ['infonce', 'hard'])\n"
        "    trial.suggest_float('lr', 1e-4, 1e-2, log=True)\n    return {'epochs': 3}\n"
    )
    study = load_study(f"{f}:space")
    assert describe_space(study.space) == (("infonce", "hard"), {"epochs": 3})


@pytest.mark.parametrize("spec", ["nope", "/no/such/file.py:space", "{file}:missing"])
def test_bad_space_names_raise_one_clear_error(spec, tmp_path):
    f = tmp_path / "mine.py"
    f.write_text("def space(trial):\n    return None\n")
    with pytest.raises(ValueError):
        load_study(spec.format(file=f))
