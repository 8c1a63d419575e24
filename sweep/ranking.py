"""The ranking a sweep ends with: the best validation score per strategy, its configuration, the epochs it reached.

Pure functions over plain trial records, so a running, finished or interrupted sweep ranks the same way. A trial's
score is its *last* reported value (the score at the budget it reached), never the best epoch peeked on the
validation split; trials that reached the full budget rank ahead of any that did not, so strategies are compared at
equal budget.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trainables.strategies import KNOBS

# What every study tunes under each strategy (search_spaces: the nuisance parameters), shown where a configuration
# comes without the record of what its study searched (a `sweep confirm` finalist).
NUISANCE = ("lr", "temperature")


# A trial's state in words, from its Optuna state: ASHA-stopped trials are PRUNED, NaN/collapse/errors FAIL.
STATUS_OF = {"COMPLETE": "finished", "PRUNED": "stopped", "FAIL": "failed", "RUNNING": "running"}


@dataclass(frozen=True)
class TrialRecord:
    number: int
    config: dict[str, Any]
    history: list[dict[str, Any]]  # one dict per reported epoch, in order
    status: str = ""  # finished (full budget), stopped (early, by the scheduler or a time budget), failed, running
    reason: str = ""  # why it stopped or failed
    searched: tuple[str, ...] = ()  # the parameters its study searched (Optuna's params), the strategy included
    # where its history is not its checkpoint's: its epochs from study.db, because its newest checkpoint is damaged
    # or gone ("" when the checkpoint holds every epoch the study knows of)
    note: str = ""

    @property
    def last(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}

    @property
    def reached(self) -> int:
        """The last epoch the trial reported (0 without history), robust to rows lacking an epoch."""
        return max((int(row["epoch"]) for row in self.history if finite(row.get("epoch"))), default=0)

    @property
    def finished(self) -> bool:
        return self.status in ("finished", "stopped", "failed")


def records_from(study: Any, saved: Mapping[int, Any], metric: str | None = None) -> list[TrialRecord]:
    """One record per trial the study has handed out, with the history of its newest checkpoint on disk.

    With ``metric``, the epochs the study knows of and the checkpoint does not (its newest checkpoint is damaged, or
    its session directory is gone) are taken from the study's intermediate values, and the record says so: a damaged
    file never silently ranks a trial at a smaller budget.
    """
    records = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name not in STATUS_OF:
            continue
        history = list(saved[t.number].history) if t.number in saved else []
        note = ""
        if metric is not None:
            reached = max((int(r["epoch"]) for r in history), default=0)
            extra = {step: v for step, v in t.intermediate_values.items() if step > reached and finite(v)}
            if extra:
                history += [{"epoch": int(step), metric: float(v)} for step, v in sorted(extra.items())]
                note = (f"epochs {min(extra)}-{max(extra)} from study.db: "
                        + ("its newest checkpoint is damaged" if t.number in saved else "no checkpoint on disk"))
        records.append(
            TrialRecord(
                number=t.number,
                config=dict(t.user_attrs.get("config") or t.params),
                history=history,
                status=STATUS_OF[t.state.name],
                reason=str(t.user_attrs.get("reason", "")),
                searched=tuple(t.params),
                note=note,
            )
        )
    return records


@dataclass(frozen=True)
class Row:
    strategy: str
    score: float
    reached: int  # the epochs its best trial reached
    full_budget: bool
    trials: int
    early_stopped: int
    failed: int
    best: TrialRecord | None = field(default=None, compare=False)
    spent: int = 0  # trial-epochs over all its trials


def rank(records: Iterable[TrialRecord], metric: str, mode: str, epochs: int) -> list[Row]:
    """One row per strategy, best first: full-budget trials ahead, then by the score in ``mode``."""
    sign = 1.0 if mode == "max" else -1.0
    by_strategy: dict[str, list[TrialRecord]] = {}
    for rec in records:
        by_strategy.setdefault(str(rec.config.get("strategy", "?")), []).append(rec)
    rows = []
    for strategy, recs in by_strategy.items():
        scored = [r for r in recs if finite(r.last.get(metric))]
        best = max(scored, key=lambda r: (r.reached >= epochs, sign * r.last[metric]), default=None)
        rows.append(
            Row(
                strategy=strategy,
                score=best.last[metric] if best else math.nan,
                reached=best.reached if best else 0,
                full_budget=bool(best and best.reached >= epochs),
                trials=len(recs),
                early_stopped=sum(1 for r in recs if r.status == "stopped"),
                failed=sum(1 for r in recs if r.status == "failed"),
                best=best,
                spent=sum(r.reached for r in recs),
            )
        )
    return sorted(rows, key=lambda r: (r.best is not None, r.full_budget, sign * _or(r.score)), reverse=True)


def default_grace_period(epochs: int) -> int:
    """ASHA's first rung at half the budget: 8 epochs -> a rung at 4; 12 -> 6.

    Measured, not guessed (``benchmarks/ranking_fidelity.py``, every trial of the reference run to its end): how
    well a strategy's trials ranked at epoch k agree with their ranking at the last of 8 epochs, Kendall's tau
    averaged over the ten strategies, is 0.12 at epoch 1, 0.30 at 2, 0.40 at 4 and 0.61 at 7. Cutting at epoch 1 or
    2 stops trials on a ranking that is nearly noise; half the budget is the earliest rung that says something.
    """
    return max(1, epochs // 2)


def asha_rungs(epochs: int, grace_period: int | None = None, reduction_factor: int = 2) -> list[int]:
    """The epochs at which ASHA may stop a trial (Ray-free, so reports can mark them)."""
    rungs, r = [], grace_period or default_grace_period(epochs)
    while r < epochs:
        rungs.append(r)
        r *= reduction_factor
    return rungs


def rungs_of(scheduler: str, epochs: int) -> list[int]:
    """The epochs at which ``scheduler`` compares trials (none for FIFO)."""
    return asha_rungs(epochs) if scheduler in ("asha", "pooled_asha") else []


def finite(x: Any) -> bool:
    """A real, finite number (not NaN, not inf, not a string or None)."""
    return isinstance(x, (int, float)) and math.isfinite(x)


def _or(x: float) -> float:
    return x if finite(x) else -math.inf


def describe_config(config: Mapping[str, Any], searched: Iterable[str] = NUISANCE) -> str:
    """The tuned part of a configuration, short: what its study searched (the strategy aside, it is named
    beside) and the strategy's knobs, searched or at their preset's values."""
    shown = set(searched) - {"strategy"}
    parts = []
    for key, value in config.items():
        if key not in shown and key not in KNOBS:
            continue
        parts.append(f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts)


RANKING_ALIGN = "rlrrlrl"


def table(rows: Sequence[Row], metric: str, epochs: int) -> tuple[list[str], list[list[str]]]:
    """The ranking as a header and rows of cells, shaped like the seed papers' tables (strategy x score), plus the
    configuration, the epochs it reached and what the strategy cost."""
    header = ["rank", "strategy", metric, "epochs", "trials (stopped early, failed)", "trial-epochs",
              "best configuration"]
    cells = []
    for i, row in enumerate(rows, 1):
        score = f"{row.score:.4f}" if finite(row.score) else "n/a"
        note = "" if row.full_budget else " (not at full budget)"
        stop = row.best.last.get("stop_reason") if row.best else ""
        if stop:
            note += f" ({stop})"
        config = describe_config(row.best.config, row.best.searched) if row.best else ""
        cells.append([str(i), row.strategy, score + note, f"{row.reached}/{epochs}",
                      f"{row.trials} ({row.early_stopped}, {row.failed})", str(row.spent), config])
    return header, cells


def paper_table(rows: Sequence[Row], columns: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Every score of each strategy's best trial at the epoch it reached, one column per metric: the seed paper's
    table (e.g. mAP and R@K in both directions for audio-text)."""
    header = ["strategy", *columns, "epochs"]
    cells = []
    for row in rows:
        last = row.best.last if row.best else {}
        values = [f"{last[c]:.4f}" if finite(last.get(c)) else "n/a" for c in columns]
        cells.append([row.strategy, *values, str(row.reached)])
    return header, cells


def markdown_table(header: Sequence[str], cells: Sequence[Sequence[str]], align: str = "") -> str:
    """A Markdown table (readable as plain text too); ``align`` has an 'r' for each right-aligned column."""
    rule = ["---:" if align[i : i + 1] == "r" else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines)


def format_table(rows: Sequence[Row], metric: str, epochs: int) -> str:
    return markdown_table(*table(rows, metric, epochs), align=RANKING_ALIGN)
