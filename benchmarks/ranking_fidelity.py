"""Ranking fidelity: does the sweep's answer (which strategy wins) agree with a reference ranking from many seeds?

Full run on 2 idle cores: the reference about 19 min, then about 25 min per search seed (the three contenders), 2 h
in all: ``.venv/bin/python benchmarks/ranking_fidelity.py`` (``--smoke``: three strategies on a sliver of the data,
a few minutes). The reference is computed once and stored in
``benchmarks/results/ranking_reference.json``; a later run reuses it unless ``--reference`` asks to recompute.

On the default study (every two-view strategy on MNIST-1D, ``search_spaces/mnist1d.py``):

- **Reference**: every strategy tuned generously, ``--trials-per-strategy`` (12) TPE trials each, every one to the
  full budget (FIFO); then each strategy's best configuration re-run on ``--ref-seeds`` (10) paired fresh seeds and
  scored on the test split (``sweep confirm --min-seeds 10 --max-seeds 10``, so nothing is dropped). The reference
  top set is every strategy not significantly worse than the best on test (one-sided paired t-test against the best,
  Bonferroni over the others, alpha 0.05: the race's own rule, here on test with all seeds); the reference order is
  the strategies' mean rank over the seeds.
- **Contenders**, each under ``--search-seeds`` (5) search seeds, at the same total trial-epochs: (c) this project's
  default pipeline, ``sweep run --confirm`` (TPE, successive halving within each strategy, then the race) is run
  first and its trial-epochs set the budget of the others; (b) random search + FIFO through the same CLI, with as
  many full-budget trials as fit that budget; (a) what stock Ray Tune gives: ``Tuner`` + ``OptunaSearch`` (its
  default TPE, seeded) + a pooled ``ASHAScheduler`` (grace 1, reduction factor 2) wired as Ray's docs do, with as
  many trials as fit the budget at the epochs per trial pooled ASHA spent so far (2.75 to start: half stop at each
  of the rungs 1, 2, 4), each strategy ranked by its best trial's last score.

Per contender: the share of search seeds whose declared winner is in the reference top set; Kendall's tau between
its order and the reference order (mean and range); trial-epochs as a share of the reference's; wall time. Goal:
(c) puts its winner in the top set in every seed, tau >= 0.7, at <= 25% of the reference's trial-epochs, and beats
(a) on both agreement figures. Also from the reference's FIFO trials: how well a strategy's trials ranked at epoch
k agree with their ranking at the last epoch (Kendall's tau within each strategy, averaged), the figure that says
where ASHA's first rung can go.

Prints Markdown tables; writes ``benchmarks/results/ranking_fidelity.json`` (atomically) and
``ranking_fidelity.png``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a local Ray on loopback only, as `sweep` starts it
ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
for _path in (ROOT, HERE):  # runnable as a plain script without the package installed
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import numpy as np  # noqa: E402
import optuna  # noqa: E402
from fidelity_space import SMOKE_STRATEGIES  # noqa: E402
from scipy import stats  # noqa: E402

from sweep import confirm, ranking  # noqa: E402
from sweep.ledger import newest_checkpoints, open_study  # noqa: E402
from sweep.race import one_sided_p  # noqa: E402
from trainables.files import write_atomic  # noqa: E402

SPACE_FILE = HERE / "fidelity_space.py"
RESULTS = HERE / "results"
REFERENCE_FILE = RESULTS / "ranking_reference.json"
METRIC, ALPHA, CONCURRENCY, REFERENCE_SEED = "linear_acc", 0.05, 2, 1000
ASHA_EPOCHS_PER_TRIAL = 2.75  # pooled ASHA, rungs 1, 2, 4 of 8, rf 2: 1/2 x 1 + 1/4 x 2 + 1/8 x 4 + 1/8 x 8


class Failed(RuntimeError):
    pass


# --- running sweeps through the real CLI ---------------------------------------------------------------------------


def sweep_cli() -> list[str]:
    beside = Path(sys.executable).with_name("sweep")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("sweep")
    return [found] if found else [sys.executable, "-m", "sweep.cli"]


def run_cli(args: Sequence[str], log_path: Path) -> float:
    """Run one `sweep ...` command to its end, its output to ``log_path``; -> wall seconds; Failed on an error."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([*sweep_cli(), *args], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=ROOT)
        try:
            rc = proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
            raise
    if rc != 0:
        lines = log_path.read_text(errors="replace").splitlines()[-15:]
        raise Failed(f"`sweep {' '.join(args[:2])}` exited {rc}:\n" + "\n".join(lines))
    return time.perf_counter() - start


def smoke_args(smoke: bool) -> list[str]:
    return ["--smoke-test", "--strategies", ",".join(SMOKE_STRATEGIES)] if smoke else []


def sweep_records(exp: Path) -> list[ranking.TrialRecord]:
    study = open_study(str(exp))
    if study is None:
        raise Failed(f"no study in {exp}")
    return ranking.records_from(study, newest_checkpoints(str(exp)))


def race_spend(exp: Path) -> int:
    return sum(s.epoch for s in newest_checkpoints(str(exp / confirm.CONFIRM_DIR)).values())


# --- the reference ---------------------------------------------------------------------------------------------------


def reference(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    strategies = SMOKE_STRATEGIES if args.smoke else None
    n_strategies = len(strategies) if strategies else 10
    exp = work / "reference"
    wall = run_cli(["run", "--space", f"{SPACE_FILE}:REFERENCE", "--num-samples",
                    str(args.trials_per_strategy * n_strategies), "--seed", str(REFERENCE_SEED), "--storage",
                    str(work), "--name", "reference", "--max-concurrent", str(CONCURRENCY), *smoke_args(args.smoke)],
                   work / "logs" / "reference_sweep.log")
    wall += run_cli(["confirm", "reference", "--storage", str(work), "--max-seeds", str(args.ref_seeds),
                     "--min-seeds", str(args.ref_seeds)], work / "logs" / "reference_confirm.log")
    records = sweep_records(exp)
    plan, answer = confirm.load_answer(str(exp))
    outcomes = plan.outcomes(newest_checkpoints(str(exp / confirm.CONFIRM_DIR)))
    test: dict[str, list[float]] = {}
    for f in plan.finalists:
        scores = [outcomes.get(plan.number(r, f.strategy)) for r in range(args.ref_seeds)]
        if any(o is None or o.failed or o.test is None for o in scores):
            raise Failed(f"the reference run of {f.strategy} lacks a test score on some seed")
        test[f.strategy] = [float(o.test) for o in scores]
    names = list(test)
    matrix = np.array([test[s] for s in names])  # (S, seeds)
    ranks = stats.rankdata(-matrix, axis=0).mean(axis=1)  # 1 = best, per seed, averaged
    order = [names[i] for i in np.argsort(ranks, kind="stable")]
    means = {s: float(np.mean(test[s])) for s in names}
    best = max(names, key=lambda s: means[s])
    threshold = ALPHA / max(1, len(names) - 1)
    p = {s: one_sided_p(test[best], test[s], "t") for s in names if s != best}
    top = [s for s in order if s == best or p[s] >= threshold]
    epochs = plan.epochs
    spent = sum(r.reached for r in records) + race_spend(exp)
    return {
        "strategies": {
            s: {"trial": f.trial, "config": f.config, "test": test[s], "mean": means[s],
                "interval": list(stats.ttest_1samp(test[s], 0).confidence_interval(0.95)),
                "mean_rank": float(ranks[names.index(s)]), "p_vs_best": p.get(s)}
            for s, f in ((f.strategy, f) for f in plan.finalists)
        },
        "order": order,
        "top_set": top,
        "best": best,
        "threshold": threshold,
        "seeds": plan.seeds[: args.ref_seeds],
        "epochs": epochs,
        "trials_per_strategy": args.trials_per_strategy,
        "trial_epochs": spent,
        "wall_s": wall,
        "grace": grace_agreement(records, epochs),
        "smoke": args.smoke,
    }


def grace_agreement(records: Sequence[ranking.TrialRecord], epochs: int) -> dict[str, float]:
    """Per epoch k: Kendall's tau between a strategy's trials ranked by their score at epoch k and at the last
    epoch, averaged over strategies (every reference trial ran to the end, so every one has every epoch)."""
    by_strategy: dict[str, list[ranking.TrialRecord]] = {}
    for r in records:
        if r.reached >= epochs:
            by_strategy.setdefault(str(r.config.get("strategy")), []).append(r)
    out = {}
    for k in range(1, epochs + 1):
        taus = []
        for recs in by_strategy.values():
            at = [next((h[METRIC] for h in r.history if h.get("epoch") == k), None) for r in recs]
            final = [r.last.get(METRIC) for r in recs]
            if len(recs) >= 3 and all(ranking.finite(v) for v in at + final):
                tau = stats.kendalltau(at, final).statistic
                if np.isfinite(tau):
                    taus.append(float(tau))
        out[str(k)] = float(np.mean(taus)) if taus else float("nan")
    return out


# --- the contenders --------------------------------------------------------------------------------------------------


def ours(seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """(c) the default pipeline: `sweep run --confirm`."""
    name = f"ours_{seed}"
    race = ["--max-seeds", "3", "--min-seeds", "2"] if args.smoke else []
    wall = run_cli(["run", "--space", "mnist1d", "--confirm", *race, "--seed", str(seed), "--storage", str(work),
                    "--name", name, "--max-concurrent", str(CONCURRENCY), *smoke_args(args.smoke)],
                   work / "logs" / f"{name}.log")
    exp = work / name
    _, answer = confirm.load_answer(str(exp))
    order = [e.strategy for e in answer.entries]
    spent = sum(r.reached for r in sweep_records(exp)) + race_spend(exp)
    return {"winner": order[0], "order": order, "trial_epochs": spent, "wall_s": wall,
            "verdict": answer.verdict, "survivors": list(answer.state.alive)}


def random_fifo(seed: int, budget: int, epochs: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """(b) random search + FIFO at the same trial-epochs."""
    name = f"random_{seed}"
    n = max(1, round(budget / epochs))
    wall = run_cli(["run", "--space", f"{SPACE_FILE}:RANDOM_FIFO", "--num-samples", str(n), "--seed", str(seed),
                    "--storage", str(work), "--name", name, "--max-concurrent", str(CONCURRENCY),
                    *smoke_args(args.smoke)], work / "logs" / f"{name}.log")
    records = sweep_records(work / name)
    order = [row.strategy for row in ranking.rank(records, METRIC, "max", epochs)]
    return {"winner": order[0], "order": order, "trial_epochs": sum(r.reached for r in records), "wall_s": wall,
            "trials": n}


def stock_tune(seed: int, budget: int, epochs_per_trial: float, args: argparse.Namespace,
               work: Path) -> dict[str, Any]:
    """(a) stock Ray Tune: Tuner + OptunaSearch + pooled ASHAScheduler, wired as Ray's docs do."""
    import optuna
    import ray
    from fidelity_space import smoke_space
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from search_spaces.mnist1d import FIXED, space

    epochs = 2 if args.smoke else int(FIXED["epochs"])
    extra = {"epochs": epochs, "seed": seed, "num_threads": 1}
    if args.smoke:
        from trainables.tasks import TASKS

        extra.update(TASKS["signal"].smoke)
    n = max(1, round(budget / epochs_per_trial))
    start = time.perf_counter()
    ray.init(num_cpus=CONCURRENCY, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             _node_ip_address="127.0.0.1")  # this machine's only network is loopback
    try:
        searcher = OptunaSearch(space=smoke_space if args.smoke else space, metric=METRIC, mode="max",
                                sampler=optuna.samplers.TPESampler(seed=seed))
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(_stock_trainable, extra=extra), {"cpu": 1}),
            tune_config=tune.TuneConfig(
                search_alg=searcher, metric=METRIC, mode="max", num_samples=n, max_concurrent_trials=CONCURRENCY,
                scheduler=ASHAScheduler(time_attr="training_iteration", max_t=epochs, grace_period=1,
                                        reduction_factor=2),
            ),
            run_config=tune.RunConfig(name=f"stock_{seed}", storage_path=str(work / "stock"), verbose=0),
        )
        frame = tuner.fit().get_dataframe()
    finally:
        ray.shutdown()
    wall = time.perf_counter() - start
    best = frame.groupby("config/strategy")[METRIC].max().sort_values(ascending=False)
    order = list(best.index)
    return {"winner": order[0], "order": order, "trial_epochs": int(frame["training_iteration"].sum()),
            "wall_s": wall, "trials": n}


def _stock_trainable(config: dict[str, Any], extra: dict[str, Any]) -> None:
    from ray import tune

    from trainables.tasks import build_trial

    trial = build_trial({**config, **extra})
    for epoch in range(1, extra["epochs"] + 1):
        trial.train_epoch(epoch)
        tune.report({METRIC: trial.evaluate("val")[METRIC], "epoch": epoch})


# --- comparing ---------------------------------------------------------------------------------------------------


def kendall(order: Sequence[str], reference_order: Sequence[str]) -> float:
    """Kendall's tau (b) between two orders of the strategies; a strategy missing from ``order`` ties last."""
    position = {s: i for i, s in enumerate(order)}
    ours_ = [position.get(s, len(order)) for s in reference_order]
    return float(stats.kendalltau(ours_, list(range(len(reference_order)))).statistic)


def summarise(runs: Sequence[dict[str, Any]], ref: dict[str, Any]) -> dict[str, Any]:
    taus = [kendall(r["order"], ref["order"]) for r in runs]
    hits = [r["winner"] in ref["top_set"] for r in runs]
    shares = [r["trial_epochs"] / ref["trial_epochs"] for r in runs]
    return {"winner_in_top_set": sum(hits) / len(hits), "hits": hits, "tau_mean": float(np.mean(taus)),
            "tau_min": float(min(taus)), "tau_max": float(max(taus)), "taus": taus,
            "trial_epochs_share": float(np.mean(shares)), "trial_epochs": [r["trial_epochs"] for r in runs],
            "wall_s": float(np.mean([r["wall_s"] for r in runs])), "winners": [r["winner"] for r in runs]}


LABELS = {"stock": "(a) stock Ray Tune: OptunaSearch + pooled ASHA", "random": "(b) random search + FIFO",
          "ours": "(c) this project: TPE + ASHA per strategy + race"}


def tables(ref: dict[str, Any], summary: dict[str, dict[str, Any]]) -> str:
    rows = ["| contender | winner in the reference top set | Kendall's tau: mean (range) | trial-epochs (share of "
            "the reference's) | wall, mean (s) | winners per search seed |", "|---|---:|---:|---:|---:|---|"]
    for key in ("stock", "random", "ours"):
        s = summary.get(key)
        if s is None:
            continue
        n = len(s["hits"])
        rows.append(f"| {LABELS[key]} | {sum(s['hits'])}/{n} | {s['tau_mean']:.2f} ({s['tau_min']:.2f} to "
                    f"{s['tau_max']:.2f}) | {np.mean(s['trial_epochs']):.0f} ({s['trial_epochs_share']:.0%}) | "
                    f"{s['wall_s']:.0f} | {', '.join(s['winners'])} |")
    ref_rows = ["| rank | strategy | test linear_acc: mean [95% CI] over the reference seeds | mean rank | in the "
                "top set |", "|---:|---|---:|---:|---|"]
    for i, s in enumerate(ref["order"], 1):
        r = ref["strategies"][s]
        ref_rows.append(f"| {i} | {s} | {r['mean']:.4f} [{r['interval'][0]:.4f}, {r['interval'][1]:.4f}] | "
                        f"{r['mean_rank']:.1f} | {'yes' if s in ref['top_set'] else ''} |")
    grace = " | ".join(f"{k}: {v:.2f}" for k, v in ref["grace"].items())
    return ("\n".join(ref_rows) + f"\n\nreference: {ref['trial_epochs']} trial-epochs, {ref['wall_s'] / 60:.1f} min; "
            f"rank agreement with the last epoch, per epoch (Kendall's tau within a strategy): {grace}\n\n"
            + "\n".join(rows))


def plot(ref: dict[str, Any], summary: dict[str, dict[str, Any]]) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.4), layout="constrained")
    ax_tau, ax_grace = fig.subplots(1, 2, width_ratios=(3, 2))
    keys = [k for k in ("stock", "random", "ours") if k in summary]
    for i, key in enumerate(keys):
        s = summary[key]
        ax_tau.scatter(s["taus"], [i] * len(s["taus"]), c=["tab:green" if h else "tab:red" for h in s["hits"]],
                       s=40, zorder=3)
        ax_tau.plot([s["tau_mean"]], [i], marker="|", ms=18, mew=2.5, color="black")
    ax_tau.set_yticks(range(len(keys)), [LABELS[k] for k in keys], fontsize=8)
    ax_tau.set_xlabel("Kendall's tau with the reference order (green: winner in the reference top set)")
    ax_tau.axvline(0.7, color="0.5", ls=":", lw=1)
    ax_tau.grid(axis="x", alpha=0.3)
    ks = [int(k) for k in ref["grace"]]
    ax_grace.plot(ks, [ref["grace"][str(k)] for k in ks], marker="o")
    ax_grace.set_xlabel("epoch k")
    ax_grace.set_ylabel("tau(rank at k, rank at the end)")
    ax_grace.set_ylim(-0.1, 1.05)
    ax_grace.grid(alpha=0.3)
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    return buf.getvalue()


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "machine": platform.machine()}
    for pkg in ("torch", "ray", "optuna", "scipy", "mnist1d"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", action="store_true", help="recompute the stored reference")
    p.add_argument("--trials-per-strategy", type=int, default=12)
    p.add_argument("--ref-seeds", type=int, default=10)
    p.add_argument("--search-seeds", type=int, default=5)
    p.add_argument("--smoke", action="store_true", help="three strategies on a sliver of the data; writes to a temp "
                   "folder, not benchmarks/results")
    p.add_argument("--keep", action="store_true", help="keep the sweeps' directories (printed)")
    args = p.parse_args(argv)
    if args.smoke:
        args.trials_per_strategy, args.ref_seeds, args.search_seeds = 2, 3, 2
    return args


def write_result(ref: dict[str, Any], runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace,
                 argv: Sequence[str] | None, out_dir: Path) -> tuple[str, dict[str, bool]]:
    """Summarise the search seeds run so far and write the JSON and the figure; returns the tables and the goals."""
    summary = {k: summarise(v, ref) for k, v in runs.items()}
    ours_s, stock_s = summary["ours"], summary["stock"]
    goal = {
        "winner_always_in_top_set": ours_s["winner_in_top_set"] == 1.0,
        "tau_at_least_0.7": ours_s["tau_mean"] >= 0.7,
        "at_most_25pct_of_reference": ours_s["trial_epochs_share"] <= 0.25,
        "beats_stock_on_agreement": ours_s["winner_in_top_set"] >= stock_s["winner_in_top_set"]
        and ours_s["tau_mean"] > stock_s["tau_mean"],
    }
    result = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "versions": versions(),
              "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]), "reference": ref,
              "search_seeds_done": len(runs["ours"]), "search_seeds_asked": args.search_seeds,
              "runs": runs, "summary": summary, "goal": goal, "smoke": args.smoke}
    write_atomic(out_dir / "ranking_fidelity.json", (json.dumps(result, indent=2) + "\n").encode())
    write_atomic(out_dir / "ranking_fidelity.png", plot(ref, summary))
    return tables(ref, summary), goal


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="ranking_fidelity_"))
    out_dir = work / "results" if args.smoke else RESULTS
    ref_file = out_dir / REFERENCE_FILE.name
    try:
        if ref_file.is_file() and not args.reference:
            ref = json.loads(ref_file.read_text())
            print(f"reference from {ref_file} ({ref['trial_epochs']} trial-epochs)", flush=True)
        else:
            print("computing the reference ...", flush=True)
            ref = reference(args, work)
            write_atomic(ref_file, (json.dumps(ref, indent=2) + "\n").encode())
        print(f"reference top set: {', '.join(ref['top_set'])}; order: {', '.join(ref['order'])}", flush=True)
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "random": [], "stock": []}
        asha_rate = ASHA_EPOCHS_PER_TRIAL
        for seed in range(args.search_seeds):
            c = ours(seed, args, work)
            runs["ours"].append(c)
            b = random_fifo(seed, c["trial_epochs"], ref["epochs"], args, work)
            runs["random"].append(b)
            a = stock_tune(seed, c["trial_epochs"], asha_rate, args, work)
            runs["stock"].append(a)
            spent = sum(r["trial_epochs"] for r in runs["stock"])
            asha_rate = spent / sum(r["trials"] for r in runs["stock"])
            print(f"search seed {seed}: ours {c['winner']} ({c['trial_epochs']} trial-epochs), random {b['winner']} "
                  f"({b['trial_epochs']}), stock {a['winner']} ({a['trial_epochs']})", flush=True)
            # written after every seed: a long run cut short keeps the seeds it finished
            text, goal = write_result(ref, runs, args, argv, out_dir)
        print("\n" + text + "\n\ngoal: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in goal.items()))
        print(f"written: {out_dir / 'ranking_fidelity.json'}, {out_dir / 'ranking_fidelity.png'}")
        return 0
    except Failed as exc:
        print(f"ranking_fidelity: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep or args.smoke:
            print(f"sweeps kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
