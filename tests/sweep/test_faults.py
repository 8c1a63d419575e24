"""The CLI's one rule for what goes wrong: a bug, a storage that fails (a full disk among them), files others read."""

from __future__ import annotations

import errno
import os
import shlex
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

SWEEP = str(Path(sys.executable).with_name("sweep"))


def _cli(code: str, *, cwd: Path) -> subprocess.CompletedProcess:
    """``sweep.cli.main`` in a fresh interpreter after ``code`` ran (to plant a bug), as the console script runs it."""
    script = f"import sys\n{code}\nfrom sweep.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", script, "run", "--storage", "store", "--num-samples", "1"],
                          capture_output=True, text=True, timeout=120, cwd=cwd)


def test_a_bug_is_one_line_that_says_so_and_where_its_traceback_is(tmp_path):
    proc = _cli("import sweep.runner\ndef broken(s): raise TypeError('planted')\nsweep.runner.plan = broken",
                cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert "internal error (TypeError: planted)" in lines[0] and "this is a bug" in lines[0]
    log = Path(lines[0].rsplit("traceback is in ", 1)[1])
    assert "Traceback" in log.read_text() and "TypeError: planted" in log.read_text()
    assert stat.S_IMODE(log.stat().st_mode) == 0o600  # a traceback may hold paths and settings: the user's alone
    log.unlink()


def test_a_plain_value_error_deep_inside_is_a_bug_not_the_users_mistake(tmp_path):
    proc = _cli("import sweep.runner\ndef broken(s): raise ValueError('deep')\nsweep.runner.plan = broken",
                cwd=tmp_path)
    assert proc.returncode == 1 and "internal error (ValueError: deep)" in proc.stderr, proc.stderr
    Path(proc.stderr.strip().rsplit("traceback is in ", 1)[1]).unlink()


def test_an_os_error_from_the_storage_is_one_line_naming_the_path_and_the_cause(tmp_path):
    code = ("import errno, os, sweep.runner\n"
            "def full(*a, **k): raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), '/data/x/sweep.json')\n"
            "sweep.runner.write_atomic = full")
    proc = _cli(code, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        "sweep run: error: cannot write /data/x/sweep.json: No space left on device; fix it, or choose another "
        "--storage"
    )


def test_storage_problems_are_found_through_exception_chains_and_messages():
    from sweep.errors import is_storage_fault, storage_problem

    inner = OSError(errno.EACCES, "Permission denied", "/s/x/study.db")
    try:
        try:
            raise inner
        except OSError as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError as outer:
        assert storage_problem(outer) == "cannot write /s/x/study.db: Permission denied"
    assert storage_problem(RuntimeError("(sqlite3.OperationalError) database or disk is full")) is not None
    assert storage_problem(RuntimeError("a bug")) is None
    assert is_storage_fault("error after 1 attempt: OSError: [Errno 28] No space left on device")
    assert not is_storage_fault("error after 3 attempts: RuntimeError: CUDA out of memory")


def test_a_trial_stopped_by_a_full_disk_is_left_for_resume_not_failed(tmp_path):
    import optuna

    from sweep.study import SweepSearcher

    study = optuna.create_study(direction="maximize")

    def space(trial):
        trial.suggest_categorical("strategy", ["infonce"])
        return {"task": "image"}

    searcher = SweepSearcher(study, space, metric="linear_acc", mode="max", epochs=2, num_samples=2,
                             strategies=("infonce",), seed=0, session=0)
    searcher.suggest("t0")
    error = tmp_path / "error.txt"
    error.write_text("Failure # 1\nOSError: [Errno 28] Error writing bytes to file. No space left on device\n")
    searcher.trials["t0"] = type("T", (), {"error_file": str(error), "run_metadata": None})()
    searcher.on_trial_complete("t0", None, error=True)
    assert searcher.storage_fault and "No space left on device" in searcher.storage_fault
    assert study.trials[0].state == optuna.trial.TrialState.RUNNING  # `sweep resume` continues it


def test_printed_commands_can_be_pasted_whatever_the_storage_path(tmp_path):
    from sweep.storage import command

    storage = tmp_path / "my sweeps; rm -rf x"
    line = command("resume", "n1", str(storage))
    assert shlex.split(line) == ["sweep", "resume", "n1", "--storage", str(storage)]
    assert command("status", "n1", "./sweeps") == "sweep status n1"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_files_are_created_with_the_umask_and_secrets_stay_private(tmp_path, umask, mode):
    from sweep.storage import write_atomic
    from trainables.files import write_atomic as local_write_atomic

    old = os.umask(umask)
    try:
        write_atomic(str(tmp_path / "report.html"), "<html></html>")
        local_write_atomic(tmp_path / "token", b"secret", private=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "report.html").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "token").stat().st_mode) == 0o600


def _tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the fault-injected tests above cover the logic")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); the fault-injected tests cover it")


@pytest.mark.slow
def test_a_disk_that_fills_during_a_sweep_is_one_line_and_resume_loses_nothing(tmp_path):
    """A real full disk: a 600 kB tmpfs holds the sweep's records and about one checkpoint, then fills."""
    disk = tmp_path / "disk"
    _tmpfs(disk, "600k")
    try:
        args = ["--storage", str(disk), "--smoke-test", "--name", "full", "--max-failures", "0"]
        env = {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray", dir="/tmp")}  # short: Ray's socket paths
        env.pop("RAY_ADDRESS", None)
        proc = subprocess.run([SWEEP, "run", *args], capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr
        assert "No space left on device" in lines[0] or "full" in lines[0]
        assert lines[0].endswith(f"then continue with `sweep resume full --storage {disk}`")
        # The driver could not record its end on the full disk; its pid is gone, so status calls it interrupted.
        status = subprocess.run([SWEEP, "status", "full", "--storage", str(disk)], capture_output=True, text=True,
                                timeout=60)
        assert "interrupted" in status.stdout and "sweep resume full" in status.stdout, status.stdout + status.stderr

        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        proc = subprocess.run([SWEEP, "resume", "full", "--storage", str(disk)], capture_output=True, text=True,
                              timeout=300, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stderr == "", proc.stderr
        status = subprocess.run([SWEEP, "status", "full", "--storage", str(disk)], capture_output=True, text=True,
                                timeout=60)
        assert "0 failed" in status.stdout, status.stdout  # the full disk failed no trial: all ran to their end
        assert "finished (2 sessions)" in status.stdout, status.stdout
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_confirmation_seeds_of_a_sweep_seeded_at_the_top_stay_in_range():
    from sweep.cli import MAX_SEED
    from sweep.confirm import confirm_seeds
    from trainables.config import SEED_MAX

    assert MAX_SEED == SEED_MAX  # the CLI refuses what a trial would
    assert confirm_seeds(MAX_SEED - 1, 3) == [MAX_SEED, 0, 1]  # fresh, paired, and a seed every trial takes
