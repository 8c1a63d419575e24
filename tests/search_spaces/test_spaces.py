from __future__ import annotations

import sys
from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.search import Searcher

from search_spaces import SPACES, describe_space, load_study
from sweep.study import SweepSearcher, build_config
from trainables.errors import UserError
from trainables.strategies import TWO_VIEW_STRATEGIES as STRATEGIES
from trainables.tasks import TASKS, parse_config
from trainables.tasks.image.config import ImageConfig
from trainables.tune_entry import SWEEP_KEYS

optuna.logging.set_verbosity(optuna.logging.WARNING)
METRIC, MODE = TASKS["image"].metric, TASKS["image"].mode  # the image studies rank on their task's metric


def _searcher(study, *, strategies, num_samples, epochs=12, seed=0, overrides=None, grid=None):
    return SweepSearcher(
        optuna.create_study(direction="maximize" if MODE == "max" else "minimize"),
        study.space,
        metric=METRIC,
        mode=MODE,
        epochs=epochs,
        num_samples=num_samples,
        strategies=strategies,
        seed=seed,
        session=0,
        overrides=overrides or {},
        grid=grid,
        log=lambda msg: None,
    )


def _suggest(searcher, n):
    return [{k: v for k, v in searcher.suggest(f"t{i}").items() if k not in SWEEP_KEYS} for i in range(n)]


@pytest.mark.parametrize("name", sorted(SPACES))
def test_every_generated_config_is_accepted_by_the_trial(name):
    study = SPACES[name]
    strategies, fixed = describe_space(study.space)
    sampler = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    configs = [build_config(study.space, sampler.ask(), {}) for _ in range(200)]
    for config in configs:
        cfg = parse_config(config)
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
    searcher = _searcher(study, strategies=("hard",), num_samples=10, epochs=400, grid=study.grid)
    configs = _suggest(searcher, 10)
    assert {(c["temperature"], c["lr"], c["strategy"], c["epochs"]) for c in configs} == {(0.5, 1e-3, "hard", 400)}
    assert all(c["beta"] in study.grid["beta"] and c["tau_plus"] in study.grid["tau_plus"] for c in configs)
    assert searcher.suggest("t10") == Searcher.FINISHED
    # the grid is done once every point is told: no RuntimeError from GridSampler's study.stop() outside optimize()
    for i in range(10):
        searcher.on_trial_complete(f"t{i}", {"epoch": 400, METRIC: 0.5})
    assert [t.state for t in searcher.study.trials] == [TrialState.COMPLETE] * 10


def test_the_grid_runs_every_point_once():
    study = SPACES["stl10_hcl"]
    searcher = _searcher(study, strategies=("hard",), num_samples=10, epochs=400, grid=study.grid)
    configs = _suggest(searcher, 10)
    assert len({(c["beta"], c["tau_plus"]) for c in configs}) == 10


def test_every_strategy_gets_an_equal_share_of_trials():
    strategies, _ = describe_space(SPACES["digits"].space)
    searcher = _searcher(SPACES["digits"], strategies=strategies, num_samples=3 * len(strategies))
    configs = _suggest(searcher, 3 * len(strategies))
    counts = Counter(c["strategy"] for c in configs)
    assert set(counts.values()) == {3} and set(counts) == set(strategies)
    assert [c["strategy"] for c in configs] == [strategies[k % len(strategies)] for k in range(len(configs))]


def test_a_subset_of_strategies_is_all_that_runs():
    searcher = _searcher(SPACES["digits"], strategies=("hard", "sp70"), num_samples=4)
    assert [c["strategy"] for c in _suggest(searcher, 4)] == ["hard", "sp70", "hard", "sp70"]


def test_same_seed_same_configs():
    def configs(seed):
        s = _searcher(SPACES["digits"], strategies=tuple(STRATEGIES), num_samples=12, seed=seed)
        return _suggest(s, 12)

    assert configs(3) == configs(3)
    assert configs(3) != configs(4)


def test_cli_overrides_top_the_fixed_settings():
    trial = optuna.create_study().ask()
    config = build_config(SPACES["digits"].space, trial, {"epochs": 3, "seed": 7})
    assert config["epochs"] == 3 and config["seed"] == 7 and config["dataset"] == "digits"
    assert config["batch_size"] == 128  # the space's own fixed settings stay where nothing overrides them


def test_set_pins_a_searched_parameter_out_of_the_search():
    trial = optuna.create_study().ask()
    config = build_config(SPACES["digits"].space, trial, {"lr": 0.1, "strategy": "hard"})
    assert config["lr"] == 0.1 and config["strategy"] == "hard"
    assert "lr" not in trial.params and "strategy" not in trial.params  # Optuna records only what it searched
    assert {"temperature", "tau_plus", "beta"} <= set(trial.params)  # the pinned branch's knobs are searched
    ImageConfig.from_dict(config)


def test_set_through_the_searcher_gives_every_trial_the_value():
    searcher = _searcher(
        SPACES["digits"], strategies=("infonce", "hard"), num_samples=4, overrides={"temperature": 0.3, "epochs": 2}
    )
    configs = _suggest(searcher, 4)
    assert {(c["temperature"], c["epochs"]) for c in configs} == {(0.3, 2)}
    assert all("temperature" not in t.params for t in searcher.study.trials)
    assert len({c["lr"] for c in configs}) == 4  # the rest is still searched


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
    with pytest.raises(UserError):
        load_study(spec.format(file=f))


USER_STUDY = """
from search_spaces import Study
from search_spaces.digits import STUDY as DIGITS

def space(trial):
    return DIGITS.space(trial)

BASELINE = Study(name="x", description="", space=space, scheduler="fifo", sampler="random", num_samples=6)
"""


def test_a_users_file_may_give_a_whole_study_with_its_sampler_and_scheduler(tmp_path):
    (tmp_path / "mine.py").write_text(USER_STUDY)
    study = load_study(f"{tmp_path / 'mine.py'}:BASELINE")
    assert (study.name, study.scheduler, study.sampler, study.num_samples) == ("mine.BASELINE", "fifo", "random", 6)
    random_search = SweepSearcher(
        optuna.create_study(direction="maximize"), study.space, metric=METRIC, mode=MODE, epochs=4, num_samples=20,
        strategies=("infonce",), seed=0, session=0, sampler=study.sampler, log=lambda msg: None,
    )
    lrs = [c["lr"] for c in _suggest(random_search, 20)]
    assert isinstance(random_search.study.sampler, optuna.samplers.RandomSampler) and len(set(lrs)) == 20


def test_an_unknown_space_is_a_user_error():
    with pytest.raises(UserError, match="unknown search space 'nope'; choose one of: mnist1d, digits"):
        load_study("nope")


@pytest.mark.parametrize(
    "body, message",
    [
        ("import sys\nsys.exit(3)\n", r"called sys.exit\(3\) while being imported"),
        ("raise SystemExit\n", r"called sys.exit\(None\) while being imported"),
        ("raise RuntimeError('boom')\n", "could not import search space file .*mine.py: RuntimeError: boom"),
        ("def space(trial)\n", "could not import search space file .*mine.py: SyntaxError"),
        ("x = 1\n", "has no function or Study 'space'"),
    ],
)
def test_a_users_file_that_exits_or_fails_is_a_user_error_naming_it(tmp_path, body, message):
    (tmp_path / "mine.py").write_text(body)
    with pytest.raises(UserError, match=message) as info:
        load_study(f"{tmp_path / 'mine.py'}:space")
    assert "\n" not in str(info.value)
    if "has no function" not in message:
        assert "user_space_mine" not in sys.modules  # a half-imported file is not left behind


def test_missing_and_non_python_space_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_study(f"{tmp_path / 'absent.py'}:space")
    (tmp_path / "space.txt").write_text("def space(trial):\n    return None\n")
    with pytest.raises(UserError, match="is not a Python file"):
        load_study(f"{tmp_path / 'space.txt'}:space")


def test_a_space_function_that_returns_the_wrong_thing_is_a_user_error():
    with pytest.raises(UserError, match="must return a dict of fixed settings or None, not list"):
        describe_space(lambda trial: [trial.suggest_categorical("strategy", ["infonce"])])
    with pytest.raises(UserError, match="must suggest `strategy`"):
        describe_space(lambda trial: {"epochs": 2})


RAISING_SPACES = """
import sys

def raises(trial):
    trial.suggest_categorical("strategy", ["infonce"])
    return {"epochs": undefined_name}

def exits(trial):
    sys.exit(3)
"""


@pytest.mark.parametrize(
    "func, message",
    [
        ("raises", r"search space 'mine.raises' raised NameError: name 'undefined_name' is not defined; fix the"),
        ("exits", r"search space 'mine.exits' raised SystemExit: 3; fix the function"),
    ],
)
def test_a_users_space_function_that_raises_is_a_user_error_naming_it(tmp_path, func, message):
    (tmp_path / "mine.py").write_text(RAISING_SPACES)
    study = load_study(f"{tmp_path / 'mine.py'}:{func}")
    with pytest.raises(UserError, match=message) as info:
        describe_space(study.space)
    assert "\n" not in str(info.value)


def test_a_registered_space_that_raises_is_a_bug_not_a_user_error():
    def broken(trial):
        raise KeyError("lr")

    broken.__module__ = "search_spaces.digits"
    with pytest.raises(KeyError) as info:
        describe_space(broken)
    assert not isinstance(info.value, UserError)
