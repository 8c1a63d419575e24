"""The Python API: everything the CLI does, for a notebook or a script; the CLI is a thin layer over it.

    import sweep
    s = sweep.load("mnist1d-20261207-183550")          # storage="./sweeps" by default; s3://... too
    s.state, s.ranking(), s.trials(), s.epochs()       # pandas DataFrames: the report's Parquet tables
    s.best_config(), s.confirmation(), s.answer, s.study
    s = sweep.run(space="mnist1d", num_samples=30, confirm=True)   # a sweep, the CLI's options as keywords
    sweep.list_sweeps("./sweeps")                      # one row per sweep

Reading never writes: a loaded sweep is read from its files only (no Ray), like `sweep status`, and a damaged file
is a :class:`UserError` naming it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

from sweep import confirm as confirm_mod
from sweep import ledger, ranking, tables
from sweep.storage import DEFAULT_STORAGE, join, list_names, read_text, resolve_storage
from trainables.errors import UserError


@dataclass
class Sweep:
    """One sweep, read from its files when asked (call :func:`load` again to see a running sweep move on)."""

    name: str
    storage: str
    path: str
    settings: dict[str, Any] = field(repr=False)

    @cached_property
    def study(self) -> Any:
        """The Optuna study (read-only)."""
        return ledger.load_sweep(self.name, self.storage)[2]

    @cached_property
    def _records(self) -> list[ranking.TrialRecord]:
        return ranking.records_from(self.study, ledger.newest_checkpoints(self.path), self.metric)

    @property
    def metric(self) -> str:
        return self.settings["metric"]

    @property
    def mode(self) -> str:
        return self.settings["mode"]

    @property
    def budget(self) -> int:
        """The full budget of a trial, in epochs."""
        return int(self.settings["epochs"])

    @property
    def state(self) -> str:
        """``running``, ``interrupted``, ``finished`` or ``not started``."""
        from sweep.status import describe_driver

        state = describe_driver(ledger.read_driver(self.path), time.time())[0].split(" ", 1)[0]
        if state == "interrupted" and sum(r.finished for r in self._records) >= self.settings["num_samples"]:
            return "finished"
        return state

    def ranking(self) -> Any:
        """One row per strategy, best first: its best trial's last validation score (full-budget trials first)."""
        import pandas as pd

        rows = ranking.rank(self._records, self.metric, self.mode, self.budget)
        return pd.DataFrame([{
            "rank": i, "strategy": r.strategy, self.metric: r.score if ranking.finite(r.score) else None,
            "epochs": r.reached, "full_budget": r.full_budget, "trials": r.trials, "stopped_early": r.early_stopped,
            "failed": r.failed, "trial_epochs": r.spent, "best_trial": r.best.number if r.best else None,
            "best_config": dict(r.best.config) if r.best else None,
        } for i, r in enumerate(rows, 1)])

    def trials(self) -> Any:
        """One row per trial (``trials.parquet``'s rows)."""
        return _frame(tables.arrow("trials", tables.trial_rows(self.name, self._records, self.metric, self.budget),
                                   self._about))

    def epochs(self) -> Any:
        """One row per trial and reported epoch (``epochs.parquet``'s rows)."""
        return _frame(tables.arrow("epochs", tables.epoch_rows(self.name, self._records), self._about))

    def best_config(self) -> dict[str, Any] | None:
        """The best trial's configuration, as `sweep train --config` takes it (None before any trial scored)."""
        from sweep.report import best_config

        best = best_config(self._records, self.metric, self.mode, self.budget)
        return None if best is None else dict(best.config)

    @cached_property
    def answer(self) -> Any:
        """The confirmation race's answer (:class:`sweep.race.Answer`), or None when the sweep was never confirmed."""
        loaded = confirm_mod.load_answer(self.path)
        return None if loaded is None else loaded[1]

    def confirmation(self) -> Any:
        """One row per strategy of the race (its status, seeds, validation and test intervals, probability of being
        best), or None when the sweep was never confirmed."""
        import pandas as pd

        a = self.answer
        if a is None:
            return None
        return pd.DataFrame([{
            "strategy": e.strategy, "status": e.status, "seeds": len(e.seeds), "trial_id": e.finalist.trial,
            f"val_{self.metric}": e.val.mean if e.val.n else None, "val_low": _nan(e.val.low),
            "val_high": _nan(e.val.high), "p_best": e.p_best,
            f"test_{self.metric}": e.test.mean if e.test is not None and e.test.n else None,
            "test_low": _nan(e.test.low) if e.test else None, "test_high": _nan(e.test.high) if e.test else None,
            "dropped_after_round": e.drop.after_round if e.drop else None, "why": e.drop.reason if e.drop else None,
        } for e in a.entries])

    def race(self) -> Any:
        """One row per run of the confirmation race (``confirm.parquet``'s rows), or None."""
        plan = confirm_mod.load(self.path)
        if plan is None:
            return None
        saved = ledger.newest_checkpoints(join(self.path, confirm_mod.CONFIRM_DIR))
        return _frame(tables.arrow("race", tables.race_rows(self.name, plan, saved), self._about))

    def status(self) -> dict[str, Any]:
        """What `sweep status --json` prints: plain values only."""
        records = self._records
        counts = {s: sum(r.status == s for r in records) for s in tables.STATES}
        out = {
            "sweep": self.name, "storage": self.storage, "state": self.state, "space": self.settings["space"],
            "task": self.settings.get("task"), "metric": self.metric, "mode": self.mode, "epochs": self.budget,
            "num_samples": self.settings["num_samples"], "scheduler": self.settings["scheduler"],
            "trials": {**counts, "not_started": max(0, self.settings["num_samples"] - len(records))},
            "trial_epochs": sum(r.reached for r in records),
            "ranking": _plain(self.ranking().to_dict("records")),
            "damaged": [line for line in _damage(self)],
        }
        a = self.answer
        if a is not None:
            out["confirmation"] = {"finished": a.state.finished, "rounds": a.state.rounds, "winner": a.winner,
                                   "survivors": list(a.state.alive), "verdict": a.verdict,
                                   "strategies": _plain(self.confirmation().to_dict("records"))}
        return out

    @property
    def _about(self) -> dict[str, Any]:
        return {"sweep": self.name, "metric": self.metric, "mode": self.mode, "epochs": self.budget}


def load(name: str, storage: str = DEFAULT_STORAGE) -> Sweep:
    """An existing sweep, by name, under ``storage`` (a local directory or a URI)."""
    exp, settings, _ = ledger.load_sweep(name, storage)
    return Sweep(name, resolve_storage(storage), exp, settings)


def list_sweeps(storage: str = DEFAULT_STORAGE) -> Any:
    """One row per sweep under ``storage``: name, space, state, trials done of asked, best strategy and score,
    when it started, and whether it was confirmed. A folder that is not a sweep is left out."""
    import pandas as pd

    root = resolve_storage(storage)
    rows = []
    for name in list_names(root):
        if read_text(join(root, name, ledger.SETTINGS_FILE)) is None:
            continue
        try:
            s = load(name, root)
            top = s.ranking().head(1).to_dict("records")
            sessions = ledger.read_driver(s.path, strict=False).get("sessions", [])
            rows.append({
                "sweep": name, "space": s.settings["space"], "state": s.state,
                "trials": sum(r.finished for r in s._records), "num_samples": s.settings["num_samples"],
                "best_strategy": top[0]["strategy"] if top else None,
                "best_score": top[0][s.metric] if top else None, "metric": s.metric,
                "started": _when(sessions[0]["started"]) if sessions else None,
                "confirmed": _short_answer(s.answer),
            })
        except UserError as exc:
            rows.append({"sweep": name, "state": f"damaged: {exc}"})
    return pd.DataFrame(rows, columns=["sweep", "space", "state", "trials", "num_samples", "best_strategy",
                                       "best_score", "metric", "started", "confirmed"])


def run(space: str = "mnist1d", *, out: Any = None, **options: Any) -> Sweep:
    """Launch a sweep, as `sweep run` does, and return it when it ends; ``options`` are the CLI's options in
    Python spelling (``name``, ``storage``, ``num_samples``, ``epochs``, ``strategies=[...]``, ``overrides={...}``
    for ``--set``, ``confirm=True`` for the whole pipeline, ``max_seeds``, ``address``, ...). ``out``: where the
    progress goes (default: stdout; ``io.StringIO()`` to keep it quiet)."""
    from sweep.plan import SweepSettings, plan
    from sweep.race import Rules
    from sweep.runner import run as run_sweep

    rules = {k: options.pop(k) for k in ("max_seeds", "min_seeds", "alpha", "test") if k in options}
    race_budget = options.pop("race_time_budget_s", None)
    if options.get("confirm") is True or rules or race_budget is not None:
        options["confirm"] = {**asdict(Rules(**rules)), "time_budget_s": race_budget}
    known = set(SweepSettings.__dataclass_fields__)
    unknown = sorted(set(options) - known)
    if unknown:
        raise UserError(f"sweep.run() got an unknown option {unknown[0]!r}; the options are {', '.join(sorted(known))}")
    settings = SweepSettings(space=space, **options)
    p = plan(settings)  # the name it will get, for load() afterwards
    settings.name = p.name
    code = run_sweep(settings, out=out or sys.stdout)
    if code not in (0, 130):
        raise UserError(f"sweep {p.name} ended with exit status {code}")
    return load(p.name, p.storage)


def _short_answer(a: Any) -> str | None:
    """The race's answer in a few words: the winner, the survivors that cannot be told apart, or how far it got."""
    if a is None:
        return None
    if not a.state.finished:
        return f"racing: round {a.state.rounds + 1}"
    return a.winner or (" = ".join(a.state.alive) + " (tied)" if a.state.alive else "no finalist finished")


def _frame(table: Any) -> Any:
    return table.to_pandas()


def _nan(x: float) -> float | None:
    return x if ranking.finite(x) else None


def _plain(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """JSON-ready: NaN as None."""
    return [{k: (None if isinstance(v, float) and not ranking.finite(v) else v) for k, v in row.items()}
            for row in rows]


def _damage(s: Sweep) -> list[str]:
    from sweep.check import damage_lines

    _, damaged = ledger.scan_checkpoints(s.path)
    return damage_lines(damaged, s._records)


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
