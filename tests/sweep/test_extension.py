"""A new task is one module with one Task record plus one registry entry: the toy task of ``toy_task.py``, defined
outside the project and registered by a fixture, trains through `sweep train` and ranks in a smoke sweep on Ray
workers, with no project file edited."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import toy_task
from ray import cloudpickle

from sweep.cli import main
from trainables.tasks import TASKS

HERE = Path(__file__).resolve().parent


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(TASKS, "toy", toy_task.TASK)
    cloudpickle.register_pickle_by_value(toy_task)  # the workers cannot import this test folder's module
    yield toy_task.TASK
    cloudpickle.unregister_pickle_by_value(toy_task)


def test_a_registered_task_trains_through_sweep_train(toy, tmp_path, capsys):
    config = tmp_path / "toy.json"
    config.write_text(json.dumps({"task": "toy", "strategy": "debiased", "epochs": 3}))
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "out")]) == 0
    lines = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3] and all(0.0 <= r["acc"] <= 1.0 for r in lines)
    assert "acc" in capsys.readouterr().out  # the record's `shown` scores are printed per epoch


def test_an_unregistered_task_is_refused_in_one_line(tmp_path, capsys):
    config = tmp_path / "toy.json"
    config.write_text(json.dumps({"task": "toy"}))
    assert main(["train", "--config", str(config)]) == 2
    assert "`task` is 'toy' but must be one of image" in capsys.readouterr().err


# A driver of the user's own: it registers the task, then hands over to the CLI (its own process, so that its
# stdout is a real one: Ray pickles the callbacks that print to it).
DRIVER = """
import sys
import toy_task
from ray import cloudpickle
from sweep.cli import main
from trainables.tasks import TASKS

TASKS["toy"] = toy_task.TASK
cloudpickle.register_pickle_by_value(toy_task)  # the workers cannot import this test folder's module
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_registered_task_ranks_in_a_smoke_sweep_on_ray_workers(tmp_path, ray_session):
    address = ray_session.get_runtime_context().gcs_address
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", DRIVER, "run", "--space", f"{toy_task.__file__}:space", "--smoke-test",
                          "--num-samples", "4", "--storage", str(tmp_path), "--name", "toy", "--address", address],
                         capture_output=True, text=True, timeout=420, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "ranking by validation acc" in run.stdout
    ranking = (tmp_path / "toy" / "ranking.md").read_text()
    assert "infonce" in ranking and "debiased" in ranking and "tau_plus=" in ranking and "lr=" in ranking
