"""`sweep confirm NAME`: race each strategy's finalist on fresh, paired seeds until the answer is clear.

A sweep ranks on one seed and one validation split and picks the best of many tries, so its top scores are biased up
and a point's difference may be noise. The confirmation re-runs each strategy's best configuration at full budget
under new seeds, round by round, the same seed for every strategy in a round (a seed fixes the data split, the
initialisation and every batch, so the runs of a round are paired). After each round the strategies significantly
worse than the current best on validation drop out (:mod:`sweep.race` has the rules and why they are valid); the
race ends when one strategy remains, after ``--max-seeds`` rounds, or at ``--time-budget`` (checked between rounds,
so every survivor always has the same seeds). The test split is scored for every run and reported for the
survivors; it never chooses.

It lives in ``<sweep>/confirm/`` and keeps its state the way a sweep does: ``confirm.json`` (the finalists, seeds
and rules, fixed once; the runs that failed; a time-budget stop), ``driver.json``, and one ``session-K/`` per driver
session with each run's checkpoints. Which runs exist follows from their outcomes, so an interrupted race replays
to the same round and continues with the runs still missing; a finished one prints its answer and runs nothing.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sweep import ledger, race, ranking
from sweep.claim import claim
from sweep.storage import command, join, read_text, write_atomic
from trainables.errors import UserError

CONFIRM_DIR = "confirm"
PLAN_FILE = "confirm.json"
RESULT_FILE = "confirm.md"
TEST_PREFIX = "test_"  # a trial with evaluate_test reports test_<metric> at its last epoch


def choose_finalists(
    records: Sequence[ranking.TrialRecord], metric: str, mode: str, epochs: int
) -> list[race.Finalist]:
    """Each strategy's best scored trial that did not fail, full budget first, in the sweep's ranking order."""
    sign = 1.0 if mode == "max" else -1.0
    out = []
    for row in ranking.rank(records, metric, mode, epochs):
        ok = [r for r in records if str(r.config.get("strategy")) == row.strategy and r.status != "failed"
              and ranking.finite(r.last.get(metric))]
        if ok:
            best = max(ok, key=lambda r: (r.reached >= epochs, sign * r.last[metric]))
            out.append(race.Finalist(row.strategy, best.number, dict(best.config)))
    return out


def confirm_seeds(sweep_seed: int, n: int) -> list[int]:
    """Fresh seeds, never the sweep's own (its split is the one the finalists were selected on); they wrap around
    at 2**32, the seeds a trial takes, so a sweep seeded near the top still confirms."""
    return [(sweep_seed + 1 + i) % 2**32 for i in range(n)]


def run_config(finalist: race.Finalist, seed: int, epochs: int, num_threads: int) -> dict[str, Any]:
    """A finalist's configuration under ``seed``, at full budget, scored on validation and test at the end."""
    return {
        **finalist.config,
        "seed": seed,
        "epochs": epochs,
        "eval_every": epochs,  # no early stopping here: score validation and test once, at the end
        "evaluate_test": True,
        "num_threads": num_threads,  # the sweep's thread count: the same float sums as the trial ranked
    }


def outcome_of(last: Mapping[str, Any] | None, metric: str, epochs: int) -> race.Outcome | None:
    """A run's outcome from its last reported row; None while it has not ended."""
    if not last:
        return None
    if last.get("stop_reason"):
        return race.Outcome(failed=f"{last['stop_reason']} at epoch {last.get('epoch')}")
    if int(last.get("epoch", 0)) < epochs:
        return None
    val, test = last.get(metric), last.get(TEST_PREFIX + metric)
    if not ranking.finite(val):
        return race.Outcome(failed=f"no finite validation {metric}")
    return race.Outcome(float(val), float(test) if ranking.finite(test) else None)


@dataclass(frozen=True)
class RacePlan:
    """What confirm.json holds: fixed when the race starts, plus the failures and a stop as they happen."""

    sweep: str
    metric: str
    mode: str
    epochs: int
    num_threads: int
    rules: race.Rules
    seeds: list[int]  # one per possible round
    finalists: list[race.Finalist]
    failed: dict[int, str]  # run number -> why it failed after its retries
    stopped_after: int | None = None  # rounds complete when a time budget stopped the race
    time_budget_s: float | None = None

    def to_json(self) -> str:
        data = asdict(self)
        data["failed"] = {str(k): v for k, v in self.failed.items()}
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str) -> RacePlan:
        data = json.loads(text)
        finalists = [race.Finalist(**f) for f in data["finalists"]]
        failed = {int(k): v for k, v in data.get("failed", {}).items()}
        return cls(**{**data, "rules": race.Rules(**data["rules"]), "finalists": finalists, "failed": failed})

    def number(self, round_index: int, strategy: str) -> int:
        names = [f.strategy for f in self.finalists]
        return race.run_number(round_index, names.index(strategy), len(names))

    def run(self, number: int) -> tuple[race.Finalist, int, dict[str, Any]]:
        """Run ``number``'s finalist, seed and trial config."""
        f = self.finalists[number % len(self.finalists)]
        seed = self.seeds[number // len(self.finalists)]
        return f, seed, run_config(f, seed, self.epochs, self.num_threads)

    def outcomes(self, saved: Mapping[int, ledger.Saved]) -> dict[int, race.Outcome]:
        out = {n: race.Outcome(failed=why) for n, why in self.failed.items()}
        for n, s in saved.items():
            if n not in out and (o := outcome_of(s.history[-1] if s.history else None, self.metric, self.epochs)):
                out[n] = o
        return out

    def answer(self, outcomes: Mapping[int, race.Outcome]) -> race.Answer:
        return race.answer(self.finalists, self.rules, self.seeds, outcomes, self.metric, self.mode,
                           self.stopped_after)

    def state(self, outcomes: Mapping[int, race.Outcome]) -> race.State:
        """Where the race stands (the answer's state, without its intervals and bootstrap: cheap enough for every
        poll of the searcher and every epoch the race's scheduler sees)."""
        return race.replay(self.finalists, self.rules, outcomes, self.mode, self.stopped_after)


def load(exp: str) -> RacePlan | None:
    """The race of a sweep, or None when it was never confirmed."""
    text = read_text(join(exp, CONFIRM_DIR, PLAN_FILE))
    return None if text is None else RacePlan.from_json(text)


def load_answer(exp: str) -> tuple[RacePlan, race.Answer] | None:
    plan = load(exp)
    if plan is None:
        return None
    return plan, plan.answer(plan.outcomes(ledger.newest_checkpoints(join(exp, CONFIRM_DIR))))


# --- what it prints ---------------------------------------------------------------------------------------------

CONFIRM_ALIGN = "rllrrrrl"


def _ci(i: race.Interval | None) -> str:
    if i is None or not i.n:
        return "n/a"
    if i.n < 2 or not ranking.finite(i.low):
        return f"{i.mean:.4f}"
    return f"{i.mean:.4f} [{i.low:.4f}, {i.high:.4f}]"


def table(a: race.Answer) -> tuple[list[str], list[list[str]]]:
    """One row per strategy: the survivors best first, then the dropped, best first over the rounds all of them ran."""
    m = a.metric
    header = ["rank", "strategy", "status", "seeds", f"validation {m}: mean [95% CI]", "P(best)",
              f"test {m}: mean [95% CI]", "configuration"]
    cells = []
    for i, e in enumerate(a.entries, 1):
        status = e.status if e.drop is None else f"dropped after round {e.drop.after_round}: {e.drop.reason}"
        cells.append([
            str(i), e.strategy, status, str(len(e.seeds)), _ci(e.val),
            f"{e.p_best:.2f}" if e.p_best is not None else "", _ci(e.test) if e.test is not None else "not shown",
            f"trial {e.finalist.trial}: {ranking.describe_config(e.finalist.config)}",
        ])
    return header, cells


def headline(a: race.Answer) -> str:
    r = a.rules
    test = "paired t-test" if r.test == "t" else "exact sign-flip test"
    seeds = ", ".join(map(str, a.seeds)) or "none yet"
    return (
        f"Each strategy's best configuration raced at full budget on fresh seeds, the same seeds for every strategy "
        f"(seeds {seeds}); after each round from round {r.min_seeds} on, the strategies significantly worse than the "
        f"best on validation were dropped ({test}, alpha {r.alpha:g} Bonferroni-split over the rivals); at most "
        f"{r.max_seeds} rounds. Intervals are 95% Student's t over seeds; P(best) is a paired bootstrap over seeds of "
        f"the survivors' validation means. The test split never chooses: it is shown for the survivors only. "
        + (f"The dropped are ranked by their mean validation score over rounds 1 to {a.shared_rounds}, which all of "
           f"them ran (paired), not by when they were dropped. " if a.shared_rounds else "")
        + f"{a.runs_done} runs done."
    )


def describe(a: race.Answer) -> str:
    return f"{headline(a)}\n\n{ranking.markdown_table(*table(a), align=CONFIRM_ALIGN)}\n\n{a.verdict}"


# --- the command --------------------------------------------------------------------------------------------------


def confirm(
    name: str,
    storage: str,
    *,
    rules: race.Rules | None = None,
    time_budget_s: float | None = None,
    address: str | None = None,
    max_concurrent: int | None = None,
    out: Any = sys.stdout,
    again: str | None = None,
    show: bool = True,
) -> int:
    """Start, continue or show the race of sweep ``name``; the exit status is 130 when it was interrupted.

    ``again``: the command that continues it (`sweep confirm`, or `sweep resume` in a pipeline); ``show``: end
    with the answer (a pipeline shows it after its report instead).
    """
    from sweep.plan import check_can_start, cpus_per_trial, load_plan

    p, study = load_plan(name, storage)
    if ledger.is_live(ledger.read_driver(p.exp)):
        raise UserError(f"sweep {name!r} is still running; confirm it when it has finished "
                        f"(`{command('status', name, storage)}`)")
    cdir = join(p.exp, CONFIRM_DIR)
    again = again or command("confirm", name, p.storage)
    plan = load(p.exp)
    fresh = plan is None
    if plan is not None:
        if rules is not None and rules != plan.rules:
            raise UserError(f"sweep {name!r} is being confirmed with other rules ({_rules(plan.rules)}); run "
                            f"`{again}` to continue or see it, or delete {cdir} to confirm afresh")
    else:
        rules = rules or race.Rules()
        problems = rules.check()
        if problems:
            raise UserError(problems[0])
        records = ranking.records_from(study, ledger.newest_checkpoints(p.exp), p.study.metric)
        finalists = choose_finalists(records, p.study.metric, p.study.mode, p.epochs)
        if not finalists:
            raise UserError(f"no trial of sweep {name!r} has a score yet; nothing to confirm "
                            f"(`{command('status', name, storage)}`)")
        if len(records) < p.num_samples or any(not r.finished for r in records):
            print(f"note: sweep {name} has not finished; the finalists are the best of its trials so far", file=out)
        plan = RacePlan(name, p.study.metric, p.study.mode, p.epochs, max(1, int(cpus_per_trial(p.settings, p.study))),
                        rules, confirm_seeds(p.settings.seed, rules.max_seeds), finalists, {},
                        time_budget_s=time_budget_s)
    if ledger.is_live(ledger.read_driver(cdir)):
        raise UserError(f"the confirmation of {name!r} is already running; wait for it or stop it first")
    if address is not None:
        p.settings.address = address
    if max_concurrent is not None:
        p.settings.max_concurrent = max_concurrent
    state = plan.state(plan.outcomes(ledger.newest_checkpoints(cdir)))
    code = 0
    if fresh or not state.finished:  # a finished race is only shown: nothing is written
        if not state.finished:
            check_can_start(p.settings, p.study)  # before anything is written or claimed
        with claim(p.exp):
            if fresh and load(p.exp) is None:  # not created by another driver meanwhile
                write_atomic(join(cdir, PLAN_FILE), plan.to_json())
            plan = load(p.exp)
            if not plan.state(plan.outcomes(ledger.newest_checkpoints(cdir))).finished:
                from sweep.runner import drive_session

                code = drive_session(cdir, p.settings, lambda k, driver: _drive(p, plan, k, driver, out))
            text = describe(load_answer(p.exp)[1])
            write_atomic(join(cdir, RESULT_FILE), f"# Confirmation of sweep {name}\n\n{text}\n")
    if show or code == 130:
        print(final_answer(p.exp, name), file=out)
    if code == 130:
        print(f"interrupted: continue with `{again}`", file=out)
    return code


def final_answer(exp: str, name: str) -> str:
    """The race's table and, last, its answer in one sentence: how `sweep confirm` and `sweep run --confirm` end."""
    _, a = load_answer(exp)
    return f"\nconfirmation of {name}:\n{ranking.markdown_table(*table(a), align=CONFIRM_ALIGN)}\n\n{a.verdict}"


def _rules(r: race.Rules) -> str:
    return f"--max-seeds {r.max_seeds} --min-seeds {r.min_seeds} --alpha {r.alpha:g} --test {r.test}"


def _drive(p: Any, plan: RacePlan, session: int, driver: dict[str, Any], out: Any) -> int:
    from sweep.progress import Progress
    from sweep.runner import Interrupt, fit
    from sweep.study import RaceScheduler, RaceSearcher

    cdir = join(p.exp, CONFIRM_DIR)
    saved = ledger.newest_checkpoints(cdir)
    ledger.remove_leftovers(cdir, saved)
    outcomes = plan.outcomes(saved)
    state = plan.state(outcomes)
    started = time.time() - ledger.time_spent(driver)
    budget = plan.time_budget_s

    def out_of_time() -> bool:
        return budget is not None and time.time() - started >= budget

    def record(updated: RacePlan) -> None:
        write_atomic(join(cdir, PLAN_FILE), updated.to_json())

    total = len(plan.finalists) * plan.rules.max_seeds
    print(
        f"racing {p.name}: {len(plan.finalists)} finalists at {plan.epochs} epochs, round {state.rounds + 1} of at "
        f"most {plan.rules.max_seeds}, {len(state.alive)} strategies in the race, results in {cdir}",
        file=out,
    )
    progress = Progress(total, plan.epochs, plan.metric, done=len(outcomes), out=out, seeds=True, mode=plan.mode,
                        title="race: ")
    searcher = RaceSearcher(plan, outcomes, {n: s.path for n, s in saved.items()}, session, out_of_time, record,
                            log=progress.log)
    interrupt = Interrupt()
    fit(p.settings, p.study, cdir, session, driver, searcher, RaceScheduler(searcher), total - len(outcomes),
        [progress], interrupt, out=out, task=p.task)
    ledger.remove_leftovers(cdir, ledger.newest_checkpoints(cdir))
    finished = load_answer(p.exp)[1].state.finished
    driver["state"] = "finished" if finished and not interrupt.fired else "interrupted"
    return 0 if driver["state"] == "finished" else 130
