"""What `sweep run` and `sweep resume` check and resolve before anything is written or Ray starts.

A sweep is checked in full up front (its space, its strategies, a trial's config, the resources a trial asks for,
the Ray address), so that a mistake is one line at once, not a failure per trial once Ray is up.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import optuna

from search_spaces import SCHEDULERS, Study, describe_space, load_study
from sweep import ledger
from sweep.ranking import asha_rungs, rungs_of
from sweep.storage import join, resolve_storage
from trainables.errors import UserError, did_you_mean
from trainables.tasks import DEFAULT_TASK, get_task, parse_config

ADDRESS_TIMEOUT_S = 10.0


@dataclass
class SweepSettings:
    """Everything `sweep run` was asked, saved beside the results so the sweep can be resumed and reported."""

    space: str = "mnist1d"
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
    # `--confirm`: race the finalists when the sweep is done, then write the report (sweep.race.Rules' fields, and
    # the race's own time budget as time_budget_s); None: the sweep alone
    confirm: dict[str, Any] | None = None
    tracker: str | None = None  # `--tracker mlflow|wandb` (sweep.trackers)


def trial_overrides(s: SweepSettings, task: str = DEFAULT_TASK) -> dict[str, Any]:
    out: dict[str, Any] = {"seed": s.seed}
    if s.epochs is not None:
        out["epochs"] = s.epochs
    if s.data_root is not None:
        out["data_root"] = s.data_root
    if s.smoke_test:
        out.update(get_task(task).smoke, epochs=s.epochs or 2)
    return {**out, **s.overrides}


def scoring_step(scheduler: str, epochs: int) -> int:
    """The largest ``eval_every`` that still scores validation at every rung and at the last epoch."""
    return math.gcd(epochs, *rungs_of(scheduler, epochs))


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

    def warnings(self) -> list[str]:
        """What makes this sweep's ranking weak, said before compute is spent (a grid decides its own shares)."""
        if self.study.grid is not None:
            return []
        n, k = self.num_samples, len(self.strategies)
        shares = {s: n // k + (i < n % k) for i, s in enumerate(self.strategies)}  # the searcher's round-robin
        return budget_warnings(self.study.scheduler, self.epochs, shares)

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
                "meta": run_meta(),
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
                f"strategy {unknown[0]!r} is not in space {study.name!r}{did_you_mean(unknown[0], strategies)}; "
                f"choose from {', '.join(strategies)}"
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
    if study.eval_at_rungs and "eval_every" not in fixed and "eval_every" not in overrides:
        epochs = parse_config({**fixed, "strategy": strategies[0], **overrides}).epochs
        s = replace(s, overrides={**s.overrides, "eval_every": scoring_step(study.scheduler, epochs)})
        overrides = trial_overrides(s, fixed.get("task", DEFAULT_TASK))
    cfg = parse_config({**fixed, "strategy": strategies[0], **overrides})
    task = get_task(cfg.task)
    task.check_data(cfg)
    if not s.address:  # a local Ray: its trials run on this machine, so what they would refuse is refused here
        _check_local_trial(cfg)
    study = replace(study, metric=study.metric or task.metric, mode=study.mode or task.mode)
    if study.scheduler not in SCHEDULERS:
        raise UserError(f"study {study.name!r} asks for scheduler {study.scheduler!r}; set its scheduler to one of "
                        f"{', '.join(SCHEDULERS)}")
    every_k = getattr(cfg, "eval_every", 1)
    missed = [r for r in rungs_of(study.scheduler, cfg.epochs) if r % every_k]
    if missed:
        raise UserError(f"eval_every is {every_k}, so validation is not scored at ASHA's rung at epoch {missed[0]}, "
                        f"where trials are compared; use --set eval_every={scoring_step(study.scheduler, cfg.epochs)} "
                        f"(or any divisor of it)")
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


# An HTTP/2 client's first bytes (the connection preface and an empty SETTINGS frame): Ray's GCS and its client
# server speak gRPC, so they answer with a SETTINGS frame; a dashboard or any HTTP/1 server does not.
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def check_address(address: str | None, timeout: float = ADDRESS_TIMEOUT_S) -> None:
    """Fail fast, in one line, when no Ray listens at a Ray address: nothing answers there, or something that is not
    Ray's gRPC does (a dashboard's port): ray.init would retry for ever."""
    if not address or address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    given = "--address" if os.environ.get("RAY_ADDRESS") != address else "RAY_ADDRESS"
    answer, reason = b"", ""
    try:
        conn = socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout)
    except ValueError:
        reason = "it is not host:port"
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    else:
        with conn:
            try:
                conn.settimeout(timeout)
                conn.sendall(_HTTP2_HELLO)
                while len(answer) < 9:
                    chunk = conn.recv(9 - len(answer))
                    if not chunk:
                        break
                    answer += chunk
            except OSError:  # a reset or a silent peer: not Ray, which answers at once
                pass
        if len(answer) == 9 and answer[3] == 0x04:  # an HTTP/2 SETTINGS frame: gRPC, as Ray's GCS speaks
            return
        seen = "nothing" if not answer else repr(answer.split(b"\r\n", 1)[0][:20].decode("latin-1"))
        raise UserError(
            f"{given} {address} answers, but not as Ray (it does not speak gRPC; it sent {seen}); give the address "
            "`ray start --head` printed (the GCS port, 6379 by default), not a dashboard's or another service's"
        )
    raise UserError(
        f"no Ray cluster answers at {given} {address} ({reason}); start one with `ray start --head` "
        f"or leave out {given} to run on a local Ray"
    )


def ray_temp_dir() -> str:
    """Where a local Ray keeps its sockets and logs: Ray's own rule (RAY_TMPDIR, else TMPDIR on Linux, else /tmp)."""
    base = os.environ.get("RAY_TMPDIR") or (os.environ.get("TMPDIR") if sys.platform.startswith("linux") else None)
    return os.path.join(base or "/tmp", "ray")


def check_local_ray(s: SweepSettings) -> None:
    """What would make a local Ray fail to start, refused before anything is written: a temporary directory it
    cannot write, or a dashboard without its packages."""
    if s.address:
        return
    where = ray_temp_dir()
    probe = where
    while not os.path.exists(probe):
        probe = os.path.dirname(probe) or "/"
    if not (os.path.isdir(probe) and os.access(probe, os.W_OK | os.X_OK)):
        raise UserError(f"a local Ray keeps its sockets and logs in {where}, but {probe} is not writable; set "
                        "RAY_TMPDIR (or TMPDIR) to a writable directory, e.g. RAY_TMPDIR=$HOME/ray-tmp")
    if s.dashboard:
        from ray._private.utils import get_dashboard_dependency_error

        problem = get_dashboard_dependency_error()
        if problem:
            raise UserError(
                f"--dashboard needs Ray's dashboard packages, which this environment lacks ({str(problem)[:80]}); "
                "leave out --dashboard (`optuna-dashboard` and `sweep status` show the sweep), or install them with "
                "`.venv/bin/uv pip install 'ray[default]==2.60.*'`"
            )


def check_can_start(s: SweepSettings, study: Study) -> None:
    """A session that could not start, refused before anything is written or claimed: no Ray at ``--address``, a
    local Ray that could not start, or resources per trial that no trial could get."""
    check_address(s.address)
    check_local_ray(s)
    check_resources(s, study)
    from sweep.trackers import check_tracker

    check_tracker(s.tracker)


def load_plan(name: str, storage: str) -> tuple[Plan, optuna.Study]:
    """The plan and study of an existing sweep, re-checked; UserError in one line when there is none."""
    exp, saved, study = ledger.load_sweep(name, storage)
    known = {f.name for f in fields(SweepSettings)}
    settings = SweepSettings(**{k: v for k, v in saved["settings"].items() if k in known})
    p = plan(settings)
    kept = replace(p, strategies=tuple(saved["strategies"]), epochs=saved["epochs"], num_samples=saved["num_samples"],
                   name=name, storage=resolve_storage(storage))
    return kept, study


def budget_warnings(kind: str, epochs: int, trials_per_strategy: Mapping[str, int]) -> list[str]:
    """What makes a sweep's ranking weak before any compute is spent, one line each.

    A strategy with fewer than 3 trials has its nuisance parameters barely tuned. Under pooled ASHA, about
    ``n / rf**r`` of ``n`` trials survive ``r`` rungs, and nothing guarantees that each strategy keeps one to the full
    budget; under ``asha`` the first trial of each strategy at each rung always passes, so each reaches it.
    """
    lines = []
    few = [s for s, n in trials_per_strategy.items() if n < 3]
    if few:
        least = min(trials_per_strategy[s] for s in few)
        lines.append(
            f"warning: {len(few)} of {len(trials_per_strategy)} strategies get fewer than 3 trials (as few as "
            f"{least}: {', '.join(few)}), too few to tune lr and temperature under each; use --num-samples "
            f"{3 * len(trials_per_strategy)} or more"
        )
    if kind == "pooled_asha" and len(trials_per_strategy) > 1:
        total = sum(trials_per_strategy.values())
        survivors = total / 2 ** len(asha_rungs(epochs))
        if survivors < len(trials_per_strategy):
            lines.append(
                f"warning: pooled ASHA brings about {survivors:.1f} of {total} trials to the full {epochs} epochs, "
                f"fewer than the {len(trials_per_strategy)} strategies: some strategies will be ranked below full "
                "budget; use the default scheduler (asha: one rung system per strategy) or more trials"
            )
    return lines


def describe_plan(p: Plan) -> dict[str, Any]:
    """What `sweep run --dry-run` prints: the plan, and what it costs at most, before anything runs.

    Returns plain values and, under ``text``, the same for a terminal.
    """
    n, k, epochs = p.num_samples, len(p.strategies), p.epochs
    shares = {s: n // k + (i < n % k) for i, s in enumerate(p.strategies)} if p.study.grid is None else None
    rungs = rungs_of(p.study.scheduler, epochs)
    cpus = cpus_per_trial(p.settings, p.study)
    gpus = p.settings.gpus_per_trial if p.settings.gpus_per_trial is not None else p.study.gpus_per_trial
    slots = p.settings.max_concurrent or (None if p.settings.address else max(1, int(local_cpus() // cpus)))
    out: dict[str, Any] = {
        "name": p.name, "storage": p.storage, "space": p.study.name, "task": p.task, "metric": p.study.metric,
        "mode": p.study.mode, "strategies": shares or list(p.strategies), "num_samples": n, "epochs": epochs,
        "scheduler": p.study.scheduler, "rungs": rungs, "sampler": "grid" if p.study.grid else p.study.sampler,
        "cpus_per_trial": cpus, "gpus_per_trial": gpus, "trials_at_once": slots,
        "trial_epochs_at_most": n * epochs, "warnings": p.warnings(),
    }
    where = (f"rungs at epochs {', '.join(map(str, rungs))} "
             + ("within each strategy" if p.study.scheduler == "asha" else "over all trials")) if rungs else \
        "every trial to the full budget"
    lines = [
        f"sweep {p.name} in {p.storage} (nothing is written by --dry-run)",
        f"space {p.study.name} (task {p.task}), ranked by validation {p.study.metric} ({p.study.mode})",
        f"{n} trials of at most {epochs} epochs, {p.study.scheduler} ({where}), sampler {out['sampler']}",
        "trials per strategy: " + (", ".join(f"{s} {c}" for s, c in shares.items()) if shares else "the grid's"),
        f"per trial: {cpus:g} CPU" + (f" + {gpus:g} GPU" if gpus else "")
        + (f"; {slots} at a time on this machine" if slots else "; as many at a time as the cluster holds"),
        f"compute: at most {n * epochs} trial-epochs (every trial to the full budget; ASHA stops some early)",
    ]
    if p.settings.confirm:
        race = p.settings.confirm
        low, high = k * race["min_seeds"] * epochs, k * race["max_seeds"] * epochs
        out["race"] = {**race, "trial_epochs_at_least": low, "trial_epochs_at_most": high}
        lines.append(f"then the race: {k} finalists, {race['min_seeds']} to {race['max_seeds']} rounds of "
                     f"{epochs} epochs, {low} to {high} trial-epochs; then the report")
    lines += out["warnings"]
    out["text"] = "\n".join(lines)
    return out


def run_meta() -> dict[str, Any]:
    """What the report's "how this sweep ran" says: the command, this project's version and commit, the versions of
    the libraries that decide a result, the machine, when. Recorded once, when the sweep is created."""
    import platform
    import shlex
    import subprocess
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for package in ("torch", "ray", "optuna", "numpy", "scipy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    commit = ""
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=5)
        if head.returncode == 0:
            dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            commit = head.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass  # not a checkout, or no git: the version says enough
    import torch

    gpus = torch.cuda.device_count()
    argv = sys.argv[1:] if os.path.basename(sys.argv[0]) == "sweep" else ["(Python API)"]
    return {
        "command": shlex.join(["sweep", *argv]),
        "version": versions.get("contrastive-sweeps") or _project_version(),
        "commit": commit,
        "versions": versions,
        "machine": f"{socket.gethostname()}, {platform.machine()}, {os.cpu_count()} CPUs"
                   + (f", {gpus} GPU ({torch.cuda.get_device_name(0)})" if gpus else ", no GPU"),
        "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _project_version() -> str:
    from sweep import __version__

    return __version__
