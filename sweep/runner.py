"""`sweep run` and `sweep resume`: check everything, then drive one session of the sweep on Ray Tune.

A session is one driver process's share of a sweep. The sweep's state lives on disk (see :mod:`sweep.ledger`), so a
session killed at any moment is continued by the next one: finished trials stay finished, unfinished ones go on
from their newest checkpoint under their own number, and new trials are asked for until the budget is spent.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from search_spaces import Study, describe_space, load_study
from sweep import errors, ledger, ranking
from sweep.storage import check_writable, command, is_uri, join, read_text, resolve_storage, write_atomic
from trainables.errors import UserError
from trainables.tasks import DEFAULT_TASK, get_task, parse_config

# Ray's own snapshots are not what a resume reads, but keep them fresh for anyone who looks.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "10")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Ctrl-C and SIGTERM are ours to handle (graceful stop, then a resume hint); see Interrupt.
os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")

HEARTBEAT_S = 5.0
ADDRESS_TIMEOUT_S = 10.0


@dataclass
class SweepSettings:
    """Everything `sweep run` was asked, saved beside the results so the sweep can be resumed and reported."""

    space: str = "digits"
    name: str | None = None
    storage: str = "./sweeps"
    num_samples: int | None = None
    max_concurrent: int | None = None
    epochs: int | None = None
    cpus_per_trial: float | None = None  # None: the study's, else 1
    gpus_per_trial: float | None = None  # None: the study's, else a whole GPU where the cluster has one, else none
    seed: int = 0
    address: str | None = None
    data_root: str | None = None
    smoke_test: bool = False
    dashboard: bool = False
    max_failures: int = 2
    time_budget_s: float | None = None
    strategies: list[str] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


def trial_overrides(s: SweepSettings, task: str = DEFAULT_TASK) -> dict[str, Any]:
    out: dict[str, Any] = {"seed": s.seed}
    if s.epochs is not None:
        out["epochs"] = s.epochs
    if s.data_root is not None:
        out["data_root"] = s.data_root
    if s.smoke_test:
        out.update(get_task(task).smoke, epochs=s.epochs or 2)
    return {**out, **s.overrides}


def cpus_per_trial(s: SweepSettings, study: Study) -> float:
    """A trial's CPUs: its torch threads for the model and for the data pipeline (augmentation runs on the CPU)."""
    for value in (s.cpus_per_trial, study.cpus_per_trial):
        if value is not None:
            return float(value)
    return 1.0


def gpus_per_trial(s: SweepSettings, study: Study, cluster: dict[str, float], out=sys.stdout) -> float:
    """A trial's share of a GPU: the command line's, else the study's, else a whole one where there are GPUs.

    A local Ray without a GPU runs a study's GPU trials on the CPU (with a note); an explicit ``--gpus-per-trial``
    was refused before anything started (:func:`check_gpus`). A cluster (``--address``) is trusted: its autoscaler
    may add GPU nodes for trials that ask for them.
    """
    if s.gpus_per_trial is not None:
        return float(s.gpus_per_trial)
    has_gpu = cluster.get("GPU", 0) > 0
    if study.gpus_per_trial is not None:
        if has_gpu or s.address:
            return float(study.gpus_per_trial)
        print(f"note: study {study.name} asks for {study.gpus_per_trial:g} GPU per trial; this Ray has none, so "
              "trials run on the CPU", file=out)
        return 0.0
    return 1.0 if has_gpu else 0.0


def check_gpus(s: SweepSettings) -> None:
    """``--gpus-per-trial`` that no trial could ever get, refused in one line before anything is written."""
    g = s.gpus_per_trial
    if g is None or g == 0:
        return
    if not (math.isfinite(g) and g > 0):
        raise UserError(f"--gpus-per-trial {g:g} must be a finite number of GPUs, >= 0")
    if g > 1 and g != int(g):
        raise UserError(f"--gpus-per-trial {g:g}: above 1 a trial takes whole GPUs; use an integer, or a fraction "
                         "below 1 to pack trials on one GPU")
    if s.address:
        return
    import torch

    if torch.cuda.device_count() < g:
        raise UserError(f"--gpus-per-trial {g:g} but this machine has {torch.cuda.device_count()} CUDA GPU(s); "
                         "leave it out to use the GPUs there are (else CPUs), or give --address of a GPU cluster")


def local_cpus() -> int:
    """The CPUs a local Ray gets: Ray's own count (it honours a container's CPU quota), else the OS's."""
    try:
        from ray._private.utils import get_num_cpus

        return int(get_num_cpus())
    except Exception:  # a Ray without that helper: the affinity mask is the next best answer
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_cpus(s: SweepSettings, study: Study) -> None:
    """CPUs per trial that no node of a local Ray has would leave every trial pending for ever: refused up front.
    A cluster (``--address``) is trusted: its autoscaler may add bigger nodes."""
    cpus = cpus_per_trial(s, study)
    if not (math.isfinite(cpus) and cpus > 0):
        raise UserError(f"--cpus-per-trial {cpus:g} must be a positive, finite number of CPUs")
    if s.address:
        return
    have = local_cpus()
    if cpus > have:
        given = "--cpus-per-trial" if s.cpus_per_trial is not None else f"study {study.name}'s cpus_per_trial"
        raise UserError(f"{given} is {cpus:g} but this machine has {have} CPU(s), so no trial could start; "
                        f"ask for at most {have}, or give --address of a cluster with bigger nodes")


def check_resources(s: SweepSettings, study: Study) -> None:
    """Resources per trial that no trial could get, refused before anything is written or Ray starts."""
    check_cpus(s, study)
    check_gpus(s)


def default_concurrency(cluster: dict[str, float], cpus: float, gpus: float) -> int:
    """As many trials as the cluster's CPUs (and GPUs) hold. Without an explicit limit, Tune with a searcher keeps
    one trial pending at a time and, in practice, runs them one after another."""
    fits = [cluster.get("CPU", 1) / cpus] if cpus > 0 else []
    if gpus > 0:
        fits.append(cluster.get("GPU", 0) / gpus)
    return max(1, int(min(fits, default=1) + 1e-9))


@dataclass(frozen=True)
class Plan:
    """A sweep checked and resolved: what `sweep run` saves in sweep.json and `sweep resume` reads back."""

    settings: SweepSettings
    study: Study
    strategies: tuple[str, ...]
    epochs: int
    num_samples: int
    name: str
    storage: str
    task: str = "image"

    @property
    def exp(self) -> str:
        return join(self.storage, self.name)

    def to_json(self) -> str:
        return json.dumps(
            {
                "settings": asdict(self.settings),
                "name": self.name,
                "storage": self.storage,
                "space": self.study.name,
                "strategies": list(self.strategies),
                "num_samples": self.num_samples,
                "epochs": self.epochs,
                "metric": self.study.metric,
                "mode": self.study.mode,
                "scheduler": self.study.scheduler,
                "sampler": "grid" if self.study.grid is not None else self.study.sampler,
                "task": self.task,
            },
            indent=2,
        )


def plan(s: SweepSettings) -> Plan:
    """Check everything that can be checked before anything is written or Ray starts."""
    study = load_study(s.space)  # a user's file that fails or exits, and a function that raises: UserError
    every, fixed = describe_space(study.space)
    strategies = every
    if s.strategies:
        unknown = [x for x in s.strategies if x not in strategies]
        if unknown:
            raise UserError(
                f"strategy {unknown[0]!r} is not in space {study.name!r}; choose from {', '.join(strategies)}"
            )
        strategies = tuple(dict.fromkeys(s.strategies))
    pinned = s.overrides.get("strategy")
    if pinned is not None:  # `--set strategy=X` runs X alone (the overrides top every trial's config)
        if pinned not in strategies:
            raise UserError(
                f"--set strategy={pinned} is not a strategy of this sweep; choose from {', '.join(strategies)}"
            )
        strategies = (pinned,)
    overrides = trial_overrides(s, fixed.get("task", DEFAULT_TASK))
    for strategy in strategies:  # every branch's fixed part must be a valid trial, or the sweep dies trial by trial
        _check_trial(study, strategy, fixed, overrides, every)
    cfg = parse_config({**fixed, "strategy": strategies[0], **overrides})
    task = get_task(cfg.task)
    task.check_data(cfg)
    if not s.address:  # a local Ray: its trials run on this machine, so what they would refuse is refused here
        _check_local_trial(cfg)
    study = replace(study, metric=study.metric or task.metric, mode=study.mode or task.mode)
    num_samples = s.num_samples or (4 if s.smoke_test else study.num_samples)
    if num_samples < 1:
        raise UserError(f"`--num-samples` is {num_samples} but must be >= 1")
    storage = resolve_storage(s.storage)
    name = s.name if s.name is not None else default_name(study.name)
    return Plan(s, study, strategies, cfg.epochs, num_samples, name, storage, cfg.task)


def _check_local_trial(cfg: Any) -> None:
    """The device and precision a trial would resolve in its worker, resolved here first (the fix, in one line)."""
    from trainables.loop import resolve_device

    device = resolve_device(getattr(cfg, "device", "auto"))
    if getattr(cfg, "precision", "auto") == "bf16":
        from trainables.accel import Accel

        Accel.resolve(device, "bf16")


# A sweep's name is one path component on every filesystem and object store: the POSIX portable file name
# characters, not starting with '.' or '-' (hidden files, options), not a name Windows reserves for a device.
NAME_RULE = "1 to 100 of the characters A-Z a-z 0-9 . _ -, starting with a letter, digit or _"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")
_RESERVED = re.compile(r"(CON|PRN|AUX|NUL|COM[1-9]|LPT[1-9])(\..*)?", re.IGNORECASE)


def check_name(name: str) -> None:
    """A new sweep's name, refused in one line (with the rule) unless it is safe as a directory name anywhere."""
    if not _NAME.fullmatch(name) or name.endswith(".") or _RESERVED.fullmatch(name):
        shown = repr(name) if len(name) <= 60 else f"{name[:40]!r}... ({len(name)} characters)"
        raise UserError(f"--name {shown} is not a safe sweep name: use {NAME_RULE} (not ending in '.')")


def default_name(study: str) -> str:
    """``<study>-<timestamp>``, the study's name made safe (a user's ``my space.py:f`` gives ``my-space.f``)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", study).strip(".-")[:80] or "sweep"
    return f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}"


def _valid(config: dict[str, Any]) -> str:
    """'' for a valid trial config, else why not."""
    try:
        parse_config(config)
    except UserError as exc:
        return str(exc)
    return ""


def _check_trial(
    study: Study, strategy: str, fixed: dict[str, Any], overrides: dict[str, Any], every: tuple[str, ...]
) -> None:
    """A branch's fixed settings topped with the command line's must be a valid trial; the error says whose to fix."""
    problem = _valid({**fixed, "strategy": strategy, **overrides})
    if not problem:
        return
    if _valid({**fixed, "strategy": strategy}) == problem:
        fix = f"fix the settings that search space {study.name!r} returns"
    else:
        fix = "fix the --set, --epochs or --data-root value"
        suits = [x for x in every if not _valid({**fixed, "strategy": x, **overrides})]
        if suits:
            fix += f", or keep to the strategies it suits: --strategies {','.join(suits)}"
    raise UserError(f"{problem} (trials of strategy {strategy!r}); {fix}")


def check_address(address: str | None, timeout: float = ADDRESS_TIMEOUT_S) -> None:
    """Fail fast, in one line, when nothing listens at a Ray address (ray.init would retry for a minute)."""
    if not address or address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return
    except ValueError:
        reason = "it is not host:port"
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    given = "--address" if os.environ.get("RAY_ADDRESS") != address else "RAY_ADDRESS"
    raise UserError(
        f"no Ray cluster answers at {given} {address} ({reason}); start one with `ray start --head` "
        f"or leave out {given} to run on a local Ray"
    )


def init_ray(address: str | None, dashboard: bool, num_cpus: int | None = None) -> None:
    """Connect to ``address`` or start a local Ray; a Ray that will not start is one line with its cause."""
    import ray

    if ray.is_initialized():
        return
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
            return
        # A local Ray executes whatever reaches its ports: bind it to loopback (sweep.cli and the tests' conftest
        # set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before Ray is imported, which it needs), and no dashboard unless
        # asked.
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=dashboard,
            dashboard_host="127.0.0.1",
            _node_ip_address="127.0.0.1",
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
    except Exception as exc:  # not the storage's fault, nor a bug of ours: Ray's environment
        cause = " ".join(str(exc).split()) or type(exc).__name__
        if "AF_UNIX path length" in cause:
            fix = "set RAY_TMPDIR to a short directory, e.g. RAY_TMPDIR=/tmp/ray"
        elif address:
            fix = "check that the cluster at that address is up and runs Ray 2.60"
        else:
            fix = "see Ray's logs under $RAY_TMPDIR (default /tmp/ray)"
        where = f"connect to the Ray cluster at {address}" if address else "start a local Ray"
        raise UserError(f"could not {where} ({cause[:300]}); {fix}") from exc


# --- the two entry points ---------------------------------------------------------------------------------------


def run(s: SweepSettings, out=sys.stdout) -> int:
    """`sweep run`: a new sweep."""
    p = plan(s)
    check_name(p.name)
    existing = read_text(join(p.exp, ledger.SETTINGS_FILE))
    if existing is not None:
        space = json.loads(existing).get("space")
        hint = f"continue it with `{command('resume', p.name, p.storage)}`"
        if space != p.study.name:
            raise UserError(
                f"sweep {p.name!r} already exists in {p.storage} with space {space!r}, not {p.study.name!r}; "
                f"choose another --name (or {hint})"
            )
        raise UserError(f"sweep {p.name!r} already exists in {p.storage}; {hint}, or choose another --name")
    if not is_uri(p.exp) and Path(p.exp).exists() and any(Path(p.exp).iterdir()):
        raise UserError(f"{p.exp} exists and is not a sweep; choose another --name or --storage")
    check_writable(p.storage, "--storage")
    check_address(s.address)
    check_resources(s, p.study)
    write_atomic(join(p.exp, ledger.SETTINGS_FILE), p.to_json())
    errors.resume_with(command("resume", p.name, p.storage))
    ledger.create_study(p.exp, p.name, p.study.mode)
    return _session(p, out)


def load_plan(name: str, storage: str) -> tuple[Plan, optuna.Study]:
    """The plan and study of an existing sweep, re-checked; UserError in one line when there is none."""
    exp, saved, study = ledger.load_sweep(name, storage)
    known = {f.name for f in fields(SweepSettings)}
    settings = SweepSettings(**{k: v for k, v in saved["settings"].items() if k in known})
    p = plan(settings)
    kept = replace(p, strategies=tuple(saved["strategies"]), epochs=saved["epochs"], num_samples=saved["num_samples"],
                   name=name, storage=resolve_storage(storage))
    return kept, study


def resume(name: str, storage: str, *, address: str | None = None, max_concurrent: int | None = None,
           out=sys.stdout) -> int:
    """`sweep resume`: continue an interrupted sweep with its own settings."""
    p, study = load_plan(name, storage)
    driver = ledger.read_driver(p.exp)
    if ledger.is_live(driver):
        last = driver["sessions"][-1]
        raise UserError(
            f"sweep {name!r} is running (driver pid {last['pid']} on {last['host']}); "
            f"stop it first, or follow it with `{command('status', name, storage)}`"
        )
    done = len(study.get_trials(deepcopy=False, states=ledger.FINISHED))
    if done >= p.num_samples or driver.get("state") == "finished":
        raise UserError(
            f"sweep {name!r} already finished ({done} of {p.num_samples} trials); see "
            f"`{command('status', name, storage)}` or start another with `sweep run --name NEW`"
        )
    if address is not None:
        p.settings.address = address
    if max_concurrent is not None:
        p.settings.max_concurrent = max_concurrent
    check_address(p.settings.address)
    check_resources(p.settings, p.study)
    errors.resume_with(command("resume", p.name, p.storage))
    return _session(p, out)


# --- one driver session -----------------------------------------------------------------------------------------


class Interrupt:
    """Ctrl-C or SIGTERM: stop Tune gracefully (through its SIGUSR1 hook), say how to resume. A second one aborts;
    nothing is lost either way, the state is on disk."""

    def __init__(self) -> None:
        self.fired = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Interrupt:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.fired or signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
            self.fired = True
            raise KeyboardInterrupt
        self.fired = True
        print("\nstopping: trials in flight keep their last checkpoint (press Ctrl-C again to stop at once)",
              file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGUSR1)


def _trial_dirname(trial: Any) -> str:
    from trainables.tune_entry import TRIAL_KEY

    return ledger.trial_dirname(trial.config[TRIAL_KEY], trial.config.get("strategy", "trial"))


def _heartbeat_callback(exp: str, driver: dict[str, Any], searcher: Any) -> Any:
    from ray.tune import Callback

    class Heartbeat(Callback):
        """Tells `sweep status` (and a would-be second driver) that this one is alive."""

        def __init__(self) -> None:
            self.last = 0.0

        def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
            now = time.time()
            if now - self.last >= HEARTBEAT_S:
                self.last = now
                driver["sessions"][-1]["heartbeat"] = now
                try:
                    ledger.write_driver(exp, driver)
                except OSError as exc:  # the storage failed: stop the sweep (see _StorageStop), lose nothing
                    searcher.storage_fault = searcher.storage_fault or errors.storage_problem(exc)

    return Heartbeat()


def _storage_stop(searcher: Any) -> Any:
    from ray.tune import Stopper

    class StorageStop(Stopper):
        """Ends the Tune run once the storage has failed: a trial that cannot write its checkpoint has not failed,
        and the ones after it would fail the same way. The sweep stops as if interrupted; resume goes on."""

        def __call__(self, trial_id: str, result: dict) -> bool:
            return False

        def stop_all(self) -> bool:
            return bool(searcher.storage_fault)

    return StorageStop()


def _session(p: Plan, out) -> int:
    return drive_session(p.exp, lambda k, driver: _drive(p, k, driver, out))


def drive_session(exp: str, drive: Callable[[int, dict[str, Any]], int]) -> int:
    """Run ``drive(session_number, driver_record)`` as a new driver session of the run kept in ``exp``; the driver
    record says interrupted unless ``drive`` set another state."""
    number, driver = ledger.start_session(exp)
    errors.attach(exp, exp.split("?", 1)[0].rstrip("/").split("://")[-1])
    try:
        return drive(number, driver)
    finally:
        if driver["state"] == "running":  # an exception: the next `sweep resume` picks up from here
            driver["state"] = "interrupted"
        driver["sessions"][-1]["heartbeat"] = time.time()
        ledger.write_driver(exp, driver)


def _drive(p: Plan, session: int, driver: dict[str, Any], out) -> int:
    s, exp, epochs, n = p.settings, p.exp, p.epochs, p.num_samples
    init_ray(s.address, s.dashboard)
    from sweep.progress import Progress
    from sweep.study import SweepSearcher, finish_ask, make_scheduler

    study = ledger.open_study(exp, writer=True)
    scheduler = make_scheduler(p.study.scheduler, epochs)
    scheduler.set_search_properties(p.study.metric, p.study.mode)
    overrides = trial_overrides(s, p.task)
    saved = ledger.newest_checkpoints(exp)

    def rebuild(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        return finish_ask(study, trial, p.study.space, overrides, s.seed, p.study.grid, p.study.sampler)

    resumable = ledger.reconcile(study, saved, scheduler, epochs, p.study.metric, rebuild)
    ledger.remove_leftovers(exp, saved)
    asked = len(study.get_trials(deepcopy=False, states=ledger.ASKED))
    done = len(study.get_trials(deepcopy=False, states=ledger.FINISHED))
    to_run = len(resumable) + max(0, n - asked)
    verb = "resuming" if session else "sweep"
    n_strat = len(p.strategies)
    print(
        f"{verb} {p.name}: space {p.study.name}, {n} trials over {n_strat} strateg{'y' if n_strat == 1 else 'ies'}, "
        f"{epochs} epochs each at most, scheduler {p.study.scheduler}, results in {exp}",
        file=out,
    )
    if session:
        print(f"{done} trials finished before; {len(resumable)} to continue, {max(0, n - asked)} to start", file=out)
    elif p.study.grid is None and n % n_strat:
        print(f"note: {n} trials over {n_strat} strategies: shares differ by one; use a multiple of {n_strat} for an "
              "equal share", file=out)

    budget = None if s.time_budget_s is None else s.time_budget_s - ledger.time_spent(driver)
    wall = 0.0
    interrupt = Interrupt()
    if to_run and (budget is None or budget > 0):
        searcher = SweepSearcher(
            study,
            p.study.space,
            metric=p.study.metric,
            mode=p.study.mode,
            max_t=epochs,
            num_samples=n,
            strategies=p.strategies,
            seed=s.seed,
            session=session,
            overrides=overrides,
            grid=p.study.grid,
            sampler=p.study.sampler,
            resume=resumable,
            log=lambda msg: print(msg, file=out, flush=True),
        )
        progress = Progress(n, epochs, p.study.metric, done=done, out=out,
                            searched=lambda number: study.get_trials(deepcopy=False)[number].params)
        wall = fit(s, p.study, exp, session, driver, searcher, scheduler, to_run, [progress], interrupt, budget, out,
                   task=p.task)

    saved = ledger.newest_checkpoints(exp)
    unfinished = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    asked = len(study.get_trials(deepcopy=False, states=ledger.ASKED))
    out_of_time = budget is not None and wall >= budget - 1.0
    state = "finished"
    if interrupt.fired or (not out_of_time and (unfinished or asked < n)):
        state = "interrupted"
    elif unfinished or asked < n:
        cut = ledger.cut_unfinished(study, saved, epochs, p.study.metric, "time budget")
        print(f"time budget of {s.time_budget_s:.0f} s spent: {cut} trial(s) cut, {n - asked} never started",
              file=out)
        state = "finished"
    ledger.remove_leftovers(exp, saved)
    records = ranking.records_from(study, saved)
    _print_ranking(p, records, wall, out)
    driver["state"] = state
    if state == "interrupted":
        print(
            f"interrupted: {len([r for r in records if r.finished])} of {n} trials finished. "
            f"Continue with: {command('resume', p.name, p.storage)}",
            file=out,
        )
        return 130
    failed = [r for r in records if r.status == "failed"]
    if failed:
        print(f"{len(failed)} trial(s) failed; `{command('status', p.name, p.storage)}` lists why", file=out)
    print(f"next: `{command('confirm', p.name, p.storage)}` re-runs the finalists on paired seeds and the test split; "
          f"`{command('report', p.name, p.storage)}` writes the report", file=out)
    return 0


def fit(
    s: SweepSettings,
    study: Study,
    exp: str,
    session: int,
    driver: dict[str, Any],
    searcher: Any,
    scheduler: Any,
    num_samples: int,
    callbacks: list[Any],
    interrupt: Interrupt,
    budget: float | None = None,
    out=sys.stdout,
    task: str = DEFAULT_TASK,
) -> float:
    """One Tune run of ``num_samples`` trials from ``searcher`` in ``exp/session-K``; returns its wall time.

    The workers get the task's record from here, not from their own registry: a task the driver registered (a
    user's, outside the project) trains on every node as it does on this one.
    """
    import ray
    from ray import tune

    from sweep.study import TrialIndex
    from trainables.tune_entry import trainable

    cluster = ray.cluster_resources()
    cpus, gpus = cpus_per_trial(s, study), gpus_per_trial(s, study, cluster, out)
    concurrent = s.max_concurrent or default_concurrency(cluster, cpus, gpus)
    where = f"{cluster.get('CPU', 0):g} CPU" + (f", {cluster['GPU']:g} GPU" if cluster.get("GPU") else "")
    print(f"resources: {cpus:g} CPU" + (f" + {gpus:g} GPU" if gpus else "") + f" per trial, {concurrent} at a time "
          f"(Ray has {where} now)", file=out)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, task=get_task(task)), {"cpu": cpus, "gpu": gpus}),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,  # metric and mode set on it and on the searcher; TuneConfig must not repeat them
            num_samples=num_samples,
            max_concurrent_trials=concurrent,
            trial_dirname_creator=_trial_dirname,
            # One worker process serves trial after trial: torch and friends are imported once, not per trial.
            reuse_actors=True,
            time_budget_s=budget,
        ),
        run_config=tune.RunConfig(
            name=ledger.session_name(session),
            storage_path=exp,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=s.max_failures),
            callbacks=[TrialIndex(searcher), *callbacks, _heartbeat_callback(exp, driver, searcher)],
            stop=_storage_stop(searcher),
            verbose=0,
        ),
    )
    # Tune's own end-of-run advice (Tuner.restore, missing result files of trials that never reported) is wrong
    # for a sweep resumed by `sweep resume`; our lines say what happened.
    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    start = time.perf_counter()
    with interrupt:
        tuner.fit()
    if searcher.storage_fault:
        raise errors.StorageFault(searcher.storage_fault)
    return time.perf_counter() - start


def _print_ranking(p: Plan, records: list[ranking.TrialRecord], wall: float, out) -> None:
    rows = ranking.rank(records, p.study.metric, p.study.mode, p.epochs)
    table = ranking.format_table(rows, p.study.metric, p.epochs)
    spent = sum(r.epochs for r in records)
    budget = p.num_samples * p.epochs
    summary = (
        f"{len(records)}/{p.num_samples} trials, {spent} trial-epochs of {budget} ({spent / max(1, budget):.0%})"
        + (f", {wall:.0f} s this session" if wall else "")
    )
    print(f"\nranking by validation {p.study.metric} ({summary}):\n{table}", file=out)
    write_atomic(join(p.exp, ledger.RANKING_FILE), f"# {p.name}\n\n{summary}\n\n{table}\n")
