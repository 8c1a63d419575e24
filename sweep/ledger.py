"""The sweep's durable record, and how it is read back after a kill.

A sweep directory (``<storage>/<name>/``) holds:

- ``sweep.json``: the settings it was launched with, written once before Ray starts;
- ``study.db``: the Optuna study (SQLite). Optuna commits every ask, report and tell, so a trial number is never
  handed out twice and no outcome the driver has learnt is lost. Each trial's full configuration is a user attribute.
  In object storage (``s3://...``) the study is a journal of objects instead, ``study-journal/`` (:mod:`sweep.journal`);
- ``driver.json``: the driver sessions (``sweep run`` is session 0, each ``sweep resume`` the next), with the process
  and a heartbeat, so ``sweep status`` can tell a live sweep from an interrupted one;
- ``session-K/``: the Tune experiment of session K. Trial number N lives in ``session-K/NNNN_<strategy>/``; each of
  its checkpoints holds ``state.pt`` and ``history.json`` (every epoch so far), written by the worker *before* the
  driver hears of the epoch.

After a kill the checkpoints may be a step ahead of study.db; :func:`reconcile` brings study.db up to date from them.
Ray's experiment snapshots are not used to resume: they lag by the snapshot period, ignore checkpoints newer than
the snapshot and restore ASHA with empty rungs (RAY_TUNE_NOTES section 4).
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.parse
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import pyarrow.fs as pafs
import sqlalchemy.exc
from optuna.trial import TrialState

from sweep.journal import JOURNAL_DIR, ObjectJournal
from sweep.ranking import finite
from sweep.storage import is_uri, join, read_text, resolve_storage, write_atomic
from trainables.errors import UserError
from trainables.files import HISTORY_FILE, STATE_FILE

SETTINGS_FILE = "sweep.json"
STUDY_FILE = "study.db"
DRIVER_FILE = "driver.json"
RANKING_FILE = "ranking.md"
SESSION_PREFIX = "session-"
CHECKPOINT_PREFIX = "checkpoint_"

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
ASKED = (TrialState.RUNNING, *FINISHED)
# A driver that has not written its heartbeat for this long is gone (it writes one every few seconds).
HEARTBEAT_STALE_S = 60.0


def session_name(k: int) -> str:
    return f"{SESSION_PREFIX}{k}"


def trial_dirname(number: int, strategy: str) -> str:
    return f"{number:04d}_{strategy}"


# --- the Optuna study ------------------------------------------------------------------------------------------


def study_storage(exp: str, writer: bool = False) -> optuna.storages.BaseStorage:
    """SQLite in a local sweep directory; in object storage, a journal of objects (see :mod:`sweep.journal`).

    Only a writer (the driver) opens SQLite for writing, and only it may create the tables; every reader (`sweep
    status`, `report`, `check`) opens the file read-only, so a damaged study.db is reported, never rewritten.
    """
    if is_uri(exp):
        return optuna.storages.JournalStorage(ObjectJournal(join(exp, JOURNAL_DIR), writer=writer))
    path = join(exp, STUDY_FILE)
    # A reader may meet the driver's write lock: wait for it rather than fail.
    if writer:
        return optuna.storages.RDBStorage(f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": 30}})
    url = f"sqlite:///file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro&uri=true"
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 30, "uri": True}},
                                      skip_table_creation=True)


SQLITE_HEADER = b"SQLite format 3\x00"


def check_study_file(exp: str) -> str:
    """'' when study.db looks like an SQLite database, else what is wrong with it (empty, not SQLite)."""
    path = join(exp, STUDY_FILE)
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    if not head:
        return "empty (0 bytes)"
    return "" if head == SQLITE_HEADER else "not an SQLite database"


def has_study(exp: str) -> bool:
    return ObjectJournal(join(exp, JOURNAL_DIR)).exists() if is_uri(exp) else os.path.isfile(join(exp, STUDY_FILE))


def create_study(exp: str, name: str, mode: str, metric: str | None = None) -> optuna.Study:
    if not is_uri(exp):
        os.makedirs(exp, exist_ok=True)
    direction = "maximize" if mode == "max" else "minimize"
    study = optuna.create_study(storage=study_storage(exp, writer=True), study_name=name, direction=direction)
    if metric is not None:  # optuna-dashboard then labels the objective by its name, not "Objective 0"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([metric])
    return study


def open_study(exp: str, writer: bool = False) -> optuna.Study | None:
    """The sweep's study; ``writer``: for the driver, the one process that writes it while a session runs. A study
    that cannot be read is a UserError naming the file and the fix."""
    if read_text(join(exp, SETTINGS_FILE)) is None or not has_study(exp):
        return None
    where = join(exp, JOURNAL_DIR if is_uri(exp) else STUDY_FILE)
    fix = (f"restore it from a backup (`sweep report` keeps a consistent copy in {join(exp, 'report', STUDY_FILE)}), "
           "or start the sweep afresh with another --name")
    problem = "" if is_uri(exp) else check_study_file(exp)
    if problem:
        raise UserError(f"{where} is damaged ({problem}); {fix}")
    try:
        storage = study_storage(exp, writer)
        studies = storage.get_all_studies()  # named, so Optuna does not log that the name was guessed
        return optuna.load_study(storage=storage, study_name=studies[0].study_name if len(studies) == 1 else None)
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError, ValueError, KeyError) as exc:
        cause = str(getattr(exc, "orig", None) or exc.__cause__ or exc).splitlines()[0][:120]
        raise UserError(f"{where} is damaged (it cannot be read: {cause}); {fix}") from None


def load_sweep(name: str, storage: str, *, writer: bool = False) -> tuple[str, dict[str, Any], optuna.Study]:
    """An existing sweep's directory, saved plan (sweep.json, checked) and study; UserError in one line when missing
    or damaged. Only ``writer`` (a driver holding the sweep's claim) opens the study for writing."""
    if not name or name in (".", "..") or any(c in name for c in "/\\\0\n"):
        raise UserError(f"{name!r} is not a sweep name: give the name of one directory under --storage")
    root = resolve_storage(storage)
    exp = join(root, name)
    text = read_text(join(exp, SETTINGS_FILE))
    if text is None:
        raise UserError(f"no sweep {name!r} in {root}; check the name and --storage")
    plan = check_settings(join(exp, SETTINGS_FILE), text)
    study = open_study(exp, writer=writer)
    if study is None:
        where = JOURNAL_DIR if is_uri(exp) else STUDY_FILE
        raise UserError(f"sweep {name!r} in {root} has no study database ({where})")
    return exp, plan, study


# What sweep.json must hold, and the type of each: a damaged file is named, never half-used.
_SETTINGS_SCHEMA: dict[str, type | tuple[type, ...]] = {
    "settings": dict, "space": str, "strategies": list, "num_samples": int, "epochs": int, "metric": str,
    "mode": str, "scheduler": str,
}


def check_settings(path: str, text: str) -> dict[str, Any]:
    """sweep.json parsed and checked: a mapping with every key the commands read, of the right type."""
    fix = "it holds the sweep's settings, which nothing else records: restore it from a backup, or start afresh " \
          "with `sweep run --name NEW`"
    data = _parse(path, text, fix)
    for key, kind in _SETTINGS_SCHEMA.items():
        if key not in data:
            raise UserError(f"{path} is damaged (no `{key}`); {fix}")
        if not isinstance(data[key], kind) or isinstance(data[key], bool):
            raise UserError(f"{path} is damaged (`{key}` is {type(data[key]).__name__}, not "
                            f"{getattr(kind, '__name__', kind)}); {fix}")
    if data["mode"] not in ("max", "min") or not all(isinstance(x, str) for x in data["strategies"]):
        raise UserError(f"{path} is damaged (mode or strategies); {fix}")
    return data


def _parse(path: str, text: str, fix: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UserError(f"{path} is damaged (not JSON: {exc}); {fix}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is damaged (a JSON {type(data).__name__}, not an object); {fix}")
    return data


# --- trial outcomes ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How a trial ended, as Optuna is told: COMPLETE with its score, PRUNED (stopped early) or FAIL, and why."""

    state: TrialState
    value: float | None = None
    reason: str = ""


def judge(
    last: Mapping[str, Any] | None,
    epochs: int,
    metric: str,
    *,
    stopped: bool = False,
    error: str = "",
    cut: str = "",
) -> Outcome | None:
    """The outcome of a trial whose last report is ``last``; None while it is unfinished (it will be resumed).

    ``stopped``: the scheduler stopped it after ``last``. ``error``: it raised after its retries. ``cut``: the sweep
    ended it (a time budget). A non-finite loss, collapsed embeddings or a non-finite score is a failure with its
    reason: never a NaN handed to Optuna, which would leave the trial RUNNING forever.
    """
    if error:
        return Outcome(TrialState.FAIL, None, error)
    if not last:
        return Outcome(TrialState.PRUNED, None, f"{cut} before its first epoch") if cut else None
    epoch, value = int(last.get("epoch", 0)), last.get(metric)
    if last.get("stop_reason"):
        return Outcome(TrialState.FAIL, None, f"{last['stop_reason']} at epoch {epoch}")
    if metric not in last and epoch < epochs:  # an epoch not scored (eval_every > 1): no score to tell
        if cut or stopped:
            return Outcome(TrialState.PRUNED, None, f"{cut or 'stopped'} at epoch {epoch}, before its next validation "
                                                    f"score")
        return None
    if not finite(value):
        return Outcome(TrialState.FAIL, None, f"non-finite {metric} at epoch {epoch}")
    if epoch >= epochs:
        return Outcome(TrialState.COMPLETE, float(value))
    if stopped:
        return Outcome(TrialState.PRUNED, float(value), f"stopped early by the scheduler at epoch {epoch}")
    if cut:
        return Outcome(TrialState.PRUNED, float(value), f"{cut} at epoch {epoch}")
    return None


def report_history(study: optuna.Study, frozen: optuna.trial.FrozenTrial, history: Sequence[Mapping], metric: str):
    """Tell Optuna every epoch of ``history`` it has not heard of yet (Optuna's step is our epoch)."""
    trial = optuna.Trial(study, frozen._trial_id)
    known = set(frozen.intermediate_values)
    for row in history:
        value, step = row.get(metric), row.get("epoch")
        if step is not None and step not in known and finite(value):
            trial.report(float(value), int(step))
            known.add(step)


def tell(study: optuna.Study, frozen: optuna.trial.FrozenTrial, outcome: Outcome) -> None:
    """Record ``outcome`` for a RUNNING trial; a no-op for a finished one (each outcome is told once)."""
    if frozen.state != TrialState.RUNNING:
        return
    if outcome.reason:
        optuna.Trial(study, frozen._trial_id).set_user_attr("reason", outcome.reason)
    values = outcome.value if outcome.state == TrialState.COMPLETE else None
    try:
        study.tell(frozen.number, values, state=outcome.state)
    except RuntimeError as exc:  # GridSampler calls study.stop() when the grid is done; outside optimize() it raises
        if "Study.stop" not in str(exc):
            raise


# --- checkpoints on disk -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Saved:
    """The newest complete checkpoint of one trial: where it is, which session wrote it, the history it holds."""

    path: str
    session: int
    history: list[dict[str, Any]]

    @property
    def epoch(self) -> int:
        return int(self.history[-1]["epoch"]) if self.history else 0


@dataclass(frozen=True)
class Damaged:
    """A checkpoint that cannot be used, and why."""

    number: int
    path: str
    why: str


def newest_checkpoints(exp: str) -> dict[int, Saved]:
    """Per trial number, the checkpoint with the most epochs across every session (the later session on a tie).

    A checkpoint that cannot be used (a kill left it half-copied, or its ``state.pt`` or ``history.json`` is
    damaged) is skipped; :func:`scan_checkpoints` also says which and why.
    """
    return scan_checkpoints(exp)[0]


def scan_checkpoints(exp: str) -> tuple[dict[int, Saved], list[Damaged]]:
    """:func:`newest_checkpoints`, and every damaged checkpoint newer than the one used for its trial (an older
    damaged one matters to nobody: a newer checkpoint holds its whole history)."""
    fs, base = pafs.FileSystem.from_uri(exp)
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    candidates: dict[int, list[tuple[int, int, str, str]]] = {}
    for info in infos:
        if info.type != pafs.FileType.File or info.base_name != HISTORY_FILE:
            continue
        parts = info.path[len(base) :].strip("/").split("/")
        if len(parts) != 4 or not parts[0].startswith(SESSION_PREFIX) or not parts[2].startswith(CHECKPOINT_PREFIX):
            continue
        try:
            session, number = int(parts[0][len(SESSION_PREFIX) :]), int(parts[1].split("_", 1)[0])
            index = int(parts[2][len(CHECKPOINT_PREFIX) :])
        except ValueError:
            continue
        candidates.setdefault(number, []).append((session, index, info.path, join(exp, *parts[:3])))
    out: dict[int, Saved] = {}
    damaged: list[Damaged] = []
    for number, found in candidates.items():
        best, bad = None, []
        for session, index, history_path, ckpt in found:
            history = _load_history(fs, history_path)
            why = "" if history is not None else f"{HISTORY_FILE} is not a list of epochs"
            if not why and not _is_zip(fs, history_path.rsplit("/", 1)[0] + "/" + STATE_FILE):
                why = f"{STATE_FILE} is missing or truncated"
            if why:
                bad.append(((session, index), Damaged(number, ckpt, why)))
                continue
            key = (int(history[-1]["epoch"]) if history else 0, session, index)
            if best is None or key > best[0]:
                best = (key, Saved(ckpt, session, history))
        if best is not None:
            out[number] = best[1]
        used = best[0][1:] if best is not None else (-1, -1)
        damaged += [d for where, d in bad if where > used]
    return out, sorted(damaged, key=lambda d: (d.number, d.path))


def _load_history(fs: pafs.FileSystem, path: str) -> list[dict[str, Any]] | None:
    try:
        with fs.open_input_stream(path) as f:
            history = json.loads(f.read().decode())
    except (OSError, ValueError):
        return None
    if not isinstance(history, list) or not all(
        isinstance(r, dict) and isinstance(r.get("epoch"), int) and not isinstance(r.get("epoch"), bool)
        for r in history
    ):
        return None
    return history


def _is_zip(fs: pafs.FileSystem, path: str) -> bool:
    """torch.save writes a zip whose directory sits at the end: a truncated copy has none."""
    try:
        with fs.open_input_file(path) as f:
            return zipfile.is_zipfile(f)
    except (OSError, ValueError):  # pyarrow's ArrowInvalid (a seek before a tiny file's start) is a ValueError
        return False


def remove_leftovers(exp: str, saved: Mapping[int, Saved]) -> None:
    """Delete what a kill leaves behind: checkpoints of earlier sessions that a newer one supersedes (the newest
    holds the whole history, so nothing is lost), and the ``.staging`` folders that Ray's experiment sync copied
    into sweeps written before trials staged on the worker's local disk (see :mod:`trainables.tune_entry`)."""
    fs, base = pafs.FileSystem.from_uri(exp)
    for info in fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True)):
        if info.type != pafs.FileType.Directory:
            continue
        parts = info.path[len(base) :].strip("/").split("/")
        if len(parts) != 3 or not parts[0].startswith(SESSION_PREFIX):
            continue
        if parts[2] == ".staging":
            fs.delete_dir(info.path)
            continue
        if not parts[2].startswith(CHECKPOINT_PREFIX):
            continue
        try:
            number = int(parts[1].split("_", 1)[0])
        except ValueError:
            continue
        keep = saved.get(number)
        if keep is not None and join(exp, *parts) != keep.path and int(parts[0][len(SESSION_PREFIX) :]) < keep.session:
            fs.delete_dir(info.path)


# --- reconciliation after a kill --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resumable:
    """An unfinished trial to run again under its own number: from ``checkpoint`` (None: from scratch)."""

    number: int
    config: dict[str, Any]
    checkpoint: str | None
    epoch: int


def reconcile(
    study: optuna.Study,
    saved: Mapping[int, Saved],
    scheduler: Any,
    epochs: int,
    metric: str,
    rebuild: Callable[[optuna.trial.FrozenTrial], dict[str, Any]],
) -> list[Resumable]:
    """Bring the study up to date with the checkpoints on disk; return the trials that must go on.

    ``rebuild(trial)`` gives the config of a trial the driver asked for but was killed before it recorded the
    config (possibly before the space had suggested every parameter).

    The scheduler's rungs are rebuilt first by replaying every epoch on disk in the order it was reported (each trial
    in its strategy's rungs), so a trial that ASHA had stopped (or would have stopped, had the driver lived to see its
    last epoch) stays stopped.
    """
    trials = study.get_trials(deepcopy=False)
    histories = {t.number: saved[t.number].history for t in trials if t.number in saved}
    finished = {t.number for t in trials if t.state in FINISHED}
    replay = getattr(scheduler, "replay", None)
    groups = {t.number: str((t.user_attrs.get("config") or t.params).get("strategy")) for t in trials}
    decisions = replay(histories, finished, groups) if replay else {}
    resumable = []
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        history = histories.get(t.number, [])
        report_history(study, t, history, metric)
        last = history[-1] if history else None
        outcome = judge(last, epochs, metric, stopped=decisions.get(t.number) == "STOP")
        if outcome is not None:
            tell(study, t, outcome)
            continue
        ckpt = saved.get(t.number)
        config = t.user_attrs.get("config") or rebuild(t)
        resumable.append(Resumable(t.number, config, ckpt.path if ckpt else None, ckpt.epoch if ckpt else 0))
    return resumable


def cut_unfinished(study: optuna.Study, saved: Mapping[int, Saved], epochs: int, metric: str, reason: str) -> int:
    """End every RUNNING trial (a time budget ran out); return how many."""
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        history = saved[t.number].history if t.number in saved else []
        report_history(study, t, history, metric)
        tell(study, t, judge(history[-1] if history else None, epochs, metric, cut=reason))
        n += 1
    return n


# --- the driver's record ----------------------------------------------------------------------------------------


def read_driver(exp: str, strict: bool = True) -> dict[str, Any]:
    """The driver record of a sweep (or of its race); a damaged one is a UserError naming it, or, not ``strict``,
    the record of a sweep no driver ever ran."""
    path = join(exp, DRIVER_FILE)
    text = read_text(path)
    if not text:
        return {"state": "new", "sessions": []}
    fix = "it only records driver sessions and heartbeats: delete it and run the command again"
    try:
        data = _parse(path, text, fix)
        sessions = data.get("sessions")
        if not isinstance(data.get("state"), str) or not isinstance(sessions, list):
            raise UserError(f"{path} is damaged (no `state` or `sessions`); {fix}")
        for session in sessions:
            if not (isinstance(session, dict) and isinstance(session.get("pid"), int)
                    and all(isinstance(session.get(k), (int, float)) for k in ("started", "heartbeat"))):
                raise UserError(f"{path} is damaged (a session without pid, started and heartbeat); {fix}")
    except UserError:
        if strict:
            raise
        return {"state": "new", "sessions": []}
    return data


def write_driver(exp: str, driver: Mapping[str, Any]) -> None:
    write_atomic(join(exp, DRIVER_FILE), json.dumps(driver, indent=2))


def start_session(exp: str) -> tuple[int, dict[str, Any]]:
    driver = read_driver(exp)
    now = time.time()
    driver["sessions"].append({"started": now, "heartbeat": now, "host": socket.gethostname(), "pid": os.getpid()})
    driver["state"] = "running"
    write_driver(exp, driver)
    return len(driver["sessions"]) - 1, driver


def is_live(driver: Mapping[str, Any], now: float | None = None) -> bool:
    """Whether a driver process still runs the sweep: its heartbeat is fresh and, on this host, its pid is alive."""
    if driver.get("state") != "running" or not driver.get("sessions"):
        return False
    last = driver["sessions"][-1]
    if (now or time.time()) - last.get("heartbeat", 0) > HEARTBEAT_STALE_S:
        return False
    if last.get("host") == socket.gethostname():
        try:
            os.kill(int(last["pid"]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True


def time_spent(driver: Mapping[str, Any]) -> float:
    """Wall seconds of every session so far (a killed one counts up to its last heartbeat)."""
    return sum(max(0.0, s.get("heartbeat", s["started"]) - s["started"]) for s in driver.get("sessions", []))
