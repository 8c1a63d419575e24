"""`sweep report NAME`: the sweep's results as files people and other tools read, from its files only (no Ray).

Written: ``trials.parquet`` (one row per trial and epoch), ``summary.parquet`` (one row per trial),
``best_config.yaml`` (what ``sweep train --config`` takes), ``figures/*.png``, ``report.md`` and a self-contained
``report.html`` (the ranking, the confirmation race when `sweep confirm` ran, the figures embedded), ``confirm.parquet``
(one row per confirmation run) and ``study.db`` (a consistent copy of the Optuna study, for ``optuna-dashboard``).
Works on a finished, running or interrupted sweep. Every file is written atomically.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import optuna
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from sweep import confirm, ledger, plots, ranking
from sweep.check import damage_lines
from sweep.storage import check_writable, is_uri, join, resolve_storage, write_atomic
from trainables.tasks import DEFAULT_TASK, TASKS

REPORT_DIR = "report"
# The columns other tools may rely on, first in every row of trials.parquet.
KEY_COLUMNS = ("trial_id", "epoch", "strategy", "state", "timestamp", "node_id")
CONFIG_PREFIX = "config."
# Where a row was computed, not what it measured: kept out of the metric columns' way, but kept.
_WHERE = ("trial", "session", "hostname", "pid", "num_threads")


def trial_state(record: ranking.TrialRecord, epochs: int) -> str:
    """'finished', 'stopped by ASHA at epoch k', 'failed: <reason>', 'cut: <reason>' or 'running'."""
    if record.status == "finished":
        return "finished"
    if record.status == "failed":
        return f"failed: {record.reason or 'unknown'}"
    if record.status == "stopped":
        if "scheduler" in record.reason:
            return f"stopped by ASHA at epoch {record.reached}"
        return f"cut: {record.reason}" if record.reason else f"stopped at epoch {record.reached}"
    return "running"


def trial_rows(records: Sequence[ranking.TrialRecord], epochs: int) -> list[dict[str, Any]]:
    """One row per trial and reported epoch (a trial with no epoch yet gets one row with epoch 0)."""
    rows = []
    for r in records:
        common = {
            "trial_id": r.number,
            "strategy": r.config.get("strategy"),
            "state": trial_state(r, epochs),
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
                    "num_threads": h.get("num_threads"),
                    **metrics,
                }
            )
    return rows


def summary_rows(records: Sequence[ranking.TrialRecord], metric: str, epochs: int) -> list[dict[str, Any]]:
    rows = []
    for r in records:
        last = r.last
        rows.append(
            {
                "trial_id": r.number,
                "strategy": r.config.get("strategy"),
                "state": trial_state(r, epochs),
                "epochs": r.reached,
                "full_budget": r.reached >= epochs,
                metric: _number(last.get(metric)),
                "best_epoch_" + metric: _best(r.history, metric),
                "time_train_s": sum(float(h.get("time_train_s", 0.0)) for h in r.history),
                "time_eval_s": sum(float(h.get("time_eval_s", 0.0)) for h in r.history),
                "nodes": ",".join(sorted({str(h["node_id"]) for h in r.history if h.get("node_id")})),
                **{CONFIG_PREFIX + k: _scalar(v) for k, v in sorted(r.config.items())},
            }
        )
    return rows


def best_config(records: Sequence[ranking.TrialRecord], metric: str, mode: str, epochs: int):
    """The best trial by its last validation score, full-budget trials first (as the ranking); None if none scored."""
    rows = ranking.rank(records, metric, mode, epochs)
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
    """A consistent SQLite copy of the study even while the driver writes it, for ``optuna-dashboard``: SQLite's
    backup API from a local study.db, Optuna's copy from a journal in object storage; then written atomically."""
    with tempfile.TemporaryDirectory(prefix="sweep-study-") as tmp:
        copy = os.path.join(tmp, ledger.STUDY_FILE)
        if is_uri(exp):
            storage = ledger.study_storage(exp)
            name = storage.get_all_studies()[0].study_name
            optuna.copy_study(from_study_name=name, from_storage=storage, to_storage=f"sqlite:///{copy}")
        else:
            src = sqlite3.connect(f"file:{join(exp, ledger.STUDY_FILE)}?mode=ro", uri=True, timeout=30)
            dst = sqlite3.connect(copy)
            with dst:
                src.backup(dst)
            src.close()
            dst.close()
        with open(copy, "rb") as f:
            write_atomic(target, f.read())


def confirm_rows(exp: str) -> list[dict[str, Any]]:
    """One row per run of the confirmation race: its round, strategy, the sweep trial it re-ran, seed, state and
    every final metric."""
    plan = confirm.load(exp)
    if plan is None:
        return []
    saved = ledger.newest_checkpoints(join(exp, confirm.CONFIRM_DIR))
    rows = []
    for number in sorted(set(saved) | set(plan.failed)):
        finalist, seed, config = plan.run(number)
        ckpt = saved.get(number)
        last = ckpt.history[-1] if ckpt and ckpt.history else {}
        outcome = confirm.outcome_of(last, plan.metric, plan.epochs)
        if number in plan.failed:
            state = f"failed: {plan.failed[number]}"
        elif outcome is not None and outcome.failed:
            state = f"failed: {outcome.failed}"
        else:
            state = "finished" if outcome is not None else "unfinished"
        metrics = {k: _scalar(v) for k, v in last.items() if k not in KEY_COLUMNS and k not in _WHERE}
        rows.append(
            {
                "run": number,
                "round": number // len(plan.finalists) + 1,
                "strategy": finalist.strategy,
                "sweep_trial": finalist.trial,
                "seed": seed,
                "state": state,
                "epoch": int(last.get("epoch", 0)),
                "timestamp": last.get("timestamp"),
                "node_id": last.get("node_id"),
                **metrics,
                **{CONFIG_PREFIX + k: _scalar(v) for k, v in sorted(config.items())},
            }
        )
    return rows


def report(name: str, storage: str, out_dir: str | None = None, out: Any = sys.stdout) -> int:
    exp, plan, study = ledger.load_sweep(name, storage)
    metric, mode, epochs = plan["metric"], plan["mode"], plan["epochs"]
    saved, damaged = ledger.scan_checkpoints(exp)
    records = ranking.records_from(study, saved, metric)
    target = resolve_storage(out_dir) if out_dir else join(exp, REPORT_DIR)
    check_writable(target, "--out")
    written = []

    def write(rel: str, data: bytes | str) -> None:
        write_atomic(join(target, rel), data)
        written.append(rel)

    write("trials.parquet", parquet_bytes(trial_rows(records, epochs), KEY_COLUMNS))
    write(
        "summary.parquet",
        parquet_bytes(summary_rows(records, metric, epochs), ("trial_id", "strategy", "state", "epochs")),
    )
    found = damage_lines(damaged, records)
    for line in found:
        print(f"warning: {line}", file=out)
    best = best_config(records, metric, mode, epochs)
    if best is not None:
        write("best_config.yaml", best_config_yaml(name, best, plan))
    else:
        print("note: no trial has a score yet, so there is no best_config.yaml", file=out)
    loaded = confirm.load_answer(exp)
    confirmed = loaded[1] if loaded is not None else None
    if confirmed is not None:
        write("confirm.parquet", parquet_bytes(confirm_rows(exp), ("run", "round", "strategy", "sweep_trial", "seed",
                                                                   "state")))
    rungs = ranking.asha_rungs(epochs) if plan.get("scheduler") in ("asha", "pooled_asha") else []
    figures = plots.report_figures(records, metric, mode, epochs, rungs)
    task = TASKS.get(plan.get("task", DEFAULT_TASK))
    for paper in task.figures if task else ():  # the seed paper's own figure, e.g. odd-one-out against p_change_room
        extra = plots.levels_figure(records, paper.scores, paper.knob, epochs)
        figures += [extra] if extra is not None else []
    if confirmed is not None and confirmed.state.rounds:
        figures.insert(0, plots.confirm_figure(confirmed))
    for fig in figures:
        write(f"figures/{fig.name}.png", fig.png)
    page = Page(name, plan, records, confirmed, figures, plots.param_importance(records, metric, mode), rungs,
                found)
    write("report.md", page.markdown())
    write("report.html", page.html())
    copy_study(exp, join(target, ledger.STUDY_FILE))
    written.append(ledger.STUDY_FILE)
    print(f"report of {name}: {len(records)} trials -> {target}", file=out)
    for f in written:
        print(f"  {f}", file=out)
    return 0


def best_config_yaml(name: str, best: ranking.TrialRecord, plan: dict[str, Any]) -> str:
    metric, epochs = plan["metric"], plan["epochs"]
    config = dict(best.config)
    # The trial ran with the threads of its CPU share; another count changes float sums and so the result.
    cpus = plan.get("settings", {}).get("cpus_per_trial", 1)
    config.setdefault("num_threads", best.last.get("num_threads") or max(1, int(cpus or 1)))
    header = (
        f"# best configuration of sweep {name}: trial {best.number} ({best.config.get('strategy')}), validation "
        f"{metric} {best.last[metric]:.4f} at epoch {best.reached}/{epochs}\n"
        "# retrain: sweep train --config best_config.yaml\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False)


class Page:
    """The report's content once, rendered as Markdown (figures linked) and as self-contained HTML (embedded)."""

    def __init__(self, name: str, plan: dict[str, Any], records: Sequence[ranking.TrialRecord],
                 confirmed: Any, figures: Sequence[Any], importance: Any, rungs: Sequence[int],
                 damage: Sequence[str] = ()):
        self.name, self.plan, self.records, self.confirmed = name, plan, records, confirmed
        self.damage = list(damage)
        self.figures, self.importance = figures, importance
        metric, epochs = plan["metric"], plan["epochs"]
        self.rows = ranking.rank(records, metric, plan["mode"], epochs)
        spent, total = sum(r.reached for r in records), plan["num_samples"] * epochs
        counts = {s: sum(r.status == s for r in records) for s in ("finished", "stopped", "failed", "running")}
        where = " within each strategy" if plan["scheduler"] == "asha" else " over all trials"
        schedule = (f"ASHA rungs at epochs {', '.join(map(str, rungs))}{where}" if rungs
                    else f"scheduler {plan['scheduler']}")
        self.summary = (
            f"Space {plan['space']}: {len(records)} of {plan['num_samples']} trials ({counts['finished']} at full "
            f"budget, {counts['stopped']} stopped early, {counts['failed']} failed, {counts['running']} unfinished), "
            f"{spent} of {total} trial-epochs ({spent / max(1, total):.0%} of a grid's), up to {epochs} epochs per "
            f"trial, {schedule}. Ranked by validation {metric} ({plan['mode']})."
        )
        self.caveat = (
            "A strategy's score is its best trial's last validation score, full-budget trials first; rows not at "
            "full budget compare shorter runs. One seed and the validation split used for selection: the top "
            "scores are biased up" + ("; the confirmation below races them on fresh seeds." if confirmed else
                                      "; `sweep confirm` races them on fresh seeds and reports the test split.")
        )
        self.problems = [r for r in records if r.status == "failed" or (r.status == "stopped" and r.reason
                                                                          and "scheduler" not in r.reason)]

    def _sections(self) -> list[tuple[str, list[tuple[str, Any]]]]:
        """(heading, blocks); a block is ("p", text), ("table", (header, cells, align)) or ("figure", fig)."""
        metric, epochs = self.plan["metric"], self.plan["epochs"]
        out: list[tuple[str, list[tuple[str, Any]]]] = []
        header, cells = ranking.table(self.rows, metric, epochs)
        out.append((f"Ranking by validation {metric}", [("p", self.summary), ("table", (header, cells,
                    ranking.RANKING_ALIGN)), ("p", self.caveat)]))
        task = TASKS.get(self.plan.get("task", DEFAULT_TASK))
        columns = task.columns if task else ()
        if len(columns) > 1:
            h, c = ranking.paper_table(self.rows, columns)
            text = ("Every validation score of each strategy's best trial (the one ranked above), at the epoch it "
                    "reached, in the shape of the seed paper's table.")
            table = ("table", (h, c, "l" + "r" * (len(h) - 1)))
            out.append(("Scores of each strategy's best trial", [("p", text), table]))
        if self.confirmed is not None:
            c = self.confirmed
            blocks: list[tuple[str, Any]] = [("p", confirm.headline(c))]
            h, cc = confirm.table(c)
            blocks += [("table", (h, cc, confirm.CONFIRM_ALIGN)), ("p", c.verdict)]
            blocks += [("figure", f) for f in self.figures if f.name == "confirm"]
            out.append(("Confirmation: a race on fresh seeds", blocks))
        figs = [("figure", f) for f in self.figures if f.name != "confirm"]
        if figs:
            out.append(("Figures", figs))
        if self.importance is not None:
            imp = self.importance
            cells = [[k + (" *" if k in imp.conditional else ""), f"{v:.3f}"] for k, v in imp.importances.items()]
            text = (
                f"fANOVA (Optuna) over {imp.trials} trials, on the validation {metric} at epoch {imp.epoch} (the "
                "last epoch every scored trial reached; failed trials left out). A knob marked * exists only under "
                "some strategies and is set to an 'inactive' value elsewhere, so its importance includes the choice "
                "of strategy that enables it. With few trials per strategy these numbers are rough."
            )
            out.append(("Hyperparameter importance", [("p", text), ("table", (["parameter", "importance"], cells,
                                                                              "lr"))]))
        if self.damage:
            text = ("Files of this sweep that could not be used; where study.db has a trial's scores, the ranking "
                    "above uses them (`sweep check` lists what a resume would redo).")
            out.append(("Damaged or missing files", [("p", text), ("table", (["what"], [[d] for d in self.damage],
                                                                             "l"))]))
        if self.problems:
            cells = [[str(r.number), str(r.config.get("strategy")), trial_state(r, epochs),
                      ranking.describe_config(r.config, r.searched)] for r in self.problems]
            out.append(("Failed and cut trials", [("table", (["trial", "strategy", "state", "configuration"], cells,
                                                              "r"))]))
        files = (
            "trials.parquet (one row per trial and epoch), summary.parquet (one row per trial), best_config.yaml "
            "(`sweep train --config best_config.yaml` retrains the best trial), figures/, study.db (`optuna-dashboard "
            "sqlite:///study.db`)"
            + (", confirm.parquet (one row per run of the confirmation race)" if self.confirmed else "")
        )
        out.append(("Files", [("p", files)]))
        return out

    def markdown(self) -> str:
        parts = [f"# Sweep {self.name}\n"]
        for heading, blocks in self._sections():
            parts.append(f"## {heading}\n")
            for kind, value in blocks:
                if kind == "p":
                    parts.append(value + "\n")
                elif kind == "table":
                    parts.append(ranking.markdown_table(*value) + "\n")
                else:
                    parts.append(f"![{value.title}](figures/{value.name}.png)\n\n{value.caption}\n")
        return "\n".join(parts)

    def html(self) -> str:
        """One file, no network: figures as data: URIs, styles inline, everything from configs or names escaped."""
        e = html.escape
        body = [f"<h1>Sweep {e(self.name)}</h1>",
                f"<p class=\"meta\">generated {e(time.strftime('%Y-%m-%d %H:%M:%S'))}</p>"]
        for heading, blocks in self._sections():
            body.append(f"<h2>{e(heading)}</h2>")
            for kind, value in blocks:
                if kind == "p":
                    body.append(f"<p>{e(value)}</p>")
                elif kind == "table":
                    header, cells, align = value
                    th = "".join(f"<th>{e(h)}</th>" for h in header)
                    tds = ['<td class="num">' if align[i : i + 1] == "r" else "<td>" for i in range(len(header))]
                    trs = "".join(
                        "<tr>" + "".join(f"{tds[i]}{e(c)}</td>" for i, c in enumerate(row)) + "</tr>" for row in cells
                    )
                    body.append(f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>")
                else:
                    data = base64.b64encode(value.png).decode("ascii")
                    body.append(
                        f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{e(value.title)}\">"
                        f"<figcaption><b>{e(value.title)}.</b> {e(value.caption)}</figcaption></figure>"
                    )
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Sweep {e(self.name)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body)
            + "\n</body></html>\n"
        )


_CSS = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
    "color:#222;line-height:1.45}h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid "
    "#ddd}table{border-collapse:collapse;font-size:.85em;margin:.8em 0}th,td{border:1px solid #ccc;padding:.25em "
    ".5em;text-align:left;vertical-align:top}th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:"
    "tabular-nums}figure{margin:1.2em 0}img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:"
    ".9em;color:#444}.meta{color:#666;font-size:.9em}"
)
