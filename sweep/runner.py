"""`sweep run`: build the Tuner (OptunaSearch + ASHA on Ray Tune), run it, print and save the ranking."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from search_spaces import Study, describe_space, load_study
from sweep import ranking
from sweep.storage import join, resolve_storage, write_atomic
from sweep.study import SpaceWithOverrides, make_scheduler, make_searcher
from trainables.config import TrialConfig
from trainables.data import check_dataset

SETTINGS_FILE = "sweep.json"
RANKING_FILE = "ranking.md"

# Ray snapshots its experiment state every 10 s by default; a kill loses what happened since. 1 s costs little here.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


@dataclass
class SweepSettings:
    """Everything `sweep run` was asked, saved beside the results so the sweep can be resumed and reported."""

    space: str = "digits"
    name: str | None = None
    storage: str = "./sweeps"
    num_samples: int | None = None
    max_concurrent: int | None = None
    epochs: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    seed: int = 0
    address: str | None = None
    data_root: str | None = None
    smoke_test: bool = False
    dashboard: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)


def trial_overrides(s: SweepSettings) -> dict[str, Any]:
    out: dict[str, Any] = {"seed": s.seed}
    if s.epochs is not None:
        out["epochs"] = s.epochs
    if s.data_root is not None:
        out["data_root"] = s.data_root
    if s.smoke_test:  # seconds, not minutes: a sliver of the data, a tiny encoder, a cheap probe
        out.update(
            epochs=s.epochs or 2,
            limit=200,
            width=8,
            proj_hidden_dim=32,
            proj_dim=16,
            probe_epochs=20,
            batch_size=32,
        )
    return {**out, **s.overrides}


def default_concurrency(resources: dict[str, float], s: SweepSettings) -> int:
    """As many trials as the cluster's CPUs (and GPUs) hold. Without an explicit limit, Tune with a searcher keeps
    one trial pending at a time and, in practice, runs them one after another."""
    fits = [resources.get("CPU", 1) / s.cpus_per_trial] if s.cpus_per_trial > 0 else []
    if s.gpus_per_trial > 0:
        fits.append(resources.get("GPU", 0) / s.gpus_per_trial)
    return max(1, int(min(fits, default=1) + 1e-9))


def _trial_dirname(trial: Any) -> str:
    return f"{trial.config.get('strategy', 'trial')}_{trial.trial_id}"


def plan(s: SweepSettings) -> tuple[Study, tuple[str, ...], dict[str, Any], int, int]:
    """Check everything that can be checked before Ray starts; return the study, strategies, config, epochs, n."""
    study = load_study(s.space)
    strategies, fixed = describe_space(study.space)
    config = {**fixed, **trial_overrides(s)}
    for strategy in strategies:  # every branch's fixed part must be a valid trial, or the sweep dies trial by trial
        TrialConfig.from_dict({**config, "strategy": strategy})
    cfg = TrialConfig.from_dict({**config, "strategy": strategies[0]})
    check_dataset(cfg.dataset, cfg.data_root)
    num_samples = s.num_samples or (4 if s.smoke_test else study.num_samples)
    if num_samples < 1:
        raise ValueError(f"`--num-samples` is {num_samples} but must be >= 1")
    return study, strategies, config, cfg.epochs, num_samples


def init_ray(address: str | None, dashboard: bool, num_cpus: int | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        return
    # A local Ray executes whatever reaches its ports: bind it to loopback (sweep.cli and the tests' conftest set
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before Ray is imported, which it needs), and no dashboard unless asked.
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=dashboard,
        dashboard_host="127.0.0.1",
        _node_ip_address="127.0.0.1",
        logging_level=logging.WARNING,
        log_to_driver=False,
    )


def run(s: SweepSettings, out=sys.stdout) -> int:
    study, strategies, config, epochs, num_samples = plan(s)
    name = s.name or f"{study.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = resolve_storage(s.storage)
    exp = join(storage, name)
    scheduler_kind = study.scheduler
    n_strat = len(strategies)
    print(
        f"sweep {name}: space {study.name}, {num_samples} trials over {n_strat} strateg{'y' if n_strat == 1 else 'ies'}"
        f", {epochs} epochs each at most, scheduler {scheduler_kind}, results in {exp}",
        file=out,
    )
    if study.grid is None and num_samples % n_strat:
        print(
            f"note: {num_samples} trials over {n_strat} strategies: shares differ by one; "
            f"use a multiple of {n_strat} for an equal share",
            file=out,
        )
    write_atomic(
        join(exp, SETTINGS_FILE),
        json.dumps(
            {
                **asdict(s),
                "name": name,
                "storage": storage,
                "num_samples": num_samples,
                "epochs": epochs,
                "metric": study.metric,
                "mode": study.mode,
            },
            indent=2,
        ),
    )

    init_ray(s.address, s.dashboard)
    import ray
    from ray import tune

    from sweep.progress import Progress
    from trainables.tune_entry import trainable

    searcher = make_searcher(
        SpaceWithOverrides(study.space, trial_overrides(s)),
        metric=study.metric,
        mode=study.mode,
        seed=s.seed,
        max_t=epochs,
        strategies=strategies,
        num_samples=num_samples,
        grid=study.grid,
    )
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": s.cpus_per_trial, "gpu": s.gpus_per_trial}),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=make_scheduler(scheduler_kind, epochs),
            metric=study.metric,
            mode=study.mode,
            num_samples=num_samples,
            max_concurrent_trials=s.max_concurrent or default_concurrency(ray.cluster_resources(), s),
            trial_dirname_creator=_trial_dirname,
            # One worker process serves trial after trial: torch and friends are imported once, not per trial.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=2),
            callbacks=[Progress(num_samples, epochs, study.metric, out=out)],
            verbose=0,
        ),
    )
    start = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - start
    records = [_record(r) for r in grid if r.config]
    rows = ranking.rank(records, study.metric, study.mode, epochs)
    table = ranking.format_table(rows, study.metric, epochs)
    spent = sum(r.epochs for r in records)
    summary = (
        f"{len(records)}/{num_samples} trials, {spent} trial-epochs of {num_samples * epochs} "
        f"({spent / max(1, num_samples * epochs):.0%}), {wall:.0f} s"
    )
    print(f"\nranking by validation {study.metric} ({summary}):\n{table}", file=out)
    write_atomic(join(exp, RANKING_FILE), f"# {name}\n\n{summary}\n\n{table}\n")
    if len(records) < num_samples:
        print(f"interrupted: {len(records)} of {num_samples} trials ran; results so far are in {exp}", file=out)
        return 130
    failed = sum(1 for r in records if r.status == "ERROR")
    if failed:
        print(f"{failed} trial(s) failed; their error files are under {exp}", file=out)
    return 0


def _record(result: Any) -> ranking.TrialRecord:
    df = result.metrics_dataframe
    history = []
    if df is not None and len(df):
        # a restored trial may repeat a row: keep the last report of each epoch
        df = df.drop_duplicates(subset="epoch", keep="last") if "epoch" in df else df
        history = [
            {k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
            for row in df.to_dict("records")
        ]
    status = "ERROR" if result.error else "TERMINATED"
    return ranking.TrialRecord(
        trial_id=str(result.metrics.get("trial_id", "")),
        config=dict(result.config),
        history=history,
        status=status,
        error=str(result.error or ""),
    )
