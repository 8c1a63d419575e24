"""The real `sweep` console script in a subprocess: bad input, `spaces`, `train`, and one smoke sweep."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from search_spaces import SPACES

SWEEP = str(Path(sys.executable).with_name("sweep"))


def _sweep(*args, cwd=None, timeout=300, env=None, unset=()):
    environ = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in unset}
    return subprocess.run([SWEEP, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=environ)


def _one_clear_line(proc):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def _refused(tmp_path, *args):
    """`sweep ARGS` run in tmp_path: exit 2, one line, no traceback, no Ray started (a local Ray makes its session
    directory under RAY_TMPDIR) and nothing new under tmp_path. Returns the line."""
    ray_tmp = tmp_path.parent / f"{tmp_path.name}-ray"
    before = _files(tmp_path)
    line = _one_clear_line(_sweep(*args, cwd=tmp_path, env={"RAY_TMPDIR": str(ray_tmp)}, unset=("RAY_ADDRESS",)))
    assert not ray_tmp.exists(), f"Ray was started: {line}"
    assert _files(tmp_path) == before, f"files were written: {line}"
    return line


def _make_sweep(storage: Path, name: str, *, finished: int = 0, driver: dict | None = None) -> Path:
    """A sweep of 4 trials as `sweep run` leaves it on disk (sweep.json, study.db, driver.json), without Ray."""
    from sweep import ledger
    from sweep.plan import SweepSettings, plan

    p = plan(SweepSettings(space="digits", name=name, storage=str(storage), num_samples=4, epochs=2))
    exp = storage / name
    exp.mkdir(parents=True)
    (exp / ledger.SETTINGS_FILE).write_text(p.to_json())
    study = ledger.create_study(str(exp), name, "max")
    for _ in range(finished):
        study.tell(study.ask(), 0.5)
    if driver is not None:
        ledger.write_driver(str(exp), driver)
    return exp


SYNTAX_ERROR_SPACE = """
def space(trial)
    pass
"""
USER_SPACES = """
def negative_epochs(trial):
    trial.suggest_categorical("strategy", ["infonce", "hard"])
    return {"epochs": -3}

def unknown_strategy(trial):
    trial.suggest_categorical("strategy", ["infonce", "nope"])
    return {}

def raises(trial):
    trial.suggest_categorical("strategy", ["infonce"])
    return {"epochs": undefined_name}

def no_strategy(trial):
    trial.suggest_float("lr", 1e-4, 1e-2)
    return {}

def exits(trial):
    import sys
    sys.exit(3)
"""

BAD_RUNS = {
    "unknown space": (["--space", "nope"], ["unknown search space 'nope'", "digits", "file.py:function"]),
    "space file syntax error": (["--space", "syntax.py:space"], ["could not import", "SyntaxError"]),
    "space file without the function": (["--space", "spaces.py:missing"], ["has no function or Study 'missing'"]),
    "space file missing": (["--space", "/no/such/file.py:space"], ["not found", "file.py:function"]),
    "space gives invalid epochs": (
        ["--space", "spaces.py:negative_epochs"],
        ["`epochs` is -3", ">= 1", "search space 'spaces.negative_epochs'"],
    ),
    "space gives unknown strategy": (
        ["--space", "spaces.py:unknown_strategy"],
        ["unknown strategy 'nope'", "search space 'spaces.unknown_strategy'"],
    ),
    "space raises": (["--space", "spaces.py:raises"], ["raised NameError", "fix the function"]),
    "space without strategy": (["--space", "spaces.py:no_strategy"], ["`strategy`", "suggest_categorical"]),
    "unknown strategy": (["--strategies", "nope"], ["strategy 'nope' is not in space 'mnist1d'", "choose from"]),
    "temperature out of range": (["--set", "temperature=-1"], ["`temperature` is -1.0", "> 0", "--set"]),
    "batch size out of range": (["--set", "batch_size=1"], ["`batch_size` is 1", ">= 2", "--set"]),
    "knob of another strategy": (["--set", "beta=1"], ["`beta` is not a knob of strategy", "--strategies "]),
    "pinned unknown strategy": (["--set", "strategy=nope"], ["--set strategy=nope", "choose from"]),
    "set without equals": (["--set", "noequals"], ["--set 'noequals'", "key=value"]),
    "set unknown key": (["--set", "bogus=1"], ["unknown config key `bogus`"]),
    "zero samples": (["--num-samples", "0"], ["argument --num-samples: 0 must be >= 1"]),
    "negative epochs": (["--epochs", "-1"], ["argument --epochs: -1 must be >= 1"]),
    "negative max failures": (["--max-failures", "-1"], ["argument --max-failures: -1 must be >= 0"]),
    "zero concurrency": (["--max-concurrent", "0"], ["argument --max-concurrent: 0 must be >= 1"]),
    "time budget not a duration": (["--time-budget", "abc"], ["--time-budget 'abc'", "3600"]),
    "negative time budget": (["--time-budget=-5m"], ["--time-budget '-5m'", "positive"]),
    "not a number": (["--num-samples", "abc"], ["--num-samples: 'abc' is not an integer", "`sweep run --help`"]),
    "value missing": (["--epochs"], ["--epochs: expected one argument", "`sweep run --help`"]),
    "name with a slash": (["--name", "a/b"], ["--name 'a/b' is not a safe sweep name"]),
    "dataset without root": (["--space", "stl10_hcl"], ["stl10 needs a data root", "stl10_binary"]),
    "dataset not in root": (["--space", "stl10_hcl", "--data-root", "."], ["stl10 not found under", "stl10_binary"]),
    "no cluster at address": (["--address", "127.0.0.1:1"], ["no Ray cluster answers at --address", "ray start"]),
    "fraction of several GPUs": (["--gpus-per-trial", "1.5"], ["--gpus-per-trial 1.5", "use an integer"]),
    # Non-finite and out-of-range numbers, refused before Ray starts (issue 15).
    "infinite GPUs": (["--gpus-per-trial", "inf"], ["argument --gpus-per-trial: 'inf' must be a finite number"]),
    "infinite batch size": (["--set", "batch_size=.inf"], ["batch_size=.inf", "finite number"]),
    "infinite epochs": (["--set", "epochs=.inf"], ["epochs=.inf", "finite number"]),
    "NaN CPUs": (["--cpus-per-trial", "nan"], ["argument --cpus-per-trial: 'nan' must be a finite number"]),
    "NaN GPUs": (["--gpus-per-trial", "nan"], ["argument --gpus-per-trial: 'nan' must be a finite number"]),
    "zero CPUs": (["--cpus-per-trial", "0"], ["argument --cpus-per-trial: 0 must be above 0"]),
    "infinite CPUs": (["--cpus-per-trial", "inf"], ["argument --cpus-per-trial: 'inf' must be a finite number"]),
    "more CPUs than the machine": (["--cpus-per-trial", "1000"], ["--cpus-per-trial is 1000", "CPU(s)", "at most"]),
    "seed out of range": (["--seed", "99999999999999999999"], ["argument --seed", "<= 4294967295"]),
    "infinite time budget": (["--time-budget", "inf"], ["--time-budget 'inf'", "finite"]),
    "empty strategies": (["--strategies", ""], ["--strategies is empty", "leave the option out"]),
    "empty time budget": (["--time-budget", ""], ["--time-budget ''", "3600"]),
    "empty name": (["--name", ""], ["--name '' is not a safe sweep name", "A-Z a-z 0-9 . _ -"]),
    "name with a newline": (["--name", "a\nb"], ["--name 'a\\nb' is not a safe sweep name"]),
    "name with a space": (["--name", "a b"], ["--name 'a b' is not a safe sweep name"]),
    "name too long": (["--name", "n" * 300], ["(300 characters) is not a safe sweep name", "1 to 100"]),
    "name a device": (["--name", "NUL"], ["--name 'NUL' is not a safe sweep name"]),
    "space file exits": (["--space", "exits.py:space"], ["called sys.exit(None)", "not exit"]),
    "space function exits": (["--space", "spaces.py:exits"], ["raised SystemExit", "fix the function"]),
}
if not torch.cuda.is_available():  # CI's machine: a GPU asked of a local Ray that has none
    BAD_RUNS["GPU where there is none"] = (["--gpus-per-trial", "0.25"], ["0 CUDA GPU(s)", "leave it out"])
    BAD_RUNS["bf16 where there is no GPU"] = (["--set", "precision=bf16"], ["precision 'bf16' needs a CUDA", "fp32"])
    BAD_RUNS["cuda where there is none"] = (["--set", "device=cuda"], ["`device` is 'cuda'", "auto"])


_BATCH = """
import contextlib, io, json, os, sys
from sweep.cli import main
results = {}
for key, (cwd, argv) in json.load(sys.stdin).items():
    os.chdir(cwd)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own refusals
            code = exc.code
    results[key] = [code, err.getvalue()]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory):
    """Every BAD_RUNS row through the CLI's real ``main`` in one interpreter (one torch import, not fifty), each in
    a directory of its own; with RAY_TMPDIR set, so that a Ray started by any row would show."""
    base = tmp_path_factory.mktemp("bad-runs")
    todo = {}
    for i, (key, (args, _)) in enumerate(BAD_RUNS.items()):
        cwd = base / f"row{i}"
        cwd.mkdir()
        (cwd / "syntax.py").write_text(SYNTAX_ERROR_SPACE)
        (cwd / "spaces.py").write_text(USER_SPACES)
        (cwd / "exits.py").write_text("import sys\nsys.exit()\n")
        todo[key] = (str(cwd), ["run", "--storage", "store", "--num-samples", "2", *args])
    before = {key: _files(Path(cwd)) for key, (cwd, _) in todo.items()}
    ray_tmp = base / "ray"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-c", _BATCH], input=json.dumps(todo), capture_output=True, text=True,
                          timeout=600, env={**env, "RAY_TMPDIR": str(ray_tmp)})
    assert proc.returncode == 0, proc.stderr
    assert not ray_tmp.exists(), "a refused run started Ray"
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    return {key: (code, err, _files(Path(todo[key][0])) == before[key]) for key, (code, err) in results.items()}


@pytest.mark.parametrize("expected", [e for _, e in BAD_RUNS.values()], ids=BAD_RUNS.keys())
def test_bad_run_input_is_one_line_and_nothing_is_written(expected, bad_runs, request):
    code, err, untouched = bad_runs[request.node.callspec.id]
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    line = lines[0]
    assert line.startswith("sweep run: error: ")
    for text in expected:
        assert text in line
    assert untouched, f"files were written: {line}"


def test_storage_that_cannot_be_written_is_refused_before_anything_is_made(tmp_path):
    (tmp_path / "afile").write_text("not a directory")
    line = _refused(tmp_path, "run", "--storage", str(tmp_path / "afile" / "sub"), "--num-samples", "2")
    assert "afile is not a directory" in line and "choose another --storage" in line
    assert (tmp_path / "afile").read_text() == "not a directory"


def test_storage_that_cannot_be_created_is_one_line_even_for_root(tmp_path):
    """Root passes every os.access check; the mkdir under /proc fails, and that failure is the one line."""
    line = _refused(tmp_path, "run", "--storage", "/proc/no-such-place", "--num-samples", "1")
    assert "/proc/no-such-place" in line and "choose another --storage" in line


def test_an_unreachable_object_store_is_one_line(tmp_path):
    line = _refused(tmp_path, "run", "--num-samples", "1", "--storage",
                    "s3://bucket/x?endpoint_override=127.0.0.1:1&scheme=http")
    assert "storage s3://bucket/x" in line and "127.0.0.1:1" in line and "choose another --storage" in line


def test_train_and_report_refuse_an_out_they_cannot_write(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 1\n")
    (tmp_path / "afile").write_text("keep")
    line = _refused(tmp_path, "train", "--config", str(cfg), "--out", str(tmp_path / "afile"))
    assert "--out" in line and "is a file, not a directory" in line
    assert (tmp_path / "afile").read_text() == "keep"
    line = _refused(tmp_path, "train", "--config", str(cfg), "--out", "/proc/no-such/run")
    assert "cannot write /proc/no-such" in line and "choose another --out" in line
    _make_sweep(tmp_path / "store", "x", finished=1)
    line = _refused(tmp_path, "report", "x", "--storage", "store", "--out", "/proc/no-such/report")
    assert line.startswith("sweep report: error: ") and "choose another --out" in line


def test_printed_commands_are_quoted_for_the_shell(tmp_path):
    _make_sweep(tmp_path / "my store", "x")
    line = _refused(tmp_path, "run", "--storage", "my store", "--name", "x")
    assert f"`sweep resume x --storage '{tmp_path / 'my store'}'`" in line


def test_names_of_existing_sweeps_cannot_leave_the_storage(tmp_path):
    for name in ("../x", "a/b", ".."):
        line = _refused(tmp_path, "status", name, "--storage", "store")
        assert "is not a sweep name" in line


@pytest.mark.parametrize("space", ["digits", "stl10_hcl"], ids=["same space", "another space"])
def test_run_of_an_existing_name_points_to_resume_or_another_name(space, tmp_path):
    _make_sweep(tmp_path / "store", "x")
    (tmp_path / "stl" / "stl10_binary").mkdir(parents=True)  # enough for stl10_hcl's dataset check
    line = _refused(tmp_path, "run", "--space", space, "--data-root", "stl", "--storage", "store", "--name", "x")
    assert "sweep 'x' already exists" in line
    assert "`sweep resume x --storage " in line and "another --name" in line
    if space != "digits":
        assert "with space 'digits', not 'stl10_hcl'" in line


def test_run_into_a_directory_that_is_not_a_sweep_is_refused(tmp_path):
    (tmp_path / "store" / "x").mkdir(parents=True)
    (tmp_path / "store" / "x" / "mine.txt").write_text("keep")
    line = _refused(tmp_path, "run", "--storage", "store", "--name", "x", "--num-samples", "2")
    assert "is not a sweep" in line and "another --name" in line


def test_resume_of_a_missing_sweep(tmp_path):
    line = _refused(tmp_path, "resume", "ghost", "--storage", "store")
    assert line.startswith("sweep resume: error: ") and "no sweep 'ghost'" in line and "--storage" in line
    assert not (tmp_path / "store").exists()


def test_resume_of_a_finished_sweep(tmp_path):
    _make_sweep(tmp_path / "store", "x", finished=4, driver={"state": "finished", "sessions": []})
    line = _refused(tmp_path, "resume", "x", "--storage", "store")
    assert "sweep 'x' already finished (4 of 4 trials)" in line
    assert "sweep status x" in line and "sweep run --name" in line


def test_resume_of_a_running_sweep_is_refused(tmp_path):
    now = time.time()
    live = {"started": now, "heartbeat": now, "host": socket.gethostname(), "pid": os.getpid()}  # this process
    _make_sweep(tmp_path / "store", "x", finished=1, driver={"state": "running", "sessions": [live]})
    line = _refused(tmp_path, "resume", "x", "--storage", "store")
    assert "sweep 'x' is running" in line and f"pid {os.getpid()}" in line and "sweep status" in line


def test_resume_with_no_cluster_at_the_address(tmp_path):
    _make_sweep(tmp_path / "store", "x", finished=1, driver={"state": "interrupted", "sessions": []})
    line = _refused(tmp_path, "resume", "x", "--storage", "store", "--address", "127.0.0.1:1")
    assert "no Ray cluster answers at --address 127.0.0.1:1" in line and "ray start" in line


def test_resume_with_bad_max_concurrent(tmp_path):
    _make_sweep(tmp_path / "store", "x")
    line = _refused(tmp_path, "resume", "x", "--storage", "store", "--max-concurrent", "0")
    assert "argument --max-concurrent: 0 must be >= 1" in line


def test_status_of_a_missing_sweep(tmp_path):
    line = _refused(tmp_path, "status", "ghost", "--storage", "store")
    assert line.startswith("sweep status: error: ") and "no sweep 'ghost'" in line and "--storage" in line
    assert not (tmp_path / "store").exists()


def test_status_of_a_sweep_without_its_study(tmp_path):
    exp = _make_sweep(tmp_path / "store", "x")
    (exp / "study.db").unlink()
    line = _refused(tmp_path, "status", "x", "--storage", "store")
    assert "no study database" in line


def test_status_of_a_sweep_that_never_ran(tmp_path):
    _make_sweep(tmp_path / "store", "x", finished=1)
    proc = _sweep("status", "x", "--storage", str(tmp_path / "store"))
    assert proc.returncode == 0, proc.stderr
    assert "sweep x: not started" in proc.stdout
    assert "1 finished" in proc.stdout and "3 not started" in proc.stdout
    assert "continue with: sweep resume x --storage" in proc.stdout


def test_unknown_config_key_is_one_line_and_exit_2(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("strategy: hard\nbetaa: 1.0\n")
    line = _one_clear_line(_sweep("train", "--config", str(cfg)))
    assert "`betaa`" in line


def test_missing_dataset_root_is_one_line_and_exit_2(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"dataset": "cifar10", "data_root": str(tmp_path / "nowhere")}))
    line = _one_clear_line(_sweep("train", "--config", str(cfg)))
    assert "cifar10" in line and "nowhere" in line


def test_missing_config_file_is_one_line(tmp_path):
    _one_clear_line(_sweep("train", "--config", str(tmp_path / "none.yaml")))


def test_spaces_lists_every_study_on_one_line_each():
    proc = _sweep("spaces")
    assert proc.returncode == 0
    names = [line.split()[0] for line in proc.stdout.strip().splitlines()]
    assert names == list(SPACES)


@pytest.mark.slow
def test_train_runs_without_ray_and_resumes(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "strategy: hard\nbeta: 0.5\nepochs: 2\nlimit: 100\nwidth: 8\nproj_hidden_dim: 16\n"
        "proj_dim: 8\nprobe_epochs: 10\nbatch_size: 32\n"
    )
    out = tmp_path / "run"
    proc = _sweep("train", "--config", str(cfg), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "epoch   2/2" in proc.stdout
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert (out / "checkpoint.pt").exists() and list(out.glob("events.out.tfevents*"))
    # a second call finds the checkpoint at the last epoch and has nothing left to do
    again = _sweep("train", "--config", str(cfg), "--out", str(out))
    assert again.returncode == 0 and "resuming" in again.stdout and "epoch   2/2" not in again.stdout


@pytest.mark.slow
def test_smoke_sweep_end_to_end(tmp_path, ray_session):
    from optuna.trial import TrialState

    from sweep import ledger

    address = ray_session.get_runtime_context().gcs_address
    proc = _sweep(
        "run",
        "--smoke-test",
        "--storage",
        str(tmp_path),
        "--name",
        "smoke",
        "--address",
        address,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ranking by validation linear_acc" in proc.stdout
    exp = tmp_path / "smoke"
    assert json.loads((exp / "sweep.json").read_text())["num_samples"] == 4
    assert "| rank | strategy |" in (exp / "ranking.md").read_text()
    assert json.loads((exp / "driver.json").read_text())["state"] == "finished"
    study = ledger.open_study(str(exp))
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state in ledger.FINISHED for t in trials)
    assert any(t.state == TrialState.COMPLETE for t in trials)  # the best of rung 1 goes on to the full budget
    # session-0/NNNN_<strategy>/ per trial, named by its sweep trial number
    trial_dirs = sorted(d for d in (exp / "session-0").iterdir() if d.is_dir() and (d / "params.json").exists())
    assert len(trial_dirs) == 4
    for number, d in enumerate(trial_dirs):
        params = json.loads((d / "params.json").read_text())
        assert d.name == f"{number:04d}_{params['strategy']}"
        assert params["sweep_trial"] == number and params["sweep_session"] == 0
        assert list(d.glob("events.out.tfevents*")), f"no TensorBoard events in {d}"
        rows = [json.loads(line) for line in (d / "result.json").read_text().splitlines()]
        assert rows and {"epoch", "loss", "linear_acc", "knn_acc", "time_train_s"} <= set(rows[-1])
        checkpoints = sorted(d.glob("checkpoint_*"))
        assert checkpoints and all((c / "state.pt").exists() and (c / "history.json").exists() for c in checkpoints)
        history = json.loads((checkpoints[-1] / "history.json").read_text())
        assert [r["epoch"] for r in history] == list(range(1, rows[-1]["epoch"] + 1))
        assert trials[number].intermediate_values == {r["epoch"]: r["linear_acc"] for r in history}
        assert not (d / ".staging").exists() or not any((d / ".staging").iterdir())
    strategies = {json.loads((d / "params.json").read_text())["strategy"] for d in trial_dirs}
    assert len(strategies) == 4  # round-robin: four trials, four different strategies
    status = _sweep("status", "smoke", "--storage", str(tmp_path))
    assert status.returncode == 0 and "sweep smoke: finished" in status.stdout, status.stdout + status.stderr
    # the report's best configuration, retrained without Ray, gives the very score the sweep reported
    report = _sweep("report", "smoke", "--storage", str(tmp_path))
    assert report.returncode == 0, report.stderr
    best = exp / "report" / "best_config.yaml"
    reported = float(best.read_text().splitlines()[0].split("linear_acc ")[1].split()[0])
    retrain = _sweep("train", "--config", str(best), "--out", str(tmp_path / "retrain"))
    assert retrain.returncode == 0, retrain.stderr
    last = json.loads((tmp_path / "retrain" / "metrics.jsonl").read_text().splitlines()[-1])
    assert round(last["linear_acc"], 4) == reported, (last, best.read_text())


def test_local_ray_listens_on_loopback_only(ray_session):
    import psutil

    port = int(ray_session.get_runtime_context().gcs_address.rsplit(":", 1)[1])
    listening = [
        c.laddr.ip for c in psutil.net_connections(kind="inet") if c.status == "LISTEN" and c.laddr.port == port
    ]
    assert listening, "the GCS port is not listening"
    assert all(ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for ip in listening), listening


def test_set_values_are_typed_like_yaml_with_exponents_as_numbers():
    from sweep.cli import parse_duration, parse_sets

    assert parse_sets(["lr=1e-3", "batch_size=64", "variant=band", "limit=null", "t=2.5E+1"]) == {
        "lr": 0.001,
        "batch_size": 64,
        "variant": "band",
        "limit": None,
        "t": 25.0,
    }
    assert [parse_duration(x) for x in ("90", "90m", "2h", "1.5d")] == [90.0, 5400.0, 7200.0, 129600.0]


def test_output_into_a_closed_pipe_is_not_a_traceback(tmp_path):
    # `sweep spaces | head -0`: the reader closes the pipe before sweep writes
    proc = subprocess.run(
        f"{SWEEP} spaces | head -c 0", shell=True, capture_output=True, text=True, timeout=120
    )
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("thread", [False, True])
def test_the_console_script_exits_with_mains_code_after_the_atexit_handlers(thread, tmp_path):
    # entry() skips the interpreter's teardown, never the atexit handlers (Ray's shutdown) nor a working thread
    script = tmp_path / "entry.py"
    script.write_text(
        "import atexit, sys, threading, time\n"
        "import sweep.cli as cli\n"
        "atexit.register(lambda: print('atexit ran', flush=True))\n"
        "def main():\n"
        f"    if {thread}:\n"
        "        threading.Thread(target=lambda: (time.sleep(0.5), print('thread done', flush=True))).start()\n"
        "    sys.stdout.write('buffered answer')\n"
        "    return 3\n"
        "cli.main = main\n"
        "cli.entry()\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.startswith("buffered answer") and "atexit ran" in proc.stdout, proc.stdout
    assert ("thread done" in proc.stdout) == thread, proc.stdout


def test_trial_resources_come_from_the_command_line_else_the_study_else_the_cluster():
    from dataclasses import replace

    from search_spaces import SPACES
    from sweep.plan import SweepSettings, cpus_per_trial, default_concurrency, gpus_per_trial

    study, s = SPACES["digits"], SweepSettings()
    packed = replace(study, cpus_per_trial=2, gpus_per_trial=0.25)
    gpu_box, cpu_box = {"CPU": 16, "GPU": 1}, {"CPU": 2}
    assert (cpus_per_trial(s, study), gpus_per_trial(s, study, gpu_box), gpus_per_trial(s, study, cpu_box)) == (1, 1, 0)
    assert (cpus_per_trial(s, packed), gpus_per_trial(s, packed, gpu_box)) == (2, 0.25)
    out = io.StringIO()
    assert gpus_per_trial(s, packed, cpu_box, out) == 0 and "trials run on the CPU" in out.getvalue()
    assert gpus_per_trial(replace(s, address="10.0.0.1:6379"), packed, cpu_box) == 0.25  # an autoscaler may add GPUs
    cli = replace(s, cpus_per_trial=3, gpus_per_trial=0.5)
    assert (cpus_per_trial(cli, packed), gpus_per_trial(cli, packed, gpu_box)) == (3, 0.5)
    assert default_concurrency(gpu_box, 3, 0.25) == 4 and default_concurrency(gpu_box, 2, 0.5) == 2
    assert default_concurrency(cpu_box, 1, 0) == 2
