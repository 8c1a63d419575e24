"""The Python API and the CLI's JSON on a small real sweep: the same ranking, rows and best config as the files
`sweep report` writes and the text the CLI prints; a dry run writes nothing and starts no Ray."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

import sweep

SWEEP = str(Path(sys.executable).with_name("sweep"))
METRIC = "linear_acc"


def _sweep(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([SWEEP, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def reported(tmp_path_factory, ray_session):
    storage = tmp_path_factory.mktemp("api")
    address = ray_session.get_runtime_context().gcs_address
    run = _sweep("run", "--smoke-test", "--num-samples", "6", "--epochs", "2", "--strategies", "infonce,hard",
                 "--storage", str(storage), "--name", "a", "--address", address, "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    assert _sweep("report", "a", "--storage", str(storage)).returncode == 0
    return storage, json.loads(run.stdout)


@pytest.mark.slow
def test_the_api_returns_what_the_report_files_hold(reported):
    storage, _ = reported
    s = sweep.load("a", str(storage))
    out = storage / "a" / "report"
    assert s.state == "finished" and s.metric == METRIC and s.budget == 2
    files = pq.read_table(out / "trials.parquet").to_pandas()
    assert s.trials().drop(columns="timestamp", errors="ignore").equals(files.drop(columns="timestamp",
                                                                                   errors="ignore"))
    epochs = pq.read_table(out / "epochs.parquet").to_pandas()
    assert s.epochs()[["trial_id", "epoch", METRIC]].equals(epochs[["trial_id", "epoch", METRIC]])
    best = yaml.safe_load((out / "best_config.yaml").read_text())
    best.pop("num_threads")
    assert s.best_config() == best
    ranking = s.ranking()
    md = (out / "report.md").read_text()
    for row in ranking.itertuples():
        assert f"| {row.rank} | {row.strategy} | {getattr(row, METRIC):.4f}" in md
    assert s.study.user_attrs == {} and len(s.study.trials) == 6
    assert sweep.list_sweeps(str(storage))["sweep"].tolist() == ["a"]


@pytest.mark.slow
def test_json_carries_the_numbers_the_text_shows(reported):
    storage, run_json = reported
    text = _sweep("status", "a", "--storage", str(storage)).stdout
    status = json.loads(_sweep("status", "a", "--storage", str(storage), "--json").stdout)
    assert status == json.loads(json.dumps(run_json))  # `run --json` ends with the same document
    assert status["state"] == "finished" and f"sweep a: {status['state']}" in text
    t = status["trials"]
    assert f"trials: {t['finished']} finished, {t['stopped']} stopped early, {t['failed']} failed" in text
    for row in status["ranking"]:
        assert re.search(rf"\| {row['rank']} \| {row['strategy']} \| {row[METRIC]:.4f}", text)
    listed = json.loads(_sweep("list", "--storage", str(storage), "--json").stdout)
    assert [r["sweep"] for r in listed] == ["a"] and listed[0]["best_strategy"] == status["ranking"][0]["strategy"]
    spaces = json.loads(_sweep("spaces", "--json").stdout)
    assert "mnist1d" in spaces and "digits" in spaces
    one = json.loads(_sweep("spaces", "mnist1d", "--json").stdout)
    assert one["strategies"]["hard"]["beta"] == "0 .. 4" and one["epochs"] == 8 and one["rungs"] == [4]


def test_a_dry_run_writes_nothing_and_starts_no_ray(tmp_path):
    ray_tmp = tmp_path / "ray"
    dry = _sweep("run", "--confirm", "--dry-run", "--json", "--storage", str(tmp_path / "store"),
                 env={"RAY_TMPDIR": str(ray_tmp)})
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["strategies"] == dict.fromkeys(plan["strategies"], 4) and len(plan["strategies"]) == 10
    assert plan["trial_epochs_at_most"] == 320 and plan["race"]["trial_epochs_at_most"] == 800
    assert not (tmp_path / "store").exists() and not ray_tmp.exists()
    text = _sweep("run", "--dry-run", "--smoke-test", "--storage", str(tmp_path / "store")).stdout
    assert "nothing is written by --dry-run" in text and "warning: 10 of 10 strategies get fewer than 3" in text


def test_a_dry_run_refuses_what_the_run_would_refuse(tmp_path):
    taken = tmp_path / "store" / "taken"
    taken.mkdir(parents=True)
    (taken / "notes.txt").write_text("not a sweep")
    refused = [["--name", "taken"], ["--cpus-per-trial", "512"]]
    if importlib.util.find_spec("wandb") is None:
        refused.append(["--tracker", "wandb"])
    for args in refused:
        dry = _sweep("run", "--dry-run", "--storage", str(tmp_path / "store"), *args)
        assert dry.returncode == 2 and len(dry.stderr.strip().splitlines()) == 1, (args, dry.stderr)
        assert "Traceback" not in dry.stderr and not dry.stdout, (args, dry.stdout)
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["taken"]


def test_the_api_refuses_an_unknown_option_in_one_line():
    with pytest.raises(sweep.api.UserError, match="sweep.run\\(\\) got an unknown option 'num_sample'"):
        sweep.run("mnist1d", num_sample=3)


def test_help_shows_examples_and_the_version():
    assert _sweep("--version").stdout.strip().startswith("sweep ")
    for command in ("run", "status", "confirm", "list", "spaces"):
        assert "examples:" in _sweep(command, "--help").stdout, command
    typo = _sweep("stauts", "x")
    assert typo.returncode == 2 and "did you mean 'status'?" in typo.stderr


@pytest.mark.slow
def test_a_sweep_run_from_python_returns_it_finished(tmp_path, ray_session):
    import io

    out = io.StringIO()
    s = sweep.run("mnist1d", smoke_test=True, num_samples=2, strategies=["infonce"], storage=str(tmp_path),
                  name="py", address=ray_session.get_runtime_context().gcs_address, out=out)
    assert s.name == "py" and s.state == "finished" and len(s.trials()) == 2
    assert "ranking by validation linear_acc" in out.getvalue()
