"""`sweep run` and `sweep resume`: drive one session of a sweep on Ray Tune, once :mod:`sweep.plan` checked it.

A session is one driver process's share of a sweep. The sweep's state lives on disk (see :mod:`sweep.ledger`), so a
session killed at any moment is continued by the next one: finished trials stay finished, unfinished ones go on
from their newest checkpoint under their own number, and new trials are asked for until the budget is spent.

Other commands that run trials on Tune (`sweep confirm`) use :func:`drive_session`, :func:`fit` and
:class:`Interrupt` (``__all__``, with `run`, `resume` and `check_run`, which a dry run shares), and nothing else of
this module.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

from search_spaces import Study
from sweep import errors, ledger, ranking
from sweep.check import damage_lines
from sweep.claim import LOCK_FILE, claim
from sweep.plan import (
    Plan,
    SweepSettings,
    check_can_start,
    check_name,
    cpus_per_trial,
    default_concurrency,
    gpus_per_trial,
    load_plan,
    plan,
    trial_overrides,
)
from sweep.ray_start import init_ray
from sweep.storage import check_writable, command, is_uri, join, list_names, read_text, remove_tree, write_atomic
from trainables.errors import UserError
from trainables.tasks import DEFAULT_TASK, get_task

__all__ = ["Interrupt", "check_run", "drive_session", "fit", "resume", "run"]

HEARTBEAT_S = 5.0


# --- the two entry points ---------------------------------------------------------------------------------------


def run(s: SweepSettings, out=sys.stdout) -> int:
    """`sweep run`: a new sweep. Everything that can be checked is checked before the sweep directory is claimed,
    so a refused run writes nothing and never takes the name."""
    p = plan(s)
    check_run(p)
    for line in p.warnings():
        print(line, file=out, flush=True)
    with claim(p.exp, creating=True):
        _check_new(p)  # a driver that created it and ended between the first look and the claim
        write_atomic(join(p.exp, ledger.SETTINGS_FILE), p.to_json())
        errors.resume_with(command("resume", p.name, p.storage))
        ledger.create_study(p.exp, p.name, p.study.mode, p.study.metric)
        return _then(p, _session(p, out), out)


def check_run(p: Plan, *, probe_storage: bool = True) -> None:
    """Everything `sweep run` checks before it claims the name. A dry run (``probe_storage=False``) leaves out the one
    check that writes, a probe file in the storage, and so may miss a storage that cannot be written."""
    check_name(p.name)
    _check_new(p)
    if probe_storage:
        check_writable(p.storage, "--storage")
    check_can_start(p.settings, p.study)


def _check_new(p: Plan) -> None:
    """The sweep's name is free: no sweep there, and no other files (a local folder or an object-store prefix)."""
    existing = read_text(join(p.exp, ledger.SETTINGS_FILE))
    if existing is not None:
        try:
            space = json.loads(existing).get("space")
        except (ValueError, AttributeError):
            space = None
        hint = f"continue it with `{command('resume', p.name, p.storage)}`"
        if space is not None and space != p.study.name:
            raise UserError(
                f"sweep {p.name!r} already exists in {p.storage} with space {space!r}, not {p.study.name!r}; "
                f"choose another --name (or {hint})"
            )
        raise UserError(f"sweep {p.name!r} already exists in {p.storage}; {hint}, or choose another --name")
    if [n for n in list_names(p.exp) if not n.startswith(LOCK_FILE)]:  # a claim alone: a sweep being created
        raise UserError(f"{p.exp} exists and is not a sweep; choose another --name or --storage")


def resume(name: str, storage: str, *, address: str | None = None, max_concurrent: int | None = None,
           out=sys.stdout) -> int:
    """`sweep resume`: continue an interrupted sweep with its own settings (a pipeline: whichever stage was)."""
    p, study = load_plan(name, storage)
    if address is not None:
        p.settings.address = address
    if max_concurrent is not None:
        p.settings.max_concurrent = max_concurrent
    _check_resumable(p, ledger.read_driver(p.exp), study)
    check_can_start(p.settings, p.study)
    with claim(p.exp):  # a live driver's claim is refused; a dead one's is taken over
        driver, study = ledger.read_driver(p.exp), ledger.open_study(p.exp)
        finished = _check_resumable(p, driver, study)
        errors.resume_with(command("resume", p.name, p.storage))
        return _then(p, 0 if finished else _session(p, out), out)


def _check_resumable(p: Plan, driver: dict[str, Any], study: optuna.Study) -> bool:
    """Whether the sweep stage is finished; UserError when the sweep runs or there is nothing left to do."""
    if ledger.is_live(driver):
        last = driver["sessions"][-1]
        raise UserError(
            f"sweep {p.name!r} is running (driver pid {last['pid']} on {last['host']}); "
            f"stop it first, or follow it with `{command('status', p.name, p.storage)}`"
        )
    done = len(study.get_trials(deepcopy=False, states=ledger.FINISHED))
    finished = done >= p.num_samples or driver.get("state") == "finished"
    if finished and p.settings.confirm is None:
        raise UserError(
            f"sweep {p.name!r} already finished ({done} of {p.num_samples} trials); see "
            f"`{command('status', p.name, p.storage)}` or start another with `sweep run --name NEW`"
        )
    return finished


def _then(p: Plan, code: int, out) -> int:
    """After a sweep session: with `--confirm`, the stages that follow a finished sweep, each resumable (`sweep
    resume` continues whichever was interrupted): the race of its finalists, then the report; the terminal ends with
    the race's table and its answer in one sentence."""
    if code != 0 or p.settings.confirm is None:
        return code
    from sweep.confirm import confirm, final_answer
    from sweep.race import Rules
    from sweep.report import report

    options = dict(p.settings.confirm)
    budget = options.pop("time_budget_s", None)
    code = confirm(p.name, p.storage, rules=Rules(**options), time_budget_s=budget, out=out,
                   again=command("resume", p.name, p.storage), show=False)
    if code != 0:
        return code
    print(file=out)
    report(p.name, p.storage, out=out)
    print(final_answer(p.exp, p.name), file=out)
    return 0


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
    return drive_session(p.exp, p.settings, lambda k, driver: _drive(p, k, driver, out))


def drive_session(exp: str, s: SweepSettings, drive: Callable[[int, dict[str, Any]], int]) -> int:
    """Run ``drive(session_number, driver_record)`` as a new driver session of the run kept in ``exp``, on the Ray
    that ``s`` asks for (started or joined first); the driver record says interrupted unless ``drive`` set another
    state."""
    number, driver = ledger.start_session(exp)
    errors.attach(exp, exp.split("?", 1)[0].rstrip("/").split("://")[-1])
    try:
        init_ray(s.address, s.dashboard)
        return drive(number, driver)
    finally:
        if driver["state"] == "running":  # an exception: the next `sweep resume` picks up from here
            driver["state"] = "interrupted"
        driver["sessions"][-1]["heartbeat"] = time.time()
        ledger.write_driver(exp, driver)


def _drive(p: Plan, session: int, driver: dict[str, Any], out) -> int:
    s, exp, epochs, n = p.settings, p.exp, p.epochs, p.num_samples
    from sweep.progress import Progress, watch_commands
    from sweep.scheduling import make_scheduler
    from sweep.study import SweepSearcher, finish_ask

    study = ledger.open_study(exp, writer=True)
    scheduler = make_scheduler(p.study.scheduler, epochs)
    scheduler.set_search_properties(p.study.metric, p.study.mode)
    overrides = trial_overrides(s, p.task)
    saved, damaged = ledger.scan_checkpoints(exp)
    for line in damage_lines(damaged, ranking.records_from(study, saved, p.study.metric)):
        print(f"warning: {line}", file=out)

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
        print("watch it live:", file=out)
        for line in [f"  {command('status', p.name, p.storage)} --watch", *watch_commands(exp, not is_uri(exp))]:
            print(line, file=out)
        progress = Progress(n, epochs, p.study.metric, done=done, out=out, mode=p.study.mode,
                            searched=lambda number: study.get_trials(deepcopy=False)[number].params)
        searcher = SweepSearcher(
            study,
            p.study.space,
            metric=p.study.metric,
            mode=p.study.mode,
            epochs=epochs,
            num_samples=n,
            strategies=p.strategies,
            seed=s.seed,
            session=session,
            overrides=overrides,
            grid=p.study.grid,
            sampler=p.study.sampler,
            resume=resumable,
            log=progress.log,
        )
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
    records = ranking.records_from(study, saved, p.study.metric)
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
    if p.settings.confirm is None:
        print(f"next: `{command('confirm', p.name, p.storage)}` races each strategy's finalist on fresh, paired seeds "
              f"to see which differences hold up; `{command('report', p.name, p.storage)}` writes the report",
              file=out)
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

    from sweep import trackers
    from sweep.study import TrialIndex
    from trainables.tune_entry import trainable

    cluster = ray.cluster_resources()
    cpus, gpus = cpus_per_trial(s, study), gpus_per_trial(s, study, cluster, out)
    concurrent = s.max_concurrent or default_concurrency(cluster, cpus, gpus)
    for callback in callbacks:  # the live display's estimate of the time left needs it
        if isinstance(getattr(callback, "slots", None), int):
            callback.slots = concurrent
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
            callbacks=[TrialIndex(searcher), *callbacks, _heartbeat_callback(exp, driver, searcher),
                       *trackers.callbacks(exp, s.tracker)],
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
    spent = sum(r.reached for r in records)
    budget = p.num_samples * p.epochs
    summary = (
        f"{len(records)}/{p.num_samples} trials, {spent} trial-epochs of {budget} ({spent / max(1, budget):.0%})"
        + (f", {wall:.0f} s this session" if wall else "")
    )
    print(f"\nranking by validation {p.study.metric} ({summary}):\n{table}", file=out)
    write_atomic(join(p.exp, ledger.RANKING_FILE), f"# {p.name}\n\n{summary}\n\n{table}\n")


def delete(name: str, storage: str, *, yes: bool = False, ask: Any = input, out=sys.stdout) -> int:
    """`sweep delete`: remove a sweep's directory, everything in it; never one a live driver holds, and only after
    a yes (asked on a terminal, else ``--yes``)."""
    from sweep.claim import claim

    exp, settings, study = ledger.load_sweep(name, storage)
    n = len(study.get_trials(deepcopy=False))
    what = f"sweep {name} in {exp} ({n} trials, space {settings['space']})"
    if not yes:
        if not sys.stdin.isatty():
            raise UserError(f"{what}: pass --yes to delete it without being asked")
        if ask(f"delete {what} and everything in it? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing deleted", file=out)
            return 1
    with claim(exp):  # a live driver's claim is refused: a running sweep is never deleted
        if ledger.is_live(ledger.read_driver(exp, strict=False)):
            raise UserError(f"{what} is running; stop it first")
        remove_tree(exp)
    print(f"deleted {what}", file=out)
    return 0
