"""`sweep report NAME`: the sweep's results as files people and other tools read, from its files only (no Ray).

Written: ``epochs.parquet`` (one row per trial and epoch), ``trials.parquet`` (one row per trial),
``best_config.yaml`` (what ``sweep train --config`` takes), ``figures/*.png``, ``report.md`` and a self-contained
``report.html`` (the ranking, the confirmation race when `sweep confirm` ran, the figures embedded), ``confirm.parquet``
(one row per run of the race) and ``study.db`` (a consistent copy of the Optuna study, for ``optuna-dashboard``).
The Parquet tables are :mod:`sweep.tables`'s, the same the Python API returns.
Works on a finished, running or interrupted sweep. Every file is written atomically.
"""

from __future__ import annotations

import base64
import html
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import optuna
import yaml
from markdown_it import MarkdownIt

from sweep import confirm, ledger, plots, ranking, tables
from sweep.check import damage_lines
from sweep.storage import check_writable, is_uri, join, resolve_storage, write_atomic
from trainables.tasks import DEFAULT_TASK, TASKS

REPORT_DIR = "report"


def best_config(records: Sequence[ranking.TrialRecord], metric: str, mode: str, epochs: int):
    """The best trial by its last validation score, full-budget trials first (as the ranking); None if none scored."""
    rows = ranking.rank(records, metric, mode, epochs)
    return rows[0].best if rows and rows[0].best is not None else None


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

    about = {"sweep": name, "metric": metric, "mode": mode, "epochs": epochs}
    write("epochs.parquet", tables.parquet_bytes(tables.arrow("epochs", tables.epoch_rows(name, records), about)))
    write("trials.parquet", tables.parquet_bytes(tables.arrow("trials", tables.trial_rows(name, records, metric,
                                                                                          epochs), about)))
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
        race = tables.race_rows(name, loaded[0], ledger.newest_checkpoints(join(exp, confirm.CONFIRM_DIR)))
        write("confirm.parquet", tables.parquet_bytes(tables.arrow("race", race, about)))
    rungs = ranking.rungs_of(str(plan.get("scheduler")), epochs)
    figures = plots.report_figures(records, metric, mode, epochs, rungs)
    task = TASKS.get(plan.get("task", DEFAULT_TASK))
    for paper in task.figures if task else ():  # the seed paper's own figure, e.g. odd-one-out against p_change_room
        extra = plots.levels_figure(records, paper.scores, paper.knob, epochs)
        figures += [extra] if extra is not None else []
    if confirmed is not None and confirmed.state.rounds:
        figures.insert(0, plots.confirm_figure(confirmed))
    figures += plots.optuna_figures(study, metric)
    for fig in figures:
        write(f"figures/{fig.name}.png", fig.png)
    page = Page(name, plan, records, confirmed, figures, plots.param_importance(records, metric, mode), rungs,
                found, optuna_importance=plots.optuna_importance(study), metadata=run_metadata(exp, plan, records))
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
                 damage: Sequence[str] = (), optuna_importance: Any = None,
                 metadata: Sequence[tuple[str, str]] = ()):
        self.name, self.plan, self.records, self.confirmed = name, plan, records, confirmed
        self.damage, self.optuna_importance, self.metadata = list(damage), optuna_importance, list(metadata)
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
        figs = [("figure", f) for f in self.figures if f.name != "confirm" and not f.name.startswith("optuna_")]
        if figs:
            out.append(("Figures", figs))
        standard = [("figure", f) for f in self.figures if f.name.startswith("optuna_")]
        if standard:
            text = ("Optuna's standard plots of the study (`optuna.visualization.matplotlib`), as optuna-dashboard "
                    "draws them: they see the study as Optuna does (a trial ASHA stopped is pruned, its intermediate "
                    "values kept).")
            out.append(("Optuna's plots", [("p", text), *standard]))
        out.append(("Hyperparameter importance", self._importance_blocks(metric)))
        if self.damage:
            text = ("Files of this sweep that could not be used; where study.db has a trial's scores, the ranking "
                    "above uses them (`sweep check` lists what a resume would redo).")
            out.append(("Damaged or missing files", [("p", text), ("table", (["what"], [[d] for d in self.damage],
                                                                             "l"))]))
        if self.problems:
            cells = [[str(r.number), str(r.config.get("strategy")), ": ".join(filter(None, tables.state_of(r))),
                      ranking.describe_config(r.config, r.searched)] for r in self.problems]
            out.append(("Failed and cut trials", [("table", (["trial", "strategy", "state", "configuration"], cells,
                                                              "r"))]))
        every = [[str(r.number), str(r.config.get("strategy")), tables.state_of(r)[0], str(r.reached),
                  f"{r.last[metric]:.4f}" if ranking.finite(r.last.get(metric)) else "n/a",
                  tables.state_of(r)[1] or r.note or "", ranking.describe_config(r.config, r.searched)]
                 for r in sorted(self.records, key=lambda r: r.number)]
        if every:
            header = ["trial", "strategy", "state", "epochs", metric, "why", "configuration"]
            out.append(("All trials", [("table", (header, every, "rllrrll"))]))
        if self.metadata:
            out.append(("How this sweep ran", [("table", (["what", "value"], [list(row) for row in self.metadata],
                                                          "ll"))]))
        files = (
            "epochs.parquet (one row per trial and epoch), trials.parquet (one row per trial), best_config.yaml "
            "(`sweep train --config best_config.yaml` retrains the best trial), figures/, study.db (`optuna-dashboard "
            "sqlite:///study.db`)"
            + (", confirm.parquet (one row per run of the confirmation race)" if self.confirmed else "")
        )
        out.append(("Files", [("p", files)]))
        return out

    def _importance_blocks(self, metric: str) -> list[tuple[str, Any]]:
        """Ours (every scored trial, at a shared epoch) beside Optuna's own (what optuna-dashboard shows), with why
        they differ; or why there is none."""
        imp, theirs = self.importance, self.optuna_importance or {}
        if imp is None or imp.omitted:
            why = imp.omitted if imp is not None else "not computed: too few scored trials, or nothing varied"
            return [("p", why[0].upper() + why[1:] + ".")]
        names = list(imp.importances) + [k for k in theirs if k not in imp.importances]
        cells = [[k + (" *" if k in imp.conditional else ""),
                  f"{imp.importances[k]:.3f}" if k in imp.importances else "",
                  f"{theirs[k]:.3f}" if k in theirs else ""] for k in names]
        text = (
            f"fANOVA (Optuna's evaluator, seed 0) over {imp.trials} trials, on the validation {metric} at epoch "
            f"{imp.epoch} (the last epoch every scored trial reached; failed trials left out). A knob marked * exists "
            "only under some strategies and is set to an 'inactive' value elsewhere, so its importance includes the "
            "choice of strategy that enables it. The last column is what `optuna.importance.get_param_importances` "
            "(and optuna-dashboard) computes from study.db: only the trials that finished at the full budget, with "
            "their final scores, and only the parameters all of them have; under successive halving those are the "
            "survivors, whose strategy explains little by construction, so the two can disagree."
        )
        return [("p", text), ("table", (["parameter", "all scored trials, shared epoch", "Optuna on study.db"],
                                        cells, "lrr"))]

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
                if kind == "p":  # Markdown (`code`, *emphasis*) rendered, raw HTML escaped
                    body.append(f"<p>{_MARKDOWN.renderInline(value)}</p>")
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


_MARKDOWN = MarkdownIt("commonmark", {"html": False})  # text from configs and names cannot inject markup


def run_metadata(exp: str, plan: dict[str, Any], records: Sequence[ranking.TrialRecord]) -> list[tuple[str, str]]:
    """How the sweep ran, for the report: its command, seeds, the versions and commit it ran with, where, how long,
    and the compute it spent (what `sweep run` recorded in sweep.json, and what its sessions and trials say)."""
    meta = plan.get("meta") or {}
    settings = plan.get("settings") or {}
    sessions = ledger.read_driver(exp, strict=False).get("sessions", [])
    wall = sum(max(0.0, s.get("heartbeat", s["started"]) - s["started"]) for s in sessions)
    train = sum(float(h.get("time_train_s", 0.0)) for r in records for h in r.history)
    evals = sum(float(h.get("time_eval_s", 0.0)) for r in records for h in r.history)
    rows = [
        ("command", meta.get("command", "(not recorded)")),
        ("seed", f"{settings.get('seed')} (search and trials); the race's seeds follow it"),
        ("project", f"contrastive-sweeps {meta.get('version', tables.project_version())}"
                    + (f", commit {meta['commit']}" if meta.get("commit") else "")),
        ("versions", ", ".join(f"{k} {v}" for k, v in (meta.get("versions") or {}).items()) or "(not recorded)"),
        ("machine", meta.get("machine", "(not recorded)")),
        ("started", meta.get("created", "(not recorded)")),
        ("driver sessions", f"{len(sessions)}, {wall / 60:.1f} min in all"),
        ("compute", f"{sum(r.reached for r in records)} trial-epochs, {train / 60:.1f} min training and "
                    f"{evals / 60:.1f} min scoring (trial seconds, summed over trials)"),
    ]
    return [(k, str(v)) for k, v in rows]


_CSS = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
    "color:#222;line-height:1.45}h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid "
    "#ddd}table{border-collapse:collapse;font-size:.85em;margin:.8em 0}th,td{border:1px solid #ccc;padding:.25em "
    ".5em;text-align:left;vertical-align:top}th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:"
    "tabular-nums}figure{margin:1.2em 0}img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:"
    ".9em;color:#444}.meta{color:#666;font-size:.9em}"
)
