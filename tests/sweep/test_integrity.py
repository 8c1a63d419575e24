"""Nothing lost, nothing leaked: one driver per sweep, damaged files named (read-only commands never write), what a
sweep run must check before it takes a name, secrets kept out of Ray's logs and the sweep, bounded input."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweep import claim, ledger

SWEEP = str(Path(sys.executable).with_name("sweep"))
SECRET = "fake-secret-3f9a1c0e77d4b2"


def _sweep(*args: str, env: dict | None = None, unset: tuple[str, ...] = (),
           timeout: float = 300) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in unset}
    return subprocess.run([SWEEP, *args], capture_output=True, text=True, timeout=timeout, env=environ)


def _one_line(proc: subprocess.CompletedProcess, *texts: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for text in texts:
        assert text in lines[0], lines[0]
    return lines[0]


def _checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.relative_to(root).parts[0] != "report"}


# --- one driver per sweep: the claim --------------------------------------------------------------------------


def _race_for_the_claim(exp: str, barrier, results) -> None:
    barrier.wait()
    try:
        with claim.claim(exp, creating=True):
            results.put("won")
            time.sleep(0.3)  # hold it while the other one looks
    except claim.Claimed as exc:
        results.put(f"lost: {exc}")


def test_of_two_drivers_claiming_together_exactly_one_wins(tmp_path):
    ctx = multiprocessing.get_context("fork")
    for rep in range(40):
        exp = str(tmp_path / f"s{rep}")
        barrier, results = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_race_for_the_claim, args=(exp, barrier, results)) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        outcomes = sorted(results.get(timeout=5) for _ in range(2))
        assert outcomes[0].startswith("lost: ") and outcomes[1] == "won", outcomes
        assert "is being created by another driver pid" in outcomes[0]
        assert not os.path.exists(os.path.join(exp, claim.LOCK_FILE))  # released by the winner


def test_a_dead_drivers_claim_is_taken_over_and_a_live_ones_is_refused(tmp_path):
    exp = str(tmp_path / "s")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom sweep import claim\n"
        f"with claim.claim({exp!r}):\n    print('held', flush=True)\n    time.sleep(600)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(claim.Claimed, match=f"is held by another driver pid {holder.pid}"):
            with claim.claim(exp):
                pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        found = claim.read_claim(exp)
        assert found["pid"] == holder.pid and claim.is_stale(exp, found)  # left behind, and known dead
        with claim.claim(exp):
            assert claim.read_claim(exp)["pid"] == os.getpid()
        assert claim.read_claim(exp) is None
    finally:
        holder.kill()


def test_a_pid_reused_by_another_process_does_not_keep_a_claim_alive(tmp_path):
    exp = tmp_path / "s"
    exp.mkdir()
    record = {"pid": os.getppid(), "started": "1", "host": os.uname().nodename, "token": "t", "since": 0}
    (exp / claim.LOCK_FILE).write_text(json.dumps(record))  # a live pid, but not the process that claimed it
    assert claim.is_stale(str(exp), claim.read_claim(str(exp)))
    (exp / claim.LOCK_FILE).write_text("garbage")
    assert claim.is_stale(str(exp), claim.read_claim(str(exp)))


@pytest.mark.slow
def test_two_sweep_runs_of_one_name_started_together_one_runs_one_is_refused(tmp_path, ray_session):
    address = ray_session.get_runtime_context().gcs_address
    for rep in range(3):
        storage = tmp_path / f"store{rep}"
        args = ["run", "--smoke-test", "--num-samples", "1", "--strategies", "infonce", "--storage", str(storage),
                "--name", "x", "--address", address]
        procs = [subprocess.Popen([SWEEP, *args, "--epochs", str(e)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for e in (1, 2)]
        outs = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
        codes = sorted(rc for _, _, rc in outs)
        assert codes == [0, 2], outs
        winner = next(i for i, (_, _, rc) in enumerate(outs) if rc == 0)
        loser_err = outs[1 - winner][1].strip().splitlines()
        assert len(loser_err) == 1 and ("already exists" in loser_err[0] or "is being created by" in loser_err[0])
        settings = json.loads((storage / "x" / "sweep.json").read_text())
        assert settings["epochs"] == (1, 2)[winner]  # the winner's settings, never overwritten
        assert not (storage / "x" / claim.LOCK_FILE).exists()


# --- damaged files are named; read-only commands never write ----------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory, ray_session):
    storage = tmp_path_factory.mktemp("integrity")
    address = ray_session.get_runtime_context().gcs_address
    run = _sweep("run", "--smoke-test", "--num-samples", "4", "--epochs", "2", "--strategies", "infonce,hard",
                 "--storage", str(storage), "--name", "s", "--address", address)
    assert run.returncode == 0, run.stdout + run.stderr
    return storage / "s"


@pytest.fixture
def sweep_copy(finished, tmp_path):
    shutil.copytree(finished, tmp_path / "s")
    return tmp_path / "s"


def _best(exp: Path) -> tuple[int, Path]:
    """The winning trial and its newest checkpoint."""
    from sweep import ranking

    study = ledger.open_study(str(exp))
    records = ranking.records_from(study, ledger.newest_checkpoints(str(exp)))
    top = ranking.rank(records, "linear_acc", "max", 2)[0].best
    return top.number, Path(ledger.newest_checkpoints(str(exp))[top.number].path)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["history", "state", "session"])
def test_a_damaged_or_missing_checkpoint_is_named_and_the_study_ranks_the_trial(sweep_copy, damage):
    exp = sweep_copy
    before_status = _sweep("status", "s", "--storage", str(exp.parent)).stdout
    number, ckpt = _best(exp)
    if damage == "history":
        (ckpt / "history.json").write_text("garbage{")
    elif damage == "state":
        (ckpt / "state.pt").write_bytes(b"not a zip")
    else:
        shutil.rmtree(exp / "session-0")
    sums = _checksums(exp)
    status = _sweep("status", "s", "--storage", str(exp.parent))
    assert status.returncode == 0, status.stderr
    if damage == "session":
        assert f"trial {number}" in status.stdout and "no checkpoint on disk" in status.stdout
    else:
        why = "history.json is not a list of epochs" if damage == "history" else "state.pt is missing or truncated"
        assert f"damaged checkpoint of trial {number}: {ckpt} ({why})" in status.stdout
    # the ranking still says what study.db knows: the winner at full budget, not an older checkpoint's epoch
    ranking_of = lambda text: text.split("per strategy:")[1].split("\n\n")[0].strip()  # noqa: E731
    assert ranking_of(status.stdout) == ranking_of(before_status)
    check = _sweep("check", "s", "--storage", str(exp.parent))
    assert check.returncode == 1 and "problem" in check.stdout, check.stdout
    report = _sweep("report", "s", "--storage", str(exp.parent))
    assert report.returncode == 0, report.stderr
    assert "warning:" in report.stdout and "best_config.yaml" in report.stdout
    assert f"best configuration of sweep s: trial {number} " in (exp / "report" / "best_config.yaml").read_text()
    assert "Damaged or missing files" in (exp / "report" / "report.md").read_text()
    assert _checksums(exp) == sums  # status, check and report changed nothing in the sweep


@pytest.mark.slow
def test_a_damaged_study_sweep_or_driver_file_is_one_line_naming_it_and_is_left_alone(sweep_copy):
    exp, storage = sweep_copy, str(sweep_copy.parent)
    good = (exp / "study.db").read_bytes()
    for data, why in ((b"", "empty (0 bytes)"), (good[: len(good) // 2], "it cannot be read"),
                      (b"x" * 100, "not an SQLite database")):
        (exp / "study.db").write_bytes(data)
        for verb in ("status", "report", "check", "resume"):
            _one_line(_sweep(verb, "s", "--storage", storage), f"{exp / 'study.db'} is damaged ({why}",
                      "report/study.db")
        assert (exp / "study.db").read_bytes() == data  # never rewritten by a reader
    (exp / "study.db").write_bytes(good)
    for name, text, why in (("driver.json", "garbage", "not JSON"), ("sweep.json", "[1, 2]", "a JSON list"),
                            ("sweep.json", "{}", "no `settings`"), ("sweep.json", "nope", "not JSON")):
        saved = (exp / name).read_text()
        (exp / name).write_text(text)
        _one_line(_sweep("status", "s", "--storage", storage), f"{exp / name} is damaged ({why}")
        assert (exp / name).read_text() == text
        (exp / name).write_text(saved)
    assert _sweep("check", "s", "--storage", storage).returncode == 0


# --- what `sweep run` checks before it takes a name --------------------------------------------------------------


def test_run_refuses_what_it_would_fail_on_before_writing_anything(tmp_path):
    storage = tmp_path / "store"
    server = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        port = int(server.stdout.readline().split(" port ")[1].split()[0])
        base = ["run", "--smoke-test", "--storage", str(storage), "--name", "x"]
        _one_line(_sweep(*base, "--address", f"127.0.0.1:{port}"), "answers, but not as Ray")
    finally:
        server.kill()
    blocker = tmp_path / "a-file"  # a TMPDIR under a file: not writable, even by root
    blocker.write_text("")
    _one_line(_sweep(*base, env={"TMPDIR": str(blocker / "tmp")}, unset=("RAY_TMPDIR",)), "is not writable",
              "RAY_TMPDIR")
    _one_line(_sweep(*base, "--dashboard"), "--dashboard needs Ray's dashboard packages", "leave out --dashboard")
    other = tmp_path / "mine"
    other.mkdir()
    (other / "x").mkdir()
    (other / "x" / "notes.txt").write_text("not a sweep")
    _one_line(_sweep("run", "--smoke-test", "--storage", f"file://{other}", "--name", "x"), "exists and is not a sweep")
    _one_line(_sweep("run", "--smoke-test", "--storage", "s3://bucket/p?secret_key=abc", "--name", "x"),
              "carries a credential (`secret_key=`)")
    assert not storage.exists() and sorted(p.name for p in (other / "x").iterdir()) == ["notes.txt"]


# --- secrets ------------------------------------------------------------------------------------------------------


def test_the_local_rays_token_is_private(tmp_path, monkeypatch):
    from sweep.ray_start import secure_token

    monkeypatch.setenv("HOME", str(tmp_path))
    old = os.umask(0o022)
    try:
        path = secure_token()
        assert path == tmp_path / ".ray" / "auth_token" and len(path.read_text()) == 64
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        path.chmod(0o644)  # as Ray itself writes it
        path.parent.chmod(0o755)
        token = path.read_text()
        assert secure_token() == path and path.read_text() == token  # kept, made private
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    finally:
        os.umask(old)


@pytest.mark.slow
def test_no_credential_reaches_rays_logs_or_the_sweep(tmp_path, ray_session):
    address = ray_session.get_runtime_context().gcs_address
    run = _sweep("run", "--smoke-test", "--num-samples", "2", "--strategies", "infonce", "--storage",
                 str(tmp_path), "--name", "s", "--address", address,
                 env={"AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ACCESS_KEY_ID": SECRET + "-id"})
    assert run.returncode == 0, run.stderr
    session_dir = Path(ray_session._private.worker._global_node.get_session_dir_path())
    places = [tmp_path, session_dir]
    leaked = [str(p) for root in places for p in root.rglob("*")
              if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert not leaked, leaked


# --- bounded input ------------------------------------------------------------------------------------------------

BOMB = "a: &a [1,1,1,1,1,1,1,1,1]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
) + "lr: *i\n"


def test_an_alias_bomb_is_refused_at_once_and_costs_nothing(tmp_path):
    config = tmp_path / "bomb.yaml"
    config.write_text(BOMB)
    start = time.perf_counter()
    line = _one_line(_sweep("train", "--config", str(config)), "uses a YAML alias (*a)", "write the value out")
    assert time.perf_counter() - start < 30 and len(line) < 300  # the interpreter's start-up, not the bomb
    line = _one_line(_sweep("run", "--smoke-test", "--storage", str(tmp_path / "s"), "--set",
                            "lr=[&a [1,1,1,1], &b [*a,*a,*a,*a], [*b,*b,*b,*b]]"), "--set lr uses a YAML alias")
    assert not (tmp_path / "s").exists()


def test_a_huge_value_from_a_users_space_is_quoted_short():
    from trainables.errors import UserError
    from trainables.tasks import parse_config

    value: list = [0.1]
    for _ in range(60):  # 2**60 leaves when written out
        value = [value, value]
    start = time.perf_counter()
    with pytest.raises(UserError) as err:
        parse_config({"task": "signal", "lr": value})
    assert time.perf_counter() - start < 1 and len(str(err.value)) < 200 and "`lr` is [[[...]" in str(err.value)
