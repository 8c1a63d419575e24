"""A sweep's results as tidy tables: the rows `sweep report` writes as Parquet and the Python API returns as
DataFrames, one builder each, so the two can never disagree.

Three tables, joined by the same keys (``sweep``, ``trial_id``):

- ``epochs``: one row per trial and reported epoch (``epochs.parquet``);
- ``trials``: one row per trial (``trials.parquet``);
- ``race``: one row per run of the confirmation race (``confirm.parquet``), ``trial_id`` the sweep trial it re-ran.

``state`` is one of a few values (:data:`STATES`), ``reason`` says why a trial stopped or failed (null when it did
not), ``timestamp`` is a UTC timestamp, and the schema's metadata says the sweep, its metric, mode and budget and the
project's version. :data:`COLUMNS` is the data dictionary (also in the README and in each Parquet field's metadata).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sweep import ranking

STATES = ("finished", "stopped", "failed", "running")  # a sweep trial's; a race run may also be "not counted"
CONFIG_PREFIX = "config."
# Where a row was computed, not what it measured.
WHERE = ("trial", "session", "hostname", "pid", "num_threads", "node_id", "timestamp")

COLUMNS: Mapping[str, str] = {
    "sweep": "the sweep's name (a glob over many sweeps keeps them apart)",
    "trial_id": "the sweep trial's number, 0..num_samples-1 (in the race table: the sweep trial the run re-ran)",
    "epoch": "the epoch this row reports, 1-based (0: a trial that has not reported yet)",
    "strategy": "the sampling strategy (the scientific parameter)",
    "state": "finished (reached the full budget), stopped (early: by ASHA, a time budget, or in the race as no longer "
             "needed), failed, running, or (race) not counted (it ran ahead of a round that dropped its strategy)",
    "reason": "why it stopped or failed (null when it did not): e.g. 'stopped early by the scheduler at epoch 2', "
              "'non-finite loss at epoch 1'",
    "timestamp": "when the epoch was reported (UTC)",
    "node_id": "the Ray node that trained it",
    "hostname": "the machine that trained it",
    "session": "the driver session (0: sweep run, 1..: each sweep resume)",
    "num_threads": "torch threads of the trial",
    "loss": "mean training loss of the epoch",
    "embedding_std": "spread of the validation embeddings (the collapse check)",
    "time_train_s": "seconds of training in the epoch",
    "time_eval_s": "seconds of scoring in the epoch",
    "epochs": "epochs the trial reached",
    "full_budget": "whether it reached the full budget (only those are compared in the ranking)",
    "nodes": "the Ray nodes that trained it, comma-separated",
    "note": "where its epochs come from study.db instead of its checkpoint (a damaged or missing checkpoint)",
    "run": "the race run's number: round r (0-based) of finalist i is r x finalists + i",
    "round": "the race round, 1-based: one fresh seed per round, the same for every strategy",
    "seed": "the run's seed (fixes the data split, the initialisation and every batch)",
    "config.<key>": "the trial's configuration, flattened (a knob a strategy lacks is null)",
    "<metric>": "every score the trial reported (validation; test_<metric> at a race run's last epoch)",
}


def project_version() -> str:
    try:
        return metadata.version("contrastive-sweeps")
    except metadata.PackageNotFoundError:
        return "unknown"


def state_of(record: ranking.TrialRecord) -> tuple[str, str | None]:
    """(state, reason): state one of :data:`STATES`, reason None when there is nothing to explain."""
    state = record.status if record.status in STATES else "running"
    return state, (record.reason or None) if state in ("stopped", "failed") else None


def epoch_rows(sweep: str, records: Sequence[ranking.TrialRecord]) -> list[dict[str, Any]]:
    """One row per trial and reported epoch (a trial with no epoch yet gets one row with epoch 0)."""
    rows = []
    for r in records:
        state, reason = state_of(r)
        common = {"sweep": sweep, "trial_id": r.number, "strategy": r.config.get("strategy"), "state": state,
                  "reason": reason, **_config(r.config)}
        for h in r.history or [{"epoch": 0}]:
            rows.append({**common, "epoch": int(h.get("epoch", 0)), "timestamp": _time(h.get("timestamp")),
                         **{k: _scalar(h.get(k)) for k in WHERE if k not in ("timestamp", "trial")},
                         **_metrics(h)})
    return rows


def trial_rows(sweep: str, records: Sequence[ranking.TrialRecord], metric: str, epochs: int) -> list[dict[str, Any]]:
    """One row per trial: its state, the epochs it reached, its last and best-epoch score, its compute."""
    rows = []
    for r in records:
        state, reason = state_of(r)
        rows.append({
            "sweep": sweep, "trial_id": r.number, "strategy": r.config.get("strategy"), "state": state,
            "reason": reason, "epochs": r.reached, "full_budget": r.reached >= epochs,
            metric: _number(r.last.get(metric)), "best_epoch_" + metric: _best(r.history, metric),
            "time_train_s": sum(float(h.get("time_train_s", 0.0)) for h in r.history),
            "time_eval_s": sum(float(h.get("time_eval_s", 0.0)) for h in r.history),
            "nodes": ",".join(sorted({str(h["node_id"]) for h in r.history if h.get("node_id")})) or None,
            "note": r.note or None, **_config(r.config),
        })
    return rows


def race_rows(sweep: str, plan: Any, saved: Mapping[int, Any]) -> list[dict[str, Any]]:
    """One row per run of the confirmation race that has started: its round, strategy, the sweep trial it re-ran,
    seed, state and every final metric (``plan``: a :class:`sweep.confirm.RacePlan`)."""
    from sweep.confirm import outcome_of

    race = plan.state(plan.outcomes(saved))
    rows = []
    for number in sorted(set(saved) | set(plan.failed)):
        finalist, seed, config = plan.run(number)
        ckpt = saved.get(number)
        last = ckpt.history[-1] if ckpt and ckpt.history else {}
        outcome = outcome_of(last, plan.metric, plan.epochs)
        drop, index = race.dropped.get(finalist.strategy), number // len(plan.finalists)
        ahead = (f"ran ahead of round {drop.after_round}'s result, which dropped {finalist.strategy}"
                 if drop is not None and index >= drop.after_round else
                 f"ran ahead; the race ended after round {race.rounds}" if race.finished and index >= race.rounds
                 else None)
        if number in plan.failed or (outcome is not None and outcome.failed):
            state, reason = "failed", plan.failed.get(number) or outcome.failed
        elif ahead:  # the race judges each round on its own: such a run never counts
            state, reason = ("not counted" if outcome is not None else "stopped"), ahead
        else:
            state, reason = ("finished" if outcome is not None else "running"), None
        rows.append({
            "sweep": sweep, "run": number, "round": number // len(plan.finalists) + 1, "strategy": finalist.strategy,
            "trial_id": finalist.trial, "seed": seed, "state": state, "reason": reason,
            "epoch": int(last.get("epoch", 0)), "timestamp": _time(last.get("timestamp")),
            "node_id": last.get("node_id"), **_metrics(last), **_config(config),
        })
    return rows


FIRST = {
    "epochs": ("sweep", "trial_id", "epoch", "strategy", "state", "reason", "timestamp", "node_id"),
    "trials": ("sweep", "trial_id", "strategy", "state", "reason", "epochs", "full_budget"),
    "race": ("sweep", "run", "round", "strategy", "trial_id", "seed", "state", "reason", "epoch"),
}


def arrow(kind: str, rows: list[dict[str, Any]], about: Mapping[str, Any]) -> pa.Table:
    """The rows as an Arrow table: the key columns first, one type per column, the data dictionary in the fields'
    metadata and ``about`` (sweep, metric, mode, budget) in the schema's."""
    first = FIRST[kind]
    columns = list(first) + sorted({k for row in rows for k in row} - set(first))
    schema = _schema(rows, columns).with_metadata(
        {"table": kind, "project_version": project_version(), **{k: json.dumps(v) for k, v in about.items()}}
    )
    return pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in rows], schema=schema)


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _schema(rows: list[dict[str, Any]], columns: list[str]) -> pa.Schema:
    """One type per column, from its non-null values (a knob that is a float in one trial and absent in another)."""
    fields = []
    for c in columns:
        values = [row[c] for row in rows if row.get(c) is not None]
        if c == "timestamp":
            t = pa.timestamp("ms", tz="UTC")
        elif values and all(isinstance(v, bool) for v in values):
            t = pa.bool_()
        elif values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            t = pa.int64()
        elif values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            t = pa.float64()
        else:
            t = pa.string()
        doc = COLUMNS.get(c) or (COLUMNS["config.<key>"] if c.startswith(CONFIG_PREFIX) else COLUMNS["<metric>"])
        fields.append(pa.field(c, t, metadata={"description": doc}))
    return pa.schema(fields)


def _config(config: Mapping[str, Any]) -> dict[str, Any]:
    return {CONFIG_PREFIX + k: _scalar(v) for k, v in sorted(config.items())}


def _metrics(row: Mapping[str, Any]) -> dict[str, Any]:
    skip = set(WHERE) | {"epoch", "stop_reason"}
    return {k: _scalar(v) for k, v in row.items() if k not in skip}


def _time(t: Any) -> datetime | None:
    return datetime.fromtimestamp(float(t), tz=timezone.utc) if ranking.finite(t) else None


def _scalar(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return json.dumps(v)


def _number(v: Any) -> float | None:
    return float(v) if ranking.finite(v) else None


def _best(history: Sequence[Mapping[str, Any]], metric: str) -> int | None:
    scored = [(h[metric], h["epoch"]) for h in history if _number(h.get(metric)) is not None]
    return max(scored)[1] if scored else None
