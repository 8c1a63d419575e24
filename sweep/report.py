"""`sweep report NAME`: the sweep's results as files other tools read, from its files only (no Ray).

Written so far: ``trials.parquet`` (one row per trial and epoch), ``summary.parquet`` (one row per trial),
``best_config.yaml`` (what ``sweep train --config`` takes), ``report.md`` (the ranking) and ``study.db`` (a consistent
copy of the Optuna study, for ``optuna-dashboard``). Works on a finished, running or interrupted sweep.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from sweep import ledger, ranking
from sweep.storage import join, resolve_storage, write_atomic

REPORT_DIR = "report"
# The columns other tools may rely on, first in every row of trials.parquet.
KEY_COLUMNS = ("trial_id", "epoch", "strategy", "state", "timestamp", "node_id")
CONFIG_PREFIX = "config."
# Where a row was computed, not what it measured: kept out of the metric columns' way, but kept.
_WHERE = ("trial", "session", "hostname", "pid")


def trial_state(record: ranking.TrialRecord, max_epochs: int) -> str:
    """'finished', 'stopped by ASHA at epoch k', 'failed: <reason>', 'cut: <reason>' or 'running'."""
    if record.status == "finished":
        return "finished"
    if record.status == "failed":
        return f"failed: {record.reason or 'unknown'}"
    if record.status == "stopped":
        if "scheduler" in record.reason:
            return f"stopped by ASHA at epoch {record.epochs}"
        return f"cut: {record.reason}" if record.reason else f"stopped at epoch {record.epochs}"
    return "running"


def trial_rows(records: Sequence[ranking.TrialRecord], max_epochs: int) -> list[dict[str, Any]]:
    """One row per trial and reported epoch (a trial with no epoch yet gets one row with epoch 0)."""
    rows = []
    for r in records:
        common = {
            "trial_id": r.number,
            "strategy": r.config.get("strategy"),
            "state": trial_state(r, max_epochs),
            **{CONFIG_PREFIX + k: _scalar(v) for k, v in sorted(r.config.items())},
        }
        for h in r.history or [{"epoch": 0}]:
            metrics = {k: _scalar(v) for k, v in h.items() if k not in KEY_COLUMNS and k not in _WHERE}
            rows.append(
                {
                    **common,
                    "epoch": int(h.get("epoch", 0)),
                    "timestamp": h.get("timestamp"),
                    "node_id": h.get("node_id"),
                    "hostname": h.get("hostname"),
                    "session": h.get("session"),
                    **metrics,
                }
            )
    return rows


def summary_rows(records: Sequence[ranking.TrialRecord], metric: str, max_epochs: int) -> list[dict[str, Any]]:
    rows = []
    for r in records:
        last = r.last
        rows.append(
            {
                "trial_id": r.number,
                "strategy": r.config.get("strategy"),
                "state": trial_state(r, max_epochs),
                "epochs": r.epochs,
                "full_budget": r.epochs >= max_epochs,
                metric: _number(last.get(metric)),
                "best_epoch_" + metric: _best(r.history, metric),
                "time_train_s": sum(float(h.get("time_train_s", 0.0)) for h in r.history),
                "time_eval_s": sum(float(h.get("time_eval_s", 0.0)) for h in r.history),
                "nodes": ",".join(sorted({str(h["node_id"]) for h in r.history if h.get("node_id")})),
                **{CONFIG_PREFIX + k: _scalar(v) for k, v in sorted(r.config.items())},
            }
        )
    return rows


def best_config(records: Sequence[ranking.TrialRecord], metric: str, mode: str, max_epochs: int):
    """The best trial by its last validation score, full-budget trials first (as the ranking); None if none scored."""
    rows = ranking.rank(records, metric, mode, max_epochs)
    return rows[0].best if rows and rows[0].best is not None else None


def parquet_bytes(rows: list[dict[str, Any]], first: Sequence[str]) -> bytes:
    columns = list(first) + sorted({k for row in rows for k in row} - set(first))
    table = pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in rows], schema=_schema(rows, columns))
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _schema(rows: list[dict[str, Any]], columns: list[str]) -> pa.Schema:
    """One type per column, from its non-null values (a knob that is a float in one trial and absent in another)."""
    fields = []
    for c in columns:
        values = [row[c] for row in rows if row.get(c) is not None]
        if all(isinstance(v, bool) for v in values) and values:
            t = pa.bool_()
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values) and values:
            t = pa.int64()
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values) and values:
            t = pa.float64()
        else:
            t = pa.string()
        fields.append(pa.field(c, t))
    return pa.schema(fields)


def _scalar(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return json.dumps(v)


def _number(v: Any) -> float | None:
    return float(v) if ranking.finite(v) else None


def _best(history: Sequence[dict[str, Any]], metric: str) -> int | None:
    scored = [(h[metric], h["epoch"]) for h in history if _number(h.get(metric)) is not None]
    return max(scored)[1] if scored else None


def copy_study(exp: str, target: str) -> None:
    """A consistent copy of study.db even while the driver writes it (SQLite's backup API), renamed into place."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".study.", suffix=".tmp")
    os.close(fd)
    try:
        src = sqlite3.connect(f"file:{join(exp, ledger.STUDY_FILE)}?mode=ro", uri=True, timeout=30)
        dst = sqlite3.connect(tmp)
        with dst:
            src.backup(dst)
        src.close()
        dst.close()
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def report(name: str, storage: str, out_dir: str | None = None, out: Any = sys.stdout) -> int:
    exp, plan, study = ledger.load_sweep(name, storage)
    metric, mode, epochs = plan["metric"], plan["mode"], plan["epochs"]
    records = ranking.records_from(study, ledger.newest_checkpoints(exp))
    target = resolve_storage(out_dir) if out_dir else join(exp, REPORT_DIR)
    if os.path.exists(target) and not os.path.isdir(target):
        raise ValueError(f"--out {target} is a file; give a directory")

    write_atomic(join(target, "trials.parquet"), parquet_bytes(trial_rows(records, epochs), KEY_COLUMNS))
    write_atomic(
        join(target, "summary.parquet"),
        parquet_bytes(summary_rows(records, metric, epochs), ("trial_id", "strategy", "state", "epochs")),
    )
    best = best_config(records, metric, mode, epochs)
    if best is not None:
        score = best.last[metric]
        config = dict(best.config)
        # The trial ran with the threads of its CPU share; another count changes float sums and so the result.
        cpus = plan.get("settings", {}).get("cpus_per_trial", 1)
        config.setdefault("num_threads", max(1, int(cpus or 1)))
        header = (
            f"# best configuration of sweep {name}: trial {best.number} ({best.config.get('strategy')}), validation "
            f"{metric} {score:.4f} at epoch {best.epochs}/{epochs}\n# retrain: sweep train --config best_config.yaml\n"
        )
        write_atomic(join(target, "best_config.yaml"), header + yaml.safe_dump(config, sort_keys=False))
    rows = ranking.rank(records, metric, mode, epochs)
    spent = sum(r.epochs for r in records)
    table = ranking.format_table(rows, metric, epochs)
    md = (
        f"# Sweep {name}\n\nspace {plan['space']}, {len(records)} of {plan['num_samples']} trials, {spent} of "
        f"{plan['num_samples'] * epochs} trial-epochs\n\n## Ranking by validation {metric}\n\n{table}\n"
    )
    write_atomic(join(target, "report.md"), md)
    copy_study(exp, join(target, ledger.STUDY_FILE))
    print(f"report of {name}: {len(records)} trials -> {target}", file=out)
    for f in ("trials.parquet", "summary.parquet", "best_config.yaml", "report.md", ledger.STUDY_FILE):
        if os.path.exists(join(target, f)):
            print(f"  {f}", file=out)
    return 0
