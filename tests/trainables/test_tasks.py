"""The task contract, over every registered task: what the epoch loop, `sweep train` and a sweep rely on.

Each task runs at its own `--smoke-test` sizes (its record's), so a new task is covered by registering it.
"""

from __future__ import annotations

import math

import optuna
import pytest
import torch

import trainables.loop as loop
from search_spaces import SPACES
from sweep.study import build_config
from trainables.loop import EpochLog
from trainables.strategies import KNOBS, PARTS
from trainables.tasks import TASKS, build_trial, parse_config

NAMES = sorted(TASKS)


def tiny(name: str, **extra):
    task = TASKS[name]
    return {"task": name, **task.smoke, "epochs": 2, "num_threads": 1, **extra}


def by_label_strategy(name: str) -> str:
    """The preset whose partners depend on the labels and the epoch's embeddings, where the task has one: the
    hardest one to resume exactly; else the task's default."""
    task = TASKS[name]
    pseudo = [s.name for s in task.strategies.values() if s.defaults.get("label_source") == "pseudo"]
    return pseudo[0] if pseudo else task.config.strategy


@pytest.mark.parametrize("name", NAMES)
def test_a_resumed_trial_continues_exactly_like_an_uninterrupted_one(name, collect, one_thread):
    config = tiny(name, epochs=3, strategy=by_label_strategy(name))
    straight, states = collect(config)
    resumed, _ = collect(config, state=states[0])
    metric = TASKS[name].metric
    assert [r["epoch"] for r in resumed] == [2, 3]
    for a, b in zip(straight[1:], resumed, strict=True):
        assert a["loss"] == b["loss"] and a[metric] == b[metric]


@pytest.mark.parametrize("name", NAMES)
def test_the_test_split_is_scored_only_at_the_last_epoch(name, collect, one_thread):
    metric = TASKS[name].metric
    rows, states = collect(tiny(name, epochs=3, eval_every=2, evaluate_test=True))
    assert [(metric in r, f"test_{metric}" in r) for r in rows] == [(False, False), (True, False), (True, True)]
    assert "test_embedding_std" not in rows[-1] and "embedding_std" in rows[-1]
    assert all(c in rows[-1] and f"test_{c}" in rows[-1] for c in TASKS[name].columns)
    assert {"model", "optimizer", "epoch", "rng", "config"} <= set(states[0])


@pytest.mark.parametrize("name", NAMES)
def test_a_non_finite_loss_ends_the_trial_with_its_reason(name, collect, one_thread, monkeypatch):
    real = EpochLog.step

    def poisoned(self, loss, items, purity=None):  # the first step's loss is NaN
        return real(self, loss * math.nan, items, purity)

    monkeypatch.setattr(EpochLog, "step", poisoned)
    rows, states = collect(tiny(name, epochs=3))
    assert len(rows) == 1 and rows[0]["stop_reason"] == "non-finite loss"
    # no step was taken on it: the weights the trial is scored with are still finite
    assert all(torch.isfinite(v).all() for v in states[0]["model"].values() if v.is_floating_point())
    assert math.isfinite(rows[0][TASKS[name].metric])


@pytest.mark.parametrize("name", NAMES)
def test_collapsed_embeddings_end_the_trial_with_their_reason(name, collect, one_thread, monkeypatch):
    t = build_trial(tiny(name))
    scores = t.evaluate("val", final=False)
    assert not loop.collapsed(t, scores)  # a fresh encoder is not collapsed ...
    flat = {**scores, **{k: 0.0 for k in scores if k.endswith("_std")}}
    assert loop.collapsed(t, flat)  # ... and embeddings that do not spread at all are
    monkeypatch.setattr(loop, "collapsed", lambda trial, metrics: True)
    rows, _ = collect(tiny(name, epochs=3))
    assert len(rows) == 1 and rows[0]["stop_reason"] == "collapsed embeddings"


@pytest.mark.parametrize("name", NAMES)
def test_every_preset_resolves_with_its_defaults_and_round_trips(name):
    task = TASKS[name]
    assert task.config.strategy in task.strategies  # the config's default strategy is one of the task's
    for strategy in task.strategies.values():
        cfg = parse_config({"task": name, "strategy": strategy.name})
        assert dict(cfg.knobs) == {k: KNOBS[k].check(k, strategy.defaults[k]) for k in strategy.knobs}
        assert parse_config(cfg.to_dict()) == cfg
        for part in PARTS:
            assert getattr(strategy, part) in task.parts[part]


@pytest.mark.parametrize("name", NAMES)
def test_every_config_its_search_spaces_generate_is_accepted(name):
    studies = [s for s in SPACES.values() if (s.space(optuna.create_study().ask()) or {}).get("task", "image") == name]
    assert studies, f"no registered search space sweeps task {name!r}"
    for study in studies:
        sampler = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(50):
            cfg = parse_config(build_config(study.space, sampler.ask(), {}))
            assert cfg.task == name and cfg.strategy in TASKS[name].strategies


@pytest.mark.parametrize("name", NAMES)
def test_smoke_sizes_and_metric_belong_to_the_task(name):
    task = TASKS[name]
    assert set(task.smoke) <= set(task.settings)
    assert task.metric in task.shown and {task.metric, *task.columns} <= tiny_scores(name)


def tiny_scores(name: str) -> set[str]:
    return set(build_trial(tiny(name)).evaluate("val", final=True))
