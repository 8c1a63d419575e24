"""Search efficiency: does Optuna + ASHA find the grid's answer for a fraction of the grid's compute?

Full run, about 12-15 min on 2 idle cores (at most ~20): ``.venv/bin/python benchmarks/search_efficiency.py``
(options: ``--epochs 8 --seeds 3 [--smoke] [--keep] [--out PATH]``; ``--smoke``: 3-6 min, almost all of it the
seven sweeps' start-ups, written to the temp folder).

The project's claim is that a search (Optuna's TPE proposing, ASHA stopping on the epoch) picks the best sampling
strategy and hardness setting for a fraction of the compute of the seed papers' way, a grid with every
configuration trained to the end, without giving up the answer. This measures both side by side in one run, on the
embedded digits task, with lr and temperature fixed (1e-3, 0.5) so that only the strategy and its knobs are chosen
(the studies are in ``benchmarks/efficiency_space.py``):

- the reference: 12 configurations, every one to the full budget (FIFO): infonce; debiased x tau_plus {0.05, 0.1,
  0.2}; hard x beta {0.5, 1, 2} x tau_plus {0, 0.1}; soft_positive x sp_ratio {0.5, 1}. A study's grid is one
  Cartesian product, so the grid runs as four sweeps, one per strategy: its wall time carries three more sweep
  start-ups than a search's, and its one-trial infonce sweep leaves a slot idle (the table's "in trials" column
  leaves start-ups out);
- with the same 12-trial budget over the same space (the same four strategies, the knobs as ranges covering the
  grid's values): (a) random search + FIFO, (b) TPE + FIFO, (c) TPE + ASHA (the project's default), each with the
  search seeds 0 .. N-1.

Every sweep runs through the real CLI (``sweep run``) as a subprocess, one after another, 2 trials at once, in a
fresh temporary storage directory. ``--seed S`` seeds the search only: every trial trains with seed 0 (``--set
seed=0``), so every set-up sees the same data split and initialisation and a configuration scores the same
whichever sampler proposed it; the gaps measure the search, not training noise.

Per set-up and search seed: the best validation score (the best final score among trials that reached the full
budget, what the sweep's ranking puts first; the best last score of any trial too, where it differs), its gap to
the grid's best in points of accuracy, trial-epochs spent as a fraction of the grid's, wall time, and the
trial-epochs spent until the running best (over full-budget trials, as they finished) is within 1 point of the
grid's best, counting every trial's epochs in timestamp order. Honest limits, printed too: the sweep assigns
strategies round-robin (3 trials each), so the strategy itself is not searched; and TPE starts with 10 random
trials (``sweep/study.py``), which with 2 trials at once leaves 1 or 2 of the 12 to TPE's model, the others being
the very draws random search makes with the same seed.

Goal: (c) within 1 point of the grid's best at <= 20% of the grid's trial-epochs, in every seed.

Prints a Markdown table; writes ``benchmarks/results/search_efficiency.json`` (atomically) and
``search_efficiency.png``: the running best against cumulative trial-epochs for the four set-ups.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
for _path in (ROOT, HERE):  # runnable as a plain script without the package installed
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import efficiency_space as space  # noqa: E402
import optuna  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from sweep.ledger import SETTINGS_FILE, newest_checkpoints, open_study  # noqa: E402
from sweep.ranking import TrialRecord, describe_config, finite, markdown_table, records_from  # noqa: E402
from trainables.files import write_atomic  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "search_efficiency.json"
SPACE_FILE = HERE / "efficiency_space.py"
CONCURRENCY = 2  # trials at once, in every sweep
TRIAL_SEED = 0  # every trial trains with this seed; --seed S seeds only the search
POINT = 0.01  # one point of accuracy
GOAL_POINTS, GOAL_FRACTION = 1.0, 0.20  # (c) within 1 point of the grid's best at <= 20% of its trial-epochs
DEFAULT_EPOCHS, SMOKE_EPOCHS = 8, 2
# Rough upper costs at 2 trials at once (the default digits sweep: 130 trial-epochs in 126 s; a sweep's start-up
# and shutdown measured 10 s idle, 30-45 s beside a test suite).
S_PER_TRIAL_EPOCH, S_PER_SWEEP = 1.0, 20.0


@dataclass(frozen=True)
class Setup:
    key: str
    label: str
    studies: tuple[str, ...]  # attribute names in efficiency_space, run one after another
    colour: str
    searched: bool = True
    style: str = "-"  # dashed for TPE + FIFO, whose line often lies on random search's


SETUPS = (
    Setup("grid", "grid + FIFO (reference)", tuple(space.GRID_STUDIES), "black", searched=False),
    Setup("random_fifo", "(a) random + FIFO", ("RANDOM",), "tab:blue"),
    Setup("tpe_fifo", "(b) TPE + FIFO", ("TPE",), "tab:orange", style="--"),
    Setup("tpe_asha", "(c) TPE + ASHA", ("TPE_ASHA",), "tab:green"),
)


class Failed(Exception):
    """A sweep or its results went wrong: one line for the user, no traceback."""


@dataclass
class Run:
    """One set-up at one search seed: its sweeps (the grid has four) and every trial they ran."""

    setup: Setup
    seed: int
    sweeps: list[dict[str, Any]] = field(default_factory=list)
    trials: list[tuple[str, TrialRecord]] = field(default_factory=list)  # (sweep name, record)

    @property
    def wall_s(self) -> float:
        return sum(s["wall_s"] for s in self.sweeps)


# --- running the sweeps ---------------------------------------------------------------------------------------------


def sweep_cli() -> list[str]:
    """The `sweep` console script beside this interpreter, else on PATH, else the module."""
    beside = Path(sys.executable).with_name("sweep")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("sweep")
    return [found] if found else [sys.executable, "-m", "sweep.cli"]


def sweep_command(study: str, name: str, seed: int, epochs: int, storage: str, sets: dict[str, Any]) -> list[str]:
    cmd = [*sweep_cli(), "run", "--space", f"{SPACE_FILE}:{study}", "--storage", storage, "--name", name,
           "--seed", str(seed), "--max-concurrent", str(CONCURRENCY), "--epochs", str(epochs),
           "--set", f"seed={TRIAL_SEED}"]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    return cmd


def run_sweep(cmd: list[str], log_path: Path) -> tuple[int, float]:
    """Run one `sweep run` to its end, its output to ``log_path``; -> (exit status, wall seconds)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT)
        try:
            rc = proc.wait()
        except KeyboardInterrupt:  # let the sweep stop its trials and Ray itself, then go
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
    return rc, time.perf_counter() - start


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def read_sweep(exp: str) -> tuple[str, int, list[TrialRecord]]:
    """(metric, epochs, records) of a finished sweep, read as `sweep status` reads it."""
    try:
        settings = json.loads(Path(exp, SETTINGS_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise Failed(f"no readable {SETTINGS_FILE} in {exp}: {exc}") from None
    study = open_study(exp)
    if study is None:
        raise Failed(f"no study database in {exp}")
    if settings.get("mode") != "max":
        raise Failed(f"{exp}: the benchmark expects a metric to maximise, not mode {settings.get('mode')!r}")
    return settings["metric"], int(settings["epochs"]), records_from(study, newest_checkpoints(exp))


# --- measuring ------------------------------------------------------------------------------------------------------


def final_score(rec: TrialRecord, metric: str) -> float | None:
    value = rec.last.get(metric)
    return float(value) if finite(value) else None


def full_budget(rec: TrialRecord, metric: str, epochs: int) -> bool:
    """The ranking's rule: it reached the full budget with a finite score."""
    return rec.reached >= epochs and final_score(rec, metric) is not None


def events(run: Run, metric: str, epochs: int) -> list[tuple[float, int, float | None]]:
    """Every reported epoch of every trial in timestamp order: (timestamp, cumulative trial-epochs, the final score
    of a full-budget trial when this row is its last epoch, else None)."""
    rows = []
    for k, (_, rec) in enumerate(run.trials):
        full = full_budget(rec, metric, epochs)
        for i, row in enumerate(rec.history):
            score = final_score(rec, metric) if full and i == len(rec.history) - 1 else None
            rows.append((float(row.get("timestamp", 0.0)), k, int(row.get("epoch", 0)), score))
    rows.sort(key=lambda r: r[:3])
    return [(ts, n, score) for n, (ts, _, _, score) in enumerate(rows, 1)]


def running_best(run: Run, metric: str, epochs: int) -> tuple[list[tuple[int, float]], int]:
    """The running best over full-budget trials as they finished: [(cumulative trial-epochs, best)], and the total
    trial-epochs the run spent."""
    curve, best, total = [], None, 0
    for _, total, score in events(run, metric, epochs):
        if score is not None and (best is None or score > best):
            best = score
            curve.append((total, best))
    return curve, total


def trial_span_s(records: Sequence[TrialRecord]) -> float:
    """Seconds from the first epoch's start to the last epoch's report: the sweep's wall time less its start-up."""
    starts, ends = [], []
    for rec in records:
        if rec.history:
            first = rec.history[0]
            starts.append(first.get("timestamp", 0.0) - first.get("time_train_s", 0.0) - first.get("time_eval_s", 0.0))
            ends.append(rec.last.get("timestamp", 0.0))
    return max(ends) - min(starts) if starts else 0.0


def measure(run: Run, metric: str, epochs: int, grid_best: float, grid_spent: int) -> dict[str, Any]:
    """What the table and the JSON report for one run."""
    recs = [rec for _, rec in run.trials]
    full = [s for r in recs if full_budget(r, metric, epochs) and (s := final_score(r, metric)) is not None]
    scored = [s for r in recs if (s := final_score(r, metric)) is not None]
    curve, spent = running_best(run, metric, epochs)
    target = grid_best - GOAL_POINTS * POINT
    reached = next((x for x, best in curve if best >= target - 1e-12), None)
    best = max(full) if full else None
    return {
        "seed": run.seed,
        "best_full_budget": best,
        "best_any_budget": max(scored) if scored else None,
        "gap_points": round((grid_best - best) / POINT, 4) if best is not None else None,
        "trial_epochs": spent,
        "fraction_of_grid": spent / grid_spent if grid_spent else None,
        "wall_s": round(run.wall_s, 1),
        "trial_span_s": round(sum(s["trial_span_s"] for s in run.sweeps), 1),
        "to_within_1pt_trial_epochs": reached,
        "to_within_1pt_fraction_of_grid": reached / grid_spent if reached is not None and grid_spent else None,
        "full_budget_trials": len(full),
        "stopped_early": sum(1 for r in recs if r.status == "stopped"),
        "failed": sum(1 for r in recs if r.status == "failed"),
        "running_best": [[x, y] for x, y in curve],
        "sweeps": run.sweeps,
        "trials": [trial_row(name, rec, metric, epochs) for name, rec in run.trials],
    }


def trial_row(sweep: str, rec: TrialRecord, metric: str, epochs: int) -> dict[str, Any]:
    first = rec.history[0] if rec.history else {}
    return {
        "sweep": sweep,
        "number": rec.number,
        "strategy": rec.config.get("strategy"),
        "params": describe_config({k: v for k, v in rec.config.items() if k not in ("lr", "temperature")}),
        "status": rec.status,
        "reason": rec.reason or None,
        "epochs": rec.reached,
        "full_budget": full_budget(rec, metric, epochs),
        "score": final_score(rec, metric),
        "started": first.get("timestamp", 0.0) - first.get("time_train_s", 0.0) - first.get("time_eval_s", 0.0)
        if first else None,
        "ended": rec.last.get("timestamp"),
    }


def spread(values: Sequence[float]) -> dict[str, float] | None:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)} if values else None


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean, min and max over the seeds of each measure; the time to target over the seeds that reached it."""
    out: dict[str, Any] = {}
    for key in ("best_full_budget", "best_any_budget", "gap_points", "trial_epochs", "fraction_of_grid", "wall_s",
                "trial_span_s", "to_within_1pt_trial_epochs", "to_within_1pt_fraction_of_grid"):
        out[key] = spread([r[key] for r in rows if r[key] is not None])
    out["never_within_1pt"] = sum(1 for r in rows if r["to_within_1pt_trial_epochs"] is None)
    return out


def paired_draws(runs: Sequence[Run], a: str, b: str) -> dict[int, int]:
    """Per seed, how many trials of set-up ``b`` ran the very configuration trial of the same number ran in ``a``."""
    def key(rec: TrialRecord) -> str:
        return json.dumps(rec.config, sort_keys=True, default=str)

    by = {(r.setup.key, r.seed): {rec.number: key(rec) for _, rec in r.trials} for r in runs}
    out = {}
    for seed in sorted({r.seed for r in runs if r.setup.key == a}):
        x, y = by.get((a, seed), {}), by.get((b, seed), {})
        out[seed] = sum(1 for n, config in y.items() if x.get(n) == config)
    return out


def goal(rows: Sequence[dict[str, Any]], grid_spent: int) -> dict[str, Any]:
    """(c) within 1 point of the grid's best at <= 20% of the grid's trial-epochs, in every seed."""
    limit = GOAL_FRACTION * grid_spent
    never = [r for r in rows if r["to_within_1pt_trial_epochs"] is None]
    late = [r for r in rows if r["to_within_1pt_trial_epochs"] is not None and r["to_within_1pt_trial_epochs"] > limit]
    met = bool(rows) and not never and not late
    if met:
        worst = max(rows, key=lambda r: r["to_within_1pt_trial_epochs"])
        text = (f"met in every seed: at most {worst['to_within_1pt_trial_epochs']} trial-epochs "
                f"({worst['to_within_1pt_fraction_of_grid']:.0%} of the grid's; seed {worst['seed']}), "
                f"{100 * (GOAL_FRACTION - worst['to_within_1pt_fraction_of_grid']):.0f} percentage points to spare")
    elif never:
        worst = max(never, key=lambda r: r["gap_points"] if r["gap_points"] is not None else float("inf"))
        short = ("no full-budget trial" if worst["gap_points"] is None
                 else f"best {worst['gap_points']:.2f} points below the grid's, "
                 f"{worst['gap_points'] - GOAL_POINTS:.2f} points outside the band")
        text = (f"MISSED: never within {GOAL_POINTS:g} point of the grid's best in {len(never)} of {len(rows)} "
                f"seed(s) (seed {worst['seed']}: {short})")
        if late:
            text += f"; late in {len(late)} more"
    else:
        worst = max(late, key=lambda r: r["to_within_1pt_trial_epochs"])
        text = (f"MISSED: within {GOAL_POINTS:g} point only after {worst['to_within_1pt_trial_epochs']} trial-epochs "
                f"in seed {worst['seed']} ({worst['to_within_1pt_fraction_of_grid']:.0%} of the grid's, "
                f"{100 * (worst['to_within_1pt_fraction_of_grid'] - GOAL_FRACTION):.0f} percentage points over); "
                f"late in {len(late)} of {len(rows)} seed(s)")
    return {"statement": f"(c) TPE + ASHA within {GOAL_POINTS:g} point of the grid's best at <= "
                         f"{GOAL_FRACTION:.0%} of the grid's trial-epochs ({limit:g}), in every seed",
            "limit_trial_epochs": limit, "met": met, "verdict": text}


# --- output ---------------------------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def _cell(s: dict[str, float] | None, fmt: str, scale: float = 1.0) -> str:
    if s is None:
        return "n/a"
    if s["min"] == s["max"]:
        return format(scale * s["mean"], fmt)
    return f"{format(scale * s['mean'], fmt)} [{format(scale * s['min'], fmt)}, {format(scale * s['max'], fmt)}]"


def table(results: dict[str, Any], grid_spent: int) -> str:
    header = ["set-up", "seeds", "best val acc, full budget (%)", "gap to grid (points)", "best at any budget (%)",
              "trial-epochs (of grid's)", "wall (s)", "in trials (s)", "trial-epochs to within 1 point (of grid's)"]
    cells = []
    for setup in SETUPS:
        rows = results[setup.key]["runs"]
        s = results[setup.key]["summary"]
        same = all(r["best_any_budget"] == r["best_full_budget"] for r in rows)
        spent = f"{_cell(s['trial_epochs'], '.1f' if len(rows) > 1 else '.0f')} ({_cell(s['fraction_of_grid'], '.0%')})"
        never = s["never_within_1pt"]
        if never == len(rows):
            reach = "never"
        else:
            fmt = ".1f" if len(rows) - never > 1 else ".0f"
            reach = (f"{_cell(s['to_within_1pt_trial_epochs'], fmt)} "
                     f"({_cell(s['to_within_1pt_fraction_of_grid'], '.0%')})")
            if never:
                reach += f"; never in {never} of {len(rows)}"
        cells.append([
            setup.label,
            ", ".join(str(r["seed"]) for r in rows) if setup.searched else "(grid)",
            _cell(s["best_full_budget"], ".2f", 100),
            _cell(s["gap_points"], "+.2f"),
            "same" if same else _cell(s["best_any_budget"], ".2f", 100),
            spent,
            _cell(s["wall_s"], ".0f"),
            _cell(s["trial_span_s"], ".0f"),
            reach,
        ])
    return markdown_table(header, cells, align="llrrrrrrr")


def plot(results: dict[str, Any], grid_best: float, grid_spent: int, epochs: int, metric: str) -> bytes:
    """Running best against cumulative trial-epochs: one line per run, the grid's best with its 1-point band."""
    fig = Figure(figsize=(10.0, 5.2), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    best = 100 * grid_best
    ax.axhspan(best - GOAL_POINTS, best, color="0.5", alpha=0.15, lw=0)
    ax.axhline(best, color="0.4", lw=0.9, ls=(0, (1, 2)), zorder=1)
    ax.axvline(GOAL_FRACTION * grid_spent, color="tab:green", lw=0.9, ls=":")
    lows = []
    for setup in SETUPS:
        for run in results[setup.key]["runs"]:
            curve = run["running_best"]
            if not curve:
                continue
            xs = [x for x, _ in curve] + [run["trial_epochs"]]
            ys = [100 * y for _, y in curve] + [100 * curve[-1][1]]
            lows.append(min(ys))
            lw, alpha, z = (2.2, 0.9, 2) if not setup.searched else (1.1, 0.8, 3)
            ax.step(xs, ys, where="post", color=setup.colour, lw=lw, ls=setup.style, alpha=alpha, zorder=z)
            ax.plot(xs[-1:], ys[-1:], marker="o", ms=4, color=setup.colour, alpha=alpha, zorder=z)
    if lows and best - min(lows) > 15:  # one very poor first trial must not flatten the band
        ax.set_ylim(bottom=best - 15)
    ax.margins(y=0.08)
    ax.set_xlim(left=0)
    ax.set_xlabel("cumulative trial-epochs (every trial's epochs, in the order they were reported)")
    ax.set_ylabel(f"running best validation {metric} (%), full-budget trials")
    ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=s.colour, lw=2.2 if not s.searched else 1.1, ls=s.style, label=s.label)
               for s in SETUPS]
    handles += [
        Line2D([], [], color="0.4", lw=0.9, ls=(0, (1, 2)), label="the grid's best"),
        Patch(color="0.5", alpha=0.15, label=f"within {GOAL_POINTS:g} point of it"),
        Line2D([], [], color="tab:green", lw=0.9, ls=":", label=f"{GOAL_FRACTION:.0%} of the grid's trial-epochs"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=4, frameon=False, fontsize=8)
    ax.set_title(f"digits, {epochs} epochs, 12 trials per set-up, one thin line per search seed; "
                 "a dot marks what each spent in all", fontsize=9)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def notes(runs: Sequence[Run], epochs: int) -> list[str]:
    same_tpe = paired_draws(runs, "random_fifo", "tpe_fifo")
    same_asha = paired_draws(runs, "tpe_fifo", "tpe_asha")
    n = space.BUDGET
    return [
        f"Best val acc: the best final validation score among trials that reached all {epochs} epochs (what the "
        "sweep's ranking puts first); best at any budget: the best last score of any trial, also ASHA-stopped ones.",
        "Gap: grid's best minus the set-up's, in points (negative: better than the grid). Searched rows: mean "
        "[min, max] over the seeds. Trial-epochs to within 1 point: every trial's epochs counted in timestamp order "
        "until a full-budget trial finished within 1 point of the grid's best.",
        "Wall: the set-up's `sweep run` processes, start-up included (the grid runs as four sweeps, one per "
        "strategy, so it pays four start-ups and its one-trial infonce sweep leaves a slot idle); in trials: from "
        "each sweep's first epoch start to its last report, summed over its sweeps.",
        f"Strategies are assigned round-robin ({n // len(space.STRATEGIES)} trials each): the searches choose knobs, "
        "not strategies. TPE's first 10 trials are random draws (n_startup_trials=10): trials of the same number "
        f"ran the same configuration in TPE + FIFO as in random + FIFO in {_counts(same_tpe, n)}, and in TPE + ASHA "
        f"as in TPE + FIFO in {_counts(same_asha, n)}.",
    ]


def _counts(per_seed: dict[int, int], n: int) -> str:
    return ", ".join(f"{k} of {n} (seed {s})" for s, k in per_seed.items()) or "no seed"


# --- the benchmark --------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"full budget per trial (default {DEFAULT_EPOCHS}; smoke {SMOKE_EPOCHS})")
    parser.add_argument("--seeds", type=int, default=None,
                        help="search seeds 0..N-1 per searched set-up (default 3; smoke 1)")
    parser.add_argument("--smoke", action="store_true",
                        help="a check of the script: 2 epochs, 1 seed, tiny trials (sweep's --smoke-test sizes), "
                             "written to the temp folder")
    parser.add_argument("--keep", action="store_true", help="keep the sweeps' storage directory (printed at the end)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"JSON path; the PNG goes beside it (default {RESULTS.relative_to(ROOT)}; "
                             "smoke: the temp folder)")
    args = parser.parse_args(argv)
    args.epochs = args.epochs if args.epochs is not None else SMOKE_EPOCHS if args.smoke else DEFAULT_EPOCHS
    args.seeds = args.seeds if args.seeds is not None else 1 if args.smoke else 3
    if args.epochs < 1:
        parser.error(f"--epochs is {args.epochs} but must be >= 1")
    if args.seeds < 1:
        parser.error(f"--seeds is {args.seeds} but must be >= 1")
    if args.out is None:
        args.out = Path(tempfile.gettempdir()) / "search_efficiency_smoke.json" if args.smoke else RESULTS
    args.out = args.out.expanduser().resolve()
    if args.out.is_dir():
        parser.error(f"--out {args.out} is a directory; give a file path such as {args.out / RESULTS.name}")
    try:  # found out now, not after the sweeps
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=args.out.parent, prefix=f".{args.out.name}."):
            pass
    except OSError as exc:
        parser.error(f"cannot write --out {args.out}: {exc.strerror or exc} ({exc.filename})")
    if not SPACE_FILE.is_file():
        parser.error(f"{SPACE_FILE} is missing; it holds the studies this benchmark runs")
    return args


def check_space() -> None:
    """The searched ranges must cover the grid's values, and the grid must be the searches' trial budget."""
    for strategy, knobs in space.GRIDS.items():
        for knob, values in knobs.items():
            _, low, high = space.RANGES[knob]
            if not all(low <= v <= high for v in values):
                raise Failed(f"efficiency_space.RANGES[{knob!r}] = [{low}, {high}] does not cover the grid's "
                             f"{strategy} values {values}")
    budgets = {getattr(space, s).num_samples for st in SETUPS if st.searched for s in st.studies}
    if budgets != {space.BUDGET}:
        raise Failed(f"the searches' trial budgets {sorted(budgets)} differ from the grid's {space.BUDGET}")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("torch", "ray", "optuna", "scikit-learn"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "n/a"
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study name was omitted" line per sweep read
    sets: dict[str, Any] = {}
    if args.smoke:
        from trainables.tasks import TASKS

        sets = dict(TASKS["image"].smoke)  # the sizes of `sweep run --smoke-test`
    seeds = list(range(args.seeds))
    plan = [(SETUPS[0], 0)] + [(st, seed) for seed in seeds for st in SETUPS[1:]]  # seeds interleaved: drift is shared
    n_sweeps = sum(len(st.studies) for st, _ in plan)
    upper = space.BUDGET * args.epochs * len(plan)
    estimate = "" if args.smoke else (
        f"; about {(upper * S_PER_TRIAL_EPOCH + n_sweeps * S_PER_SWEEP) / 60:.0f} min at most on 2 idle cores")
    print(f"search_efficiency: digits, {args.epochs} epochs, {space.BUDGET} trials per set-up, search seeds "
          f"{seeds}, {CONCURRENCY} trials at once, {n_sweeps} sweeps, at most {upper} trial-epochs{estimate}"
          f"{'; SMOKE: tiny trials' if args.smoke else ''}", flush=True)
    try:
        check_space()
    except Failed as exc:
        print(f"search_efficiency: error: {exc}", file=sys.stderr)
        return 2

    began = time.perf_counter()
    storage = tempfile.mkdtemp(prefix="search_efficiency_")
    keep = args.keep
    runs: list[Run] = []
    metric, epochs = "", args.epochs
    try:
        done = 0
        for setup, seed in plan:
            run = Run(setup, seed)
            for study in setup.studies:
                name = f"{setup.key}-{study.lower()}-s{seed}" if not setup.searched else f"{setup.key}-s{seed}"
                cmd = sweep_command(study, name, seed, args.epochs, storage, sets)
                log = Path(storage, "logs", f"{name}.log")
                rc, wall = run_sweep(cmd, log)
                done += 1
                if rc != 0:
                    keep = True
                    raise Failed(f"`sweep run` for {name} exited with status {rc}; the end of {log}:\n{tail(log)}")
                metric, epochs, records = read_sweep(os.path.join(storage, name))
                expected = getattr(space, study).num_samples
                if len(records) != expected or any(not r.finished for r in records):
                    keep = True
                    raise Failed(f"{name} ended with {len(records)} of {expected} trials, not all finished; see {log}")
                run.sweeps.append({"name": name, "study": study, "command": shlex.join(cmd), "wall_s": round(wall, 1),
                                   "trial_span_s": round(trial_span_s(records), 1)})
                run.trials += [(name, r) for r in records]
                best = max((s for r in records if full_budget(r, metric, epochs)
                            if (s := final_score(r, metric)) is not None), default=None)
                print(f"  [{done}/{n_sweeps}] {name}: {len(records)} trials, {sum(r.reached for r in records)} "
                      f"trial-epochs, best {_pct(best)}%, {wall:.0f} s (total {time.perf_counter() - began:.0f} s)",
                      flush=True)
            runs.append(run)
    except KeyboardInterrupt:
        print("search_efficiency: interrupted; nothing written", file=sys.stderr)
        return 130
    except Failed as exc:
        print(f"search_efficiency: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if keep:
            print(f"sweeps kept in {storage} (`sweep report NAME --storage {storage}`)", file=sys.stderr)
        else:
            shutil.rmtree(storage, ignore_errors=True)

    grid_run = runs[0]
    grid_full = [s for _, r in grid_run.trials if full_budget(r, metric, epochs)
                 if (s := final_score(r, metric)) is not None]
    if not grid_full:
        print("search_efficiency: error: no grid trial reached the full budget with a score; nothing to compare "
              "with, nothing written", file=sys.stderr)
        return 1
    grid_best = max(grid_full)
    grid_spent = running_best(grid_run, metric, epochs)[1]
    results: dict[str, Any] = {}
    for setup in SETUPS:
        rows = [measure(r, metric, epochs, grid_best, grid_spent) for r in runs if r.setup is setup]
        results[setup.key] = {"label": setup.label, "studies": list(setup.studies),
                              "summary": summarise(rows), "runs": rows}
    verdict = goal(results["tpe_asha"]["runs"], grid_spent)
    elapsed = time.perf_counter() - began

    print(f"\nsearch efficiency on digits: {epochs} epochs, lr {space.LR:g}, temperature {space.TEMPERATURE:g}, "
          f"{space.BUDGET} trials per set-up, {CONCURRENCY} at once on {os.cpu_count()} CPUs; validation {metric}; "
          f"the grid's best {_pct(grid_best)}% ({grid_spent} trial-epochs)\n")
    print(table(results, grid_spent))
    print()
    for line in notes(runs, epochs):
        print(f"- {line}")
    print(f"\nGoal: {verdict['statement']}: {verdict['verdict']}.")

    png = args.out.with_suffix(".png")
    payload = {
        "benchmark": "search_efficiency",
        "smoke": args.smoke,
        "command": shlex.join([sys.executable, *sys.argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()
                    or platform.machine()},
        "versions": versions(),
        "task": "digits",
        "metric": metric,
        "epochs": epochs,
        "trials_per_setup": space.BUDGET,
        "max_concurrent": CONCURRENCY,
        "search_seeds": seeds,
        "trial_seed": TRIAL_SEED,
        "overrides": {"seed": TRIAL_SEED, **sets},
        "fixed": space.FIXED,
        "grid": space.GRIDS,
        "ranges": space.RANGES,
        "tpe_n_startup_trials": 10,
        "definitions": {
            "best_full_budget": "best final validation score among trials that reached the full budget",
            "best_any_budget": "best last validation score of any trial, whatever epoch it reached",
            "gap_points": "(grid's best - set-up's best_full_budget) x 100",
            "trial_epochs": "epochs reported, summed over every trial of the set-up",
            "to_within_1pt_trial_epochs": "cumulative trial-epochs (every trial's epochs in timestamp order) when a "
                                          "full-budget trial first finished within 1 point of the grid's best; "
                                          "null: never",
            "wall_s": "wall time of the set-up's `sweep run` processes, start-up included",
            "trial_span_s": "from the first epoch's start to the last epoch's report, per sweep, summed",
        },
        "grid_best": grid_best,
        "grid_trial_epochs": grid_spent,
        "goal": verdict,
        "paired_draws": {"tpe_fifo_as_random_fifo": paired_draws(runs, "random_fifo", "tpe_fifo"),
                         "tpe_asha_as_tpe_fifo": paired_draws(runs, "tpe_fifo", "tpe_asha")},
        "elapsed_s": round(elapsed, 1),
        "setups": results,
    }
    write_atomic(args.out, (json.dumps(payload, indent=2) + "\n").encode())
    write_atomic(png, plot(results, grid_best, grid_spent, epochs, metric))
    print(f"\n{elapsed:.0f} s; written to {args.out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
