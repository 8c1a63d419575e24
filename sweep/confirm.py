"""`sweep confirm NAME`: re-run each strategy's best configurations with fresh, paired seeds and score them on test.

A sweep ranks on one seed and one validation split, and picks the best of many tries: its top scores are biased up
and a difference of a point may be noise. Confirmation re-runs the best ``top_k`` configurations of every strategy at
full budget under ``seeds`` new seeds, the *same* seeds for every strategy (a seed fixes the data split, the
initialisation and every epoch's batches and augmentations, so run i of every strategy sees the same data), and
scores the finalists on the test split. The report then gives, per strategy, the mean, standard deviation and a 95%
confidence interval over seeds, and a paired t-test of every strategy against the winner (Holm-corrected over the
comparisons), and says plainly when the ranking is not significant.

It lives in ``<sweep>/confirm/`` and keeps its state the way a sweep does: ``confirm.json`` (the runs, fixed once),
``driver.json`` and one ``session-K/`` per driver session with each run's checkpoints. Run the command again after
an interruption and it continues; run it after it finished and it prints the result without computing anything.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sweep import ledger, ranking
from sweep.storage import command, join, read_text, write_atomic
from trainables.errors import UserError

CONFIRM_DIR = "confirm"
PLAN_FILE = "confirm.json"
RESULT_FILE = "confirm.md"
ALPHA = 0.05
TEST_PREFIX = "test_"  # a trial with evaluate_test reports test_<metric> at its last epoch


@dataclass(frozen=True)
class ConfirmRun:
    """One finalist configuration under one seed."""

    number: int  # the run's number in the confirmation (its directory: session-K/NNNN_<strategy>)
    strategy: str
    finalist: int  # the sweep trial whose configuration it re-runs
    seed: int
    config: dict[str, Any]


def choose_finalists(
    records: Sequence[ranking.TrialRecord], metric: str, mode: str, epochs: int, top_k: int
) -> list[ranking.TrialRecord]:
    """The best ``top_k`` scored trials of every strategy, ranked as the sweep ranks (full budget first)."""
    sign = 1.0 if mode == "max" else -1.0
    order = [row.strategy for row in ranking.rank(records, metric, mode, epochs)]
    out = []
    for strategy in order:
        scored = [
            r
            for r in records
            if str(r.config.get("strategy")) == strategy and r.status != "failed" and ranking.finite(r.last.get(metric))
        ]
        scored.sort(key=lambda r: (r.reached >= epochs, sign * r.last[metric]), reverse=True)
        out.extend(scored[:top_k])
    return out


def confirm_seeds(sweep_seed: int, n: int) -> list[int]:
    """Fresh seeds, never the sweep's own (its split is the one the finalists were selected on); they wrap around
    at 2**32, the seeds a trial takes, so a sweep seeded near the top still confirms."""
    return [(sweep_seed + 1 + i) % 2**32 for i in range(n)]


def plan_runs(
    finalists: Sequence[ranking.TrialRecord], seeds: Sequence[int], epochs: int, num_threads: int
) -> list[ConfirmRun]:
    """Seed-major order, so an interrupted confirmation has the same seeds done for every strategy."""
    runs = []
    for seed in seeds:
        for f in finalists:
            config = {
                **f.config,
                "seed": seed,
                "epochs": epochs,
                "eval_every": epochs,  # no early stopping here: score validation and test once, at the end
                "evaluate_test": True,
                "num_threads": num_threads,  # the sweep's thread count: the same float sums as the trial ranked
            }
            runs.append(ConfirmRun(len(runs), str(f.config.get("strategy")), f.number, seed, config))
    return runs


# --- statistics ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    n: int
    mean: float
    sd: float  # sample standard deviation (n - 1); NaN for one value
    low: float  # 95% confidence interval of the mean (Student's t); NaN for one value
    high: float


def spread(values: Sequence[float]) -> Spread:
    from scipy import stats

    n = len(values)
    if n == 0:
        return Spread(0, math.nan, math.nan, math.nan, math.nan)
    mean = sum(values) / n
    if n == 1:
        return Spread(1, mean, math.nan, math.nan, math.nan)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return Spread(n, mean, sd, mean - half, mean + half)


def paired_p(diffs: Sequence[float]) -> float:
    """Two-sided paired t-test of mean(diffs) = 0; NaN with fewer than two pairs."""
    from scipy import stats

    n = len(diffs)
    if n < 2:
        return math.nan
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    if sd == 0:  # identical differences: certain if non-zero, no evidence if zero
        return 0.0 if mean != 0 else 1.0
    t = mean / (sd / math.sqrt(n))
    return float(2 * stats.t.sf(abs(t), n - 1))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN), in the input order."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class StrategyResult:
    strategy: str
    finalist: int  # the sweep trial of its chosen finalist (best mean validation score when top_k > 1)
    config: dict[str, Any]
    val: dict[int, float]  # seed -> validation score
    test: dict[int, float]  # seed -> test score
    test_spread: Spread
    val_spread: Spread
    failed: dict[int, str] = field(default_factory=dict)  # seed -> why its run ended without a score
    diff: float = math.nan  # winner's mean test score minus this one's, over the seeds both have
    pairs: int = 0
    wins: int = 0  # seeds on which the winner scored higher
    p: float = math.nan
    p_holm: float = math.nan


@dataclass(frozen=True)
class Summary:
    metric: str
    mode: str
    seeds: list[int]
    top_k: int
    rows: list[StrategyResult]  # best first by mean test score; the first is the winner
    runs_done: int
    runs_total: int

    @property
    def verdict(self) -> str:
        """The plain-words conclusion."""
        scored = [r for r in self.rows if r.test_spread.n]
        if not scored:
            return "No finalist has a test score yet."
        winner, others = scored[0], scored[1:]
        if not others:
            return f"Only {winner.strategy} has test scores."
        if len(self.seeds) < 2 or all(math.isnan(r.p_holm) for r in others):
            return f"{winner.strategy} scored highest, but with one seed there is no test of significance."
        tied = [r.strategy for r in others if not r.p_holm < ALPHA]
        beaten = [r.strategy for r in others if r.p_holm < ALPHA]
        n = len(self.seeds)
        if not tied:
            return (
                f"{winner.strategy} wins: better than every other strategy (paired t-test over {n} seeds, "
                f"Holm-corrected p < {ALPHA})."
            )
        text = (
            f"The ranking is not significant at the top: {winner.strategy} scored highest, but "
            f"{', '.join(tied)} cannot be told apart from it (paired t-test over {n} seeds, Holm-corrected "
            f"p >= {ALPHA}); more seeds would be needed."
        )
        if beaten:
            text += f" It is significantly better than {', '.join(beaten)}."
        return text


def summarize(
    runs: Sequence[ConfirmRun],
    saved: Mapping[int, ledger.Saved],
    failed: Mapping[int, str],
    metric: str,
    mode: str,
    seeds: Sequence[int],
    top_k: int,
) -> Summary:
    test_key, sign = TEST_PREFIX + metric, 1.0 if mode == "max" else -1.0
    by_finalist: dict[int, list[ConfirmRun]] = {}
    for run in runs:
        by_finalist.setdefault(run.finalist, []).append(run)
    candidates: dict[str, list[StrategyResult]] = {}
    done = 0
    for finalist, frs in by_finalist.items():
        val, test, why = {}, {}, {}
        for run in frs:
            if run.number in failed:
                why[run.seed] = failed[run.number]
            elif _finished(saved.get(run.number), run.config["epochs"]):
                last = saved[run.number].history[-1]
                if ranking.finite(last.get(test_key)) and ranking.finite(last.get(metric)):
                    val[run.seed], test[run.seed] = float(last[metric]), float(last[test_key])
                else:
                    why[run.seed] = last.get("stop_reason") or "no test score"
            else:
                continue  # still to run
            done += 1
        candidates.setdefault(frs[0].strategy, []).append(
            StrategyResult(
                frs[0].strategy, finalist, frs[0].config, val, test, spread(list(test.values())),
                spread(list(val.values())), why,
            )
        )
    rows = []
    for options in candidates.values():  # with top_k > 1, the finalist chosen on validation, never on test
        rows.append(max(options, key=lambda r: (r.val_spread.n > 0, sign * _or(r.val_spread.mean))))
    rows.sort(key=lambda r: (r.test_spread.n > 0, sign * _or(r.test_spread.mean)), reverse=True)
    if rows and rows[0].test_spread.n:
        winner = rows[0]
        compared = []
        for r in rows[1:]:
            common = sorted(set(winner.test) & set(r.test))
            diffs = [sign * (winner.test[s] - r.test[s]) for s in common]
            compared.append((r, common, diffs, paired_p(diffs)))
        adjusted = holm([c[3] for c in compared])
        rows = [winner] + [
            replace(r, diff=sum(d) / len(d) if d else math.nan, pairs=len(c), wins=sum(x > 0 for x in d), p=p, p_holm=a)
            for (r, c, d, p), a in zip(compared, adjusted, strict=True)
        ]
    return Summary(metric, mode, list(seeds), top_k, rows, done, len(runs))


def _or(x: float) -> float:
    return x if ranking.finite(x) else -math.inf


def _finished(saved: ledger.Saved | None, epochs: int) -> bool:
    return saved is not None and bool(saved.history) and (
        saved.epoch >= epochs or bool(saved.history[-1].get("stop_reason"))
    )


CONFIRM_ALIGN = "rlrlrrrrrl"


def table(s: Summary) -> tuple[list[str], list[list[str]]]:
    """One row per strategy, best first: test mean +- sd, 95% CI, validation mean, and the paired test."""
    m = s.metric
    header = ["rank", "strategy", f"test {m}: mean ± sd", "95% CI", f"validation {m}", "seeds", "behind the winner",
              "winner ahead on", "p (Holm)", "configuration"]
    cells = []
    for i, r in enumerate(s.rows, 1):
        t, v = r.test_spread, r.val_spread
        sd = f" ± {t.sd:.4f}" if not math.isnan(t.sd) else ""
        ci = f"[{t.low:.4f}, {t.high:.4f}]" if not math.isnan(t.low) else "n/a"
        val = f"{v.mean:.4f}" if v.n else "n/a"
        mean = f"{t.mean:.4f}{sd}" if t.n else "n/a"
        if i == 1:
            behind, ahead, p = "winner", "", ""
        else:
            behind = f"{r.diff:.4f}" if not math.isnan(r.diff) else "n/a"
            ahead = f"{r.wins}/{r.pairs}" if r.pairs else "n/a"
            p = f"{r.p_holm:.3g}" if not math.isnan(r.p_holm) else "n/a"
            if not math.isnan(r.p_holm):
                p += " (significant)" if r.p_holm < ALPHA else " (not significant)"
        failed = f" ({len(r.failed)} failed)" if r.failed else ""
        cells.append([str(i), r.strategy, mean, ci, val, f"{t.n}/{len(s.seeds)}{failed}", behind, ahead, p,
                      f"trial {r.finalist}: {ranking.describe_config(r.config)}"])
    return header, cells


def headline(s: Summary) -> str:
    seeds = ", ".join(map(str, s.seeds))
    return (
        f"Each strategy's best configuration{'s' if s.top_k > 1 else ''} (top {s.top_k} by validation) re-run at full "
        f"budget with seeds {seeds} (the same for every strategy), scored on the test split; "
        f"{s.runs_done} of {s.runs_total} runs done."
    )


def describe(s: Summary) -> str:
    return f"{headline(s)}\n\n{ranking.markdown_table(*table(s), align=CONFIRM_ALIGN)}\n\n{s.verdict}"


# --- the command --------------------------------------------------------------------------------------------------


def load(exp: str) -> tuple[dict[str, Any], list[ConfirmRun]] | None:
    """The confirmation plan of a sweep, or None when it was never confirmed."""
    text = read_text(join(exp, CONFIRM_DIR, PLAN_FILE))
    if text is None:
        return None
    plan = json.loads(text)
    return plan, [ConfirmRun(**r) for r in plan["runs"]]


def load_summary(exp: str) -> Summary | None:
    loaded = load(exp)
    if loaded is None:
        return None
    plan, runs = loaded
    saved = ledger.newest_checkpoints(join(exp, CONFIRM_DIR))
    failed = {int(k): v for k, v in plan.get("failed", {}).items()}
    return summarize(runs, saved, failed, plan["metric"], plan["mode"], plan["seeds"], plan["top_k"])


def confirm(
    name: str,
    storage: str,
    *,
    top_k: int | None = None,
    seeds: int | None = None,
    address: str | None = None,
    max_concurrent: int | None = None,
    out: Any = sys.stdout,
) -> int:
    from sweep.plan import check_can_start, cpus_per_trial, load_plan
    from sweep.runner import drive_session

    for flag, value in (("--top-k", top_k), ("--seeds", seeds), ("--max-concurrent", max_concurrent)):
        if value is not None and value < 1:
            raise UserError(f"{flag} is {value} but must be >= 1")
    p, study = load_plan(name, storage)
    if ledger.is_live(ledger.read_driver(p.exp)):
        raise UserError(f"sweep {name!r} is still running; confirm it when it has finished "
                        f"(`{command('status', name, storage)}`)")
    cdir = join(p.exp, CONFIRM_DIR)
    loaded = load(p.exp)
    again = command("confirm", name, p.storage)
    fresh = loaded is None
    if loaded is not None:
        plan, runs = loaded
        asked = {"--top-k": (top_k, plan["top_k"]), "--seeds": (seeds, len(plan["seeds"]))}
        for flag, (given, kept) in asked.items():
            if given is not None and given != kept:
                raise UserError(
                    f"sweep {name!r} was confirmed with {flag} {kept}; run `{again}` to continue "
                    f"or see it, or delete {cdir} to confirm afresh"
                )
    else:
        records = ranking.records_from(study, ledger.newest_checkpoints(p.exp))
        finalists = choose_finalists(records, p.study.metric, p.study.mode, p.epochs, top_k or 1)
        if not finalists:
            raise UserError(f"no trial of sweep {name!r} has a score yet; nothing to confirm "
                            f"(`{command('status', name, storage)}`)")
        unfinished = len(records) < p.num_samples or any(not r.finished for r in records)
        if unfinished:
            print(f"note: sweep {name} has not finished; the finalists are the best of its trials so far", file=out)
        seed_list = confirm_seeds(p.settings.seed, seeds or 3)
        runs = plan_runs(finalists, seed_list, p.epochs, max(1, int(cpus_per_trial(p.settings, p.study))))
        plan = {
            "sweep": name,
            "metric": p.study.metric,
            "mode": p.study.mode,
            "epochs": p.epochs,
            "top_k": top_k or 1,
            "seeds": seed_list,
            "runs": [asdict(r) for r in runs],
            "failed": {},
        }
    if ledger.is_live(ledger.read_driver(cdir)):
        raise UserError(f"the confirmation of {name!r} is already running; wait for it or stop it first")
    if address is not None:
        p.settings.address = address
    if max_concurrent is not None:
        p.settings.max_concurrent = max_concurrent
    saved = ledger.newest_checkpoints(cdir)
    failed = {int(k) for k in plan.get("failed", {})}
    todo = [r for r in runs if r.number not in failed and not _finished(saved.get(r.number), r.config["epochs"])]
    if todo:
        check_can_start(p.settings, p.study)  # before anything is written
    if fresh:
        write_atomic(join(cdir, PLAN_FILE), json.dumps(plan, indent=2))
    code = 0
    if todo:
        code = drive_session(cdir, p.settings, lambda k, driver: _drive(p, plan, runs, todo, k, driver, out))
    summary = load_summary(p.exp)
    text = describe(summary)
    write_atomic(join(cdir, RESULT_FILE), f"# Confirmation of sweep {name}\n\n{text}\n")
    print(f"\nconfirmation of {name}:\n{text}", file=out)
    if code == 130:
        print(f"interrupted: continue with `{again}`", file=out)
    else:
        print(f"`{command('report', name, p.storage)}` adds it to the report", file=out)
    return code


def _drive(p: Any, plan: dict[str, Any], runs: Sequence[ConfirmRun], todo: Sequence[ConfirmRun], session: int,
           driver: dict[str, Any], out: Any) -> int:
    from ray.tune.schedulers import FIFOScheduler

    from sweep.progress import Progress
    from sweep.runner import Interrupt, fit
    from sweep.study import FixedSearcher

    cdir = join(p.exp, CONFIRM_DIR)
    saved = ledger.newest_checkpoints(cdir)
    ledger.remove_leftovers(cdir, saved)
    n_final = len({r.finalist for r in runs})
    print(
        f"confirming {p.name}: {n_final} finalist(s) x {len(plan['seeds'])} seeds at {plan['epochs']} epochs, "
        f"{len(todo)} of {len(runs)} runs to go, results in {cdir}",
        file=out,
    )
    searcher = FixedSearcher(
        [(r.number, r.config, saved[r.number].path if r.number in saved else None) for r in todo], session
    )
    progress = Progress(len(runs), plan["epochs"], TEST_PREFIX + plan["metric"], done=len(runs) - len(todo),
                        out=out, seeds=True)
    interrupt = Interrupt()
    fit(p.settings, p.study, cdir, session, driver, searcher, FIFOScheduler(), len(todo), [progress], interrupt,
        out=out, task=p.task)
    if searcher.failed:
        plan["failed"].update({str(k): v for k, v in searcher.failed.items()})
        write_atomic(join(cdir, PLAN_FILE), json.dumps(plan, indent=2))
    ledger.remove_leftovers(cdir, ledger.newest_checkpoints(cdir))
    saved = ledger.newest_checkpoints(cdir)
    left = [r for r in runs if r.number not in searcher.failed and str(r.number) not in plan["failed"]
            and not _finished(saved.get(r.number), r.config["epochs"])]
    driver["state"] = "interrupted" if (interrupt.fired or left) else "finished"
    return 130 if driver["state"] == "interrupted" else 0

