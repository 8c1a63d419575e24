"""Kill the real thing and resume it: the driver (SIGKILL at several points, SIGTERM), a trial's worker process, and
a configuration whose loss goes non-finite. Every assertion is read back from the files the sweep leaves on disk.

Each driver is a subprocess of the real `sweep` CLI connected to the session's one local Ray (``ray_session``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from search_spaces import SPACES
from sweep import claim, ledger
from sweep.study import SweepSearcher

SWEEP = str(Path(sys.executable).with_name("sweep"))
POLL_TIMEOUT_S = 180
RUN_TIMEOUT_S = 420
N, EPOCHS = 4, 4  # ASHA on 4 epochs: rungs at 1 and 2
TRIAL_DIR = re.compile(r"(\d{4})_(\w+)")


# --- driving the CLI -------------------------------------------------------------------------------------------


def _address(ray_session) -> str:
    return ray_session.get_runtime_context().gcs_address


def _start(log: Path, *args: str) -> subprocess.Popen:
    """A `sweep` driver in the background, stdout and stderr to ``log``."""
    with open(log, "wb") as f:
        return subprocess.Popen([SWEEP, *args], stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ))


def _smoke_run(storage: Path, name: str, address: str) -> list[str]:
    """`sweep run` of the kill tests: N smoke trials of EPOCHS epochs, two at a time, on the session's Ray."""
    return [
        "run", "--smoke-test", "--num-samples", str(N), "--epochs", str(EPOCHS), "--max-concurrent", "2",
        "--storage", str(storage), "--name", name, "--address", address,
    ]


def _sweep(*args: str, timeout: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run([SWEEP, *args], capture_output=True, text=True, timeout=timeout, env=dict(os.environ))


def _stop(proc: subprocess.Popen | None) -> None:
    """Kill a driver that is still running (a failed test must not leave one behind)."""
    if proc is not None and proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _wait_for(what: str, cond, proc: subprocess.Popen, log: Path, timeout: float = POLL_TIMEOUT_S):
    """Poll ``cond()`` until it returns something truthy; fail if the driver exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = cond()
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"the driver exited ({proc.returncode}) before {what}:\n{log.read_text()[-4000:]}")
        time.sleep(0.05)
    pytest.fail(f"no {what} within {timeout} s:\n{log.read_text()[-4000:]}")


def _wait_workers_gone(ray_session, exp: Path, timeout: float = 120) -> None:
    """After the driver died: wait until Ray has killed its trial workers, so that nothing writes to the sweep
    directory any more (every CPU free again, every worker pid on disk gone)."""
    deadline = time.monotonic() + timeout
    total = ray_session.cluster_resources().get("CPU", 0)
    while time.monotonic() < deadline:
        pids = {row["pid"] for s in ledger.newest_checkpoints(str(exp)).values() for row in s.history}
        if ray_session.available_resources().get("CPU", 0) >= total and not any(_alive(p) for p in pids):
            time.sleep(0.5)  # a last checkpoint copy in flight
            return
        time.sleep(0.2)
    pytest.fail("the killed driver's trial workers still hold the cluster")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lines(log: Path) -> list[str]:
    return log.read_text(errors="replace").splitlines() if log.exists() else []


def _started(log: Path, number: int | None = None) -> bool:
    pattern = re.compile(r"\] start  #" + (str(number) if number is not None else r"\d+") + " ")
    return any(pattern.search(line) for line in _lines(log))


# --- reading the sweep back from disk --------------------------------------------------------------------------


def _trials(exp: Path) -> list:
    study = ledger.open_study(str(exp))
    assert study is not None, f"no study in {exp}"
    return study.get_trials()


def _trial_dirs(exp: Path) -> dict[int, dict[int, Path]]:
    """{session: {trial number: its directory}} for every session-K/ of the sweep."""
    out: dict[int, dict[int, Path]] = {}
    for session in sorted(exp.glob(f"{ledger.SESSION_PREFIX}*")):
        k = int(session.name[len(ledger.SESSION_PREFIX) :])
        out[k] = {}
        for d in session.iterdir():
            if not d.is_dir() or d.name.startswith("."):
                continue
            m = TRIAL_DIR.fullmatch(d.name)
            assert m, f"{d} is not a trial directory (NNNN_<strategy>)"
            assert int(m.group(1)) not in out[k], f"two directories for trial {m.group(1)} in {session}"
            out[k][int(m.group(1))] = d
    return out


def _snapshot(exp: Path) -> tuple[dict[int, TrialState], dict[int, int]]:
    """What the disk says after a kill: each trial's state in study.db, and its newest checkpoint's epoch."""
    states = {t.number: t.state for t in _trials(exp)}
    epochs = {number: saved.epoch for number, saved in ledger.newest_checkpoints(str(exp)).items()}
    return states, epochs


def _check_complete_sweep(exp: Path, n: int, epochs: int) -> tuple[list, dict]:
    """Invariants of any finished sweep: n trials 0..n-1, all finished, distinct configurations, no orphan
    directory, every history 1..k contiguous and equal to what Optuna was told."""
    trials = _trials(exp)
    assert [t.number for t in trials] == list(range(n))
    assert all(t.state in ledger.FINISHED for t in trials), [(t.number, t.state) for t in trials]
    configs = [json.dumps(t.user_attrs["config"], sort_keys=True) for t in trials]
    assert len(set(configs)) == n, "two trials ran the same configuration"
    params = [json.dumps(t.params, sort_keys=True) for t in trials]
    assert len(set(params)) == n, "two trials have the same Optuna params"
    # the strategy is assigned round-robin, so distinct params alone would miss a sampler that replays its draws
    # after a resume: a continuous suggestion never repeats by chance
    for key in {k for t in trials for k, v in t.params.items() if isinstance(v, float)}:
        values = [t.params[key] for t in trials if key in t.params]
        assert len(set(values)) == len(values), f"two trials drew the same {key}: {values}"
    for dirs in _trial_dirs(exp).values():
        for number, d in dirs.items():
            assert number < n, f"orphan trial directory {d}"
            assert d.name == ledger.trial_dirname(number, trials[number].user_attrs["config"]["strategy"]), d
    saved = ledger.newest_checkpoints(str(exp))
    for t in trials:
        assert t.number in saved, f"trial {t.number} has no checkpoint"
        history = saved[t.number].history
        assert [r["epoch"] for r in history] == list(range(1, len(history) + 1)), (t.number, history)
        assert all(r["trial"] == t.number for r in history)
        assert t.intermediate_values == {r["epoch"]: r["linear_acc"] for r in history if "linear_acc" in r}, t.number
        if t.state == TrialState.COMPLETE:
            assert len(history) == epochs and t.value == history[-1]["linear_acc"]
        elif t.state == TrialState.PRUNED:
            assert len(history) < epochs
    return trials, saved


def _check_resumed(exp: Path, before: dict[int, TrialState], at_kill: dict[int, int]) -> dict[int, str]:
    """What a resume after a kill must have done; returns how each trial was treated (kept / continued /
    ended / new)."""
    trials, saved = _check_complete_sweep(exp, N, EPOCHS)
    dirs = _trial_dirs(exp)
    assert set(dirs) <= {0, 1}, f"expected session-0 and session-1 only, found {sorted(dirs)}"
    dirs.setdefault(0, {})
    dirs.setdefault(1, {})
    how = {}
    for t in trials:
        history = saved[t.number].history
        rows0 = [r["epoch"] for r in history if r["session"] == 0]
        rows1 = [r["epoch"] for r in history if r["session"] == 1]
        assert len(rows0) + len(rows1) == len(history)
        c = at_kill.get(t.number, 0)
        # these smoke configurations train fine: a failure here is the resume's (say, an unloadable checkpoint)
        assert t.state != TrialState.FAIL, (t.number, t.user_attrs.get("reason"))
        if before.get(t.number) in ledger.FINISHED:
            # finished before the kill: kept as it was, never run again
            how[t.number] = "kept"
            assert t.state == before[t.number], t.number
            assert t.number not in dirs[1], f"trial {t.number} finished before the kill but ran again"
            assert rows1 == [] and rows0 == list(range(1, c + 1)), (t.number, history)
            continue
        # unfinished at the kill (or never asked): its session-0 epochs are kept, session 1 goes on from them
        assert rows0 == list(range(1, c + 1)), (t.number, c, history)
        if t.number not in before:
            how[t.number] = "new"
            assert t.number not in dirs[0] and c == 0
        if rows1:
            how.setdefault(t.number, "continued")
            assert rows1[0] == c + 1, f"trial {t.number} had epoch {c} on disk but session 1 began at {rows1[0]}"
            assert t.number in dirs[1]
        else:
            # the reconcile judged it from its checkpoint: complete at full budget, or stopped by ASHA
            how[t.number] = "ended"
            assert c >= 1 and t.number not in dirs[1], (t.number, c)
            assert t.state == (TrialState.COMPLETE if c == EPOCHS else TrialState.PRUNED), (t.number, t.state)
            if t.state == TrialState.PRUNED:
                assert "scheduler" in t.user_attrs.get("reason", ""), t.user_attrs
    return how


def _check_finished_for_good(name: str, storage: Path) -> None:
    status = _sweep("status", name, "--storage", str(storage), timeout=120)
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[0].startswith(f"sweep {name}: finished"), status.stdout
    assert "sweep resume" not in status.stdout
    again = _sweep("resume", name, "--storage", str(storage), timeout=120)
    assert again.returncode == 2, again.stdout + again.stderr
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and "already finished" in lines[0], again.stderr


# --- 1. the driver killed (SIGKILL) at several points, then `sweep resume` -------------------------------------


def _no_history(exp: Path) -> bool:
    return not list(exp.glob("session-*/*/checkpoint_*/history.json"))


def _checkpoint_where(exp: Path, test) -> dict[int, int]:
    found = {n: s.epoch for n, s in ledger.newest_checkpoints(str(exp)).items() if test(s)}
    return found


def _mid_trial(s: ledger.Saved) -> bool:
    return 1 <= s.epoch < EPOCHS and not s.history[-1].get("stop_reason")


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["before_first_result", "mid_trial", "trial_just_finished", "last_trial"])
def test_driver_sigkill_then_resume(kill_at, tmp_path, ray_session):
    address, name, storage = _address(ray_session), "killed", tmp_path / "store"
    exp, log = storage / name, tmp_path / "run.log"
    proc = None
    try:
        proc = _start(log, *_smoke_run(storage, name, address))
        if kill_at == "before_first_result":
            _wait_for("a trial start", lambda: _started(log), proc, log)
            assert _no_history(exp), "a trial reported before the kill point"
        elif kill_at == "mid_trial":
            _wait_for("a checkpoint mid-trial", lambda: _checkpoint_where(exp, _mid_trial), proc, log)
        elif kill_at == "trial_just_finished":
            _wait_for("a final checkpoint", lambda: _checkpoint_where(exp, lambda s: s.epoch == EPOCHS), proc, log)
        else:
            _wait_for(f"the start of trial #{N - 1}", lambda: _started(log, N - 1), proc, log)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        _wait_workers_gone(ray_session, exp)

        before, at_kill = _snapshot(exp)
        assert before, "the driver was killed before it asked for any trial"
        running = [n for n, s in before.items() if s == TrialState.RUNNING]
        assert running, f"no trial was in flight at the kill: {before}"
        if kill_at == "before_first_result":
            assert 0 in running
        elif kill_at == "mid_trial":
            assert any(before[n] == TrialState.RUNNING and 1 <= c < EPOCHS for n, c in at_kill.items()), at_kill
        elif kill_at == "trial_just_finished":
            assert EPOCHS in at_kill.values(), at_kill
        else:
            assert len(before) == N and before[N - 1] == TrialState.RUNNING
        driver = json.loads((exp / ledger.DRIVER_FILE).read_text())
        assert driver["state"] == "running" and len(driver["sessions"]) == 1  # SIGKILL: nothing got to say so
        left = claim.read_claim(str(exp))  # the dead driver's claim is still there, and known to be stale
        assert left["pid"] == proc.pid and claim.is_stale(str(exp), left)
        status = _sweep("status", name, "--storage", str(storage), timeout=120)
        assert status.returncode == 0 and "interrupted" in status.stdout.splitlines()[0], status.stdout
        assert f"sweep resume {name}" in status.stdout

        resumed = _sweep("resume", name, "--storage", str(storage), "--address", address)
        assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-4000:]
        asked = len([s for s in before.values() if s in ledger.ASKED])
        assert f"{N - asked} to start" in resumed.stdout, resumed.stdout

        how = _check_resumed(exp, before, at_kill)
        if kill_at == "mid_trial":  # the point of the case: a trial went on from its mid-trial checkpoint
            assert any(how[n] == "continued" and 1 <= at_kill.get(n, 0) for n in how), (how, at_kill)
        if kill_at == "trial_just_finished":
            for n, c in at_kill.items():
                if c == EPOCHS:
                    assert how[n] in ("kept", "ended") and before[n] != TrialState.PRUNED, (n, how, before)
        driver = json.loads((exp / ledger.DRIVER_FILE).read_text())
        assert driver["state"] == "finished" and len(driver["sessions"]) == 2, driver
        assert claim.read_claim(str(exp)) is None  # resume took the claim over, and let it go when it ended
        if kill_at == "mid_trial":  # the CLI's view of a finished sweep (seconds each: checked in two tests)
            _check_finished_for_good(name, storage)
    finally:
        _stop(proc)


# --- 2. the driver stopped gracefully (SIGTERM), then `sweep resume` --------------------------------------------


@pytest.mark.slow
def test_driver_sigterm_stops_with_hint_then_resume(tmp_path, ray_session):
    address, name, storage = _address(ray_session), "termed", tmp_path / "store"
    exp, log = storage / name, tmp_path / "run.log"
    proc = None
    try:
        proc = _start(log, *_smoke_run(storage, name, address))
        _wait_for("a checkpoint mid-trial", lambda: _checkpoint_where(exp, _mid_trial), proc, log)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=POLL_TIMEOUT_S) == 130, log.read_text()[-4000:]
        out = log.read_text()
        assert f"sweep resume {name}" in out, out[-4000:]
        assert "KeyboardInterrupt" not in out, out[-4000:]
        driver = json.loads((exp / ledger.DRIVER_FILE).read_text())
        assert driver["state"] == "interrupted", driver
        _wait_workers_gone(ray_session, exp)

        before, at_kill = _snapshot(exp)
        # a graceful stop must leave the trials in flight resumable, not mark them stopped or failed
        assert any(s == TrialState.RUNNING for s in before.values()), before

        resumed = _sweep("resume", name, "--storage", str(storage), "--address", address)
        assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-4000:]
        how = _check_resumed(exp, before, at_kill)
        assert "continued" in how.values() or "new" in how.values(), how
        _check_finished_for_good(name, storage)
    finally:
        _stop(proc)


# --- 3. a trial's worker process killed: Ray retries it from its last checkpoint --------------------------------

USER_SPACE = """
def space(trial):
    trial.suggest_categorical("strategy", ["infonce"])
    trial.suggest_float("lr", 1e-3, 2e-3)
    return {"dataset": "digits", "epochs": 4}
"""


@pytest.mark.slow
def test_killed_worker_is_retried_from_its_checkpoint(tmp_path, ray_session):
    space = tmp_path / "one_space.py"
    space.write_text(USER_SPACE)
    address, name, storage = _address(ray_session), "worker", tmp_path / "store"
    exp, log = storage / name, tmp_path / "run.log"
    epochs = 12  # --epochs outranks the space's 4: room to kill the worker mid-trial, even on a loaded machine
    proc = None
    try:
        # one trial: the first trial at a rung always passes, so ASHA never stops it
        proc = _start(
            log,
            "run",
            "--space",
            f"{space}:space",
            "--smoke-test",
            "--epochs",
            str(epochs),
            "--num-samples",
            "1",
            "--max-concurrent",
            "1",
            "--storage",
            str(storage),
            "--name",
            name,
            "--address",
            address,
        )
        # Tune registers a checkpoint only once it has processed the epoch's result; a worker killed before that is
        # retried from the previous one. The driver has told Optuna of epoch 2 only after registering epoch 1's.
        study = []

        def driver_heard_epoch_2() -> bool:
            if not study:  # opened once a checkpoint exists: by then the study is surely created
                study.append(ledger.open_study(str(exp)))
            trials = study[0].get_trials(deepcopy=False)
            return bool(trials) and max(trials[0].intermediate_values, default=0) >= 2

        _wait_for("trial 0's first checkpoint", lambda: _checkpoint_where(exp, lambda s: s.epoch >= 1), proc, log)
        _wait_for("the driver hearing of epoch 2", driver_heard_epoch_2, proc, log)
        saved = ledger.newest_checkpoints(str(exp))[0]
        killed_epoch, pid = saved.epoch, saved.history[-1]["pid"]
        assert killed_epoch < epochs, "trial 0 finished before its worker could be killed"
        os.kill(pid, signal.SIGKILL)
        assert proc.wait(timeout=RUN_TIMEOUT_S) == 0, log.read_text()[-4000:]
        out = log.read_text()
        assert "retry #0" in out, out[-4000:]

        trials, saved = _check_complete_sweep(exp, 1, epochs)
        assert trials[0].state == TrialState.COMPLETE, (trials[0].state, trials[0].user_attrs)
        history = saved[0].history
        assert [r["epoch"] for r in history] == list(range(1, epochs + 1))
        assert all(r["session"] == 0 for r in history)
        pids = [r["pid"] for r in history]
        # the killed worker's epochs up to the checkpoint Tune retried from are kept (at least epoch 1: not from
        # scratch); every later epoch was trained by another process
        n_killed = pids.count(pid)
        assert 1 <= n_killed <= killed_epoch and pids[:n_killed] == [pid] * n_killed, (pid, killed_epoch, pids)
        assert n_killed < len(pids), (pid, pids)
        assert not _alive(pid)
    finally:
        _stop(proc)


# --- 4. a diverging configuration: the trials fail with a reason, the sweep finishes ---------------------------


@pytest.mark.slow
def test_non_finite_loss_fails_trials_with_a_reason(tmp_path, ray_session):
    name, storage = "diverge", tmp_path / "store"
    exp = storage / name
    # temperature 1e-38 overflows the logits on the first batch (0.0001 only collapses the embeddings)
    proc = _sweep(
        "run",
        "--smoke-test",
        "--num-samples",
        "2",
        "--strategies",
        "infonce,hard",
        "--set",
        "temperature=1e-38",
        "--set",
        "lr=10",
        "--storage",
        str(storage),
        "--name",
        name,
        "--address",
        _address(ray_session),
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "2 trial(s) failed" in proc.stdout, proc.stdout
    trials, saved = _check_complete_sweep(exp, 2, 2)
    assert {t.user_attrs["config"]["strategy"] for t in trials} == {"infonce", "hard"}
    for t in trials:
        assert t.state == TrialState.FAIL, (t.number, t.state)
        last = saved[t.number].history[-1]
        assert last["stop_reason"] == "non-finite loss", last
        assert t.user_attrs["reason"] == f"non-finite loss at epoch {last['epoch']}", t.user_attrs
    status = _sweep("status", name, "--storage", str(storage), timeout=120)
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[0].startswith(f"sweep {name}: finished"), status.stdout
    assert "2 failed" in status.stdout
    for t in trials:
        strategy = t.user_attrs["config"]["strategy"]
        assert f"#{t.number} {strategy}: non-finite loss at epoch 1" in status.stdout, status.stdout


# --- 5. a time budget: the sweep ends, the trials it cut are told to Optuna -------------------------------------


@pytest.mark.slow
def test_time_budget_ends_the_sweep_and_tells_optuna_of_cut_trials(tmp_path, ray_session):
    name, storage = "budget", tmp_path / "store"
    exp = storage / name
    # The budget binds by construction, on any machine: no trial finishes 100000 epochs in 15 s (that would be
    # thousands of epochs a second), so the running trials are cut and the rest never start.
    proc = _sweep(
        "run", "--smoke-test", "--num-samples", "6", "--epochs", "100000", "--max-concurrent", "2",
        "--time-budget", "15", "--storage", str(storage), "--name", name, "--address", _address(ray_session),
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "time budget of 15 s spent" in proc.stdout, proc.stdout
    trials = _trials(exp)
    assert 1 <= len(trials) < 6
    assert all(t.state in ledger.FINISHED for t in trials), [(t.number, t.state) for t in trials]
    cut = [t for t in trials if "time budget" in t.user_attrs.get("reason", "")]
    assert cut and all(t.state == TrialState.PRUNED for t in cut), [(t.state, t.user_attrs) for t in trials]
    saved = ledger.newest_checkpoints(str(exp))
    for t in cut:  # Optuna holds every epoch the cut trial reached, and the reason names it
        history = saved[t.number].history if t.number in saved else []
        assert t.intermediate_values == {r["epoch"]: r["linear_acc"] for r in history if "linear_acc" in r}
        reason = t.user_attrs["reason"]  # the default study scores only its rungs: epoch 277 has no score to tell
        assert f"at epoch {len(history)}" in reason if history else reason.endswith("before its first epoch")
    _check_finished_for_good(name, storage)


# --- 6. the driver killed between enqueueing a trial's strategy and asking for the trial -------------------------


def _asks(study, session: int, trial_ids: range) -> None:
    searcher = SweepSearcher(
        study,
        SPACES["digits"].space,
        metric="linear_acc",
        mode="max",
        epochs=EPOCHS,
        num_samples=N,
        strategies=("infonce", "debiased", "hard"),
        seed=0,
        session=session,
        log=lambda msg: None,
    )
    for i in trial_ids:
        assert isinstance(searcher.suggest(f"t{i}"), dict)


@pytest.mark.slow
def test_trial_enqueued_but_never_asked_resumes_as_if_uninterrupted():
    """A kill can fall between the strategy's enqueue (committed: a WAITING trial) and the ask. The resumed driver
    must ask that trial with the sampler seed of its own number, or the next trial replays its draws."""
    import optuna

    whole = optuna.create_study(direction="maximize")
    _asks(whole, 0, range(N))
    killed = optuna.create_study(direction="maximize")
    _asks(killed, 0, range(2))
    killed.enqueue_trial({"strategy": "hard"})  # what trial 2's _ask had committed when the driver died
    _asks(killed, 1, range(2, N))
    assert [t.state for t in killed.trials] == [TrialState.RUNNING] * N
    assert [t.params for t in killed.trials] == [t.params for t in whole.trials]
