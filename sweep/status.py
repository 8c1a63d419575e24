"""`sweep status NAME`: where a sweep stands, read from its files only (no Ray), while it runs or after a kill."""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any

from sweep import confirm, ledger, ranking
from sweep.check import damage_lines
from sweep.storage import command, join


def status(name: str, storage: str, out: Any = sys.stdout) -> int:
    exp, saved_plan, study = ledger.load_sweep(name, storage)
    driver = ledger.read_driver(exp)
    saved, damaged = ledger.scan_checkpoints(exp)
    records = ranking.records_from(study, saved, saved_plan["metric"])
    print(format_status(name, saved_plan, driver, records, storage), file=out)
    found = damage_lines(damaged, records)
    if found:
        print("\ndamaged or missing (scores from study.db where it has them; `sweep check` says more):", file=out)
        print("\n".join(f"  {line}" for line in found), file=out)
    loaded = confirm.load_answer(exp)
    if loaded is not None:
        plan, answer = loaded
        cdriver = ledger.read_driver(join(exp, confirm.CONFIRM_DIR))
        state = "finished" if answer.state.finished else describe_driver(cdriver, time.time())[0]
        print(f"\nconfirmation (a race of {len(plan.finalists)} finalists): {state}, {answer.state.rounds} of at most "
              f"{plan.rules.max_seeds} rounds, {len(answer.state.alive)} strategies left, {answer.runs_done} runs done",
              file=out)
        if not answer.state.finished and not ledger.is_live(cdriver):
            print(f"continue with: {command('confirm', name, storage)}", file=out)
        elif answer.state.rounds:
            print(answer.verdict, file=out)
    return 0


def describe_driver(driver: dict[str, Any], now: float) -> tuple[str, bool]:
    """'running (...)' / 'interrupted (...)' / 'finished', and whether a `sweep resume` applies."""
    sessions = driver.get("sessions", [])
    if not sessions:
        return "not started", True
    last = sessions[-1]
    where = f"driver pid {last['pid']} on {last['host']}"
    n = f"{len(sessions)} session{'s' if len(sessions) != 1 else ''}"
    if ledger.is_live(driver, now):
        return f"running ({where}, heartbeat {now - last['heartbeat']:.0f} s ago, {n})", False
    if driver.get("state") == "finished":
        return f"finished ({n})", False
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last.get("heartbeat", last["started"])))
    return f"interrupted ({where} gone since {since}, {n})", True


def format_status(
    name: str,
    plan: dict[str, Any],
    driver: dict[str, Any],
    records: list[ranking.TrialRecord],
    storage: str,
    now: float | None = None,
) -> str:
    now = time.time() if now is None else now
    n, epochs, metric = plan["num_samples"], plan["epochs"], plan["metric"]
    state, resumable = describe_driver(driver, now)
    if resumable and len([r for r in records if r.finished]) >= n:
        state, resumable = "finished", False
    live = state.startswith("running")
    counts = Counter(r.status for r in records)
    running = "running" if live else "unfinished (`sweep resume` continues them)"
    spent = sum(r.reached for r in records)
    lines = [
        f"sweep {name}: {state}",
        f"space {plan['space']}, {n} trials of at most {epochs} epochs, scheduler {plan['scheduler']}",
        f"trials: {counts['finished']} finished, {counts['stopped']} stopped early, {counts['failed']} failed"
        + (f", {counts['running']} {running}" if counts["running"] else "")
        + (f", {n - len(records)} not started" if n > len(records) else ""),
        f"epochs: {spent} of {n * epochs} ({spent / max(1, n * epochs):.0%}) spent",
    ]
    if records:
        rows = ranking.rank(records, metric, plan["mode"], epochs)
        lines += ["", f"best validation {metric} so far, per strategy:", ranking.format_table(rows, metric, epochs)]
    stopped = [r for r in records if r.status in ("failed", "stopped") and r.reason and "scheduler" not in r.reason]
    if stopped:
        lines += ["", "failed or cut trials:"]
        lines += [f"  #{r.number} {r.config.get('strategy', '?')}: {r.reason}" for r in stopped]
    if resumable:
        lines += ["", f"continue with: {command('resume', name, storage)}"]
    return "\n".join(lines)


def watch(name: str, storage: str, interval: float, as_json: bool = False, out: Any = sys.stdout) -> int:
    """`sweep status --watch`: the status again every ``interval`` seconds (the screen redrawn on a terminal, one
    JSON object per line with ``--json``) until no driver runs the sweep or its race; Ctrl-C stops watching."""
    import json

    import sweep

    tty = out.isatty() if hasattr(out, "isatty") else False
    while True:
        exp = ledger.load_sweep(name, storage)[0]
        if as_json:
            print(json.dumps(sweep.load(name, storage).status(), default=str), file=out, flush=True)
        else:
            if tty:
                print("\033[H\033[2J", end="", file=out)  # home, clear: redraw in place
            status(name, storage, out=out)
            print(f"\n(every {interval:g} s; Ctrl-C stops watching, not the sweep)", file=out, flush=True)
        live = ledger.is_live(ledger.read_driver(exp)) or ledger.is_live(
            ledger.read_driver(join(exp, confirm.CONFIRM_DIR), strict=False))
        if not live:
            return 0
        time.sleep(interval)
