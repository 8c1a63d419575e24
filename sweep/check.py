"""`sweep check NAME`: are a sweep's files intact, and what would `sweep resume` redo? Read-only, like status.

Every file a command reads is checked when it is read (sweep.json, driver.json, study.db: :mod:`sweep.ledger`;
checkpoints: :func:`sweep.ledger.scan_checkpoints`); this command reads them all and says, one line each, what is
damaged or missing, which trials take their scores from study.db instead of their checkpoints, and what a resume
would run again. Exit status 0 when nothing is damaged, 1 when something is (2, as always, for a file so damaged
that the sweep cannot be read at all, named in one line).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from optuna.trial import TrialState

from sweep import claim, confirm, ledger, ranking
from sweep.storage import command, join
from trainables.errors import UserError


def damage_lines(damaged: Sequence[ledger.Damaged], records: Sequence[ranking.TrialRecord]) -> list[str]:
    """What is damaged or gone, one line each: the checkpoints that cannot be used, and the trials whose scores
    come from study.db because of it."""
    lines = [f"damaged checkpoint of trial {d.number}: {d.path} ({d.why})" for d in damaged]
    lines += [f"trial {r.number} ({r.config.get('strategy', '?')}): {r.note}" for r in records if r.note]
    return lines


def check(name: str, storage: str, out: Any = sys.stdout) -> int:
    exp, plan, study = ledger.load_sweep(name, storage)  # sweep.json and study.db: named in one line if damaged
    lines = [f"sweep {name} in {exp}", f"sweep.json: intact ({plan['space']}, {plan['num_samples']} trials)"]
    problems = 0
    try:
        driver = ledger.read_driver(exp)
        lines.append(f"driver.json: intact ({len(driver['sessions'])} sessions, {driver['state']})")
    except UserError as exc:
        problems += 1
        driver = ledger.read_driver(exp, strict=False)
        lines.append(f"driver.json: {exc}")
    held = claim.read_claim(exp)
    if held is None:
        lines.append("claim: none (no driver holds the sweep)")
    elif claim.is_stale(exp, held):
        lines.append(f"claim: stale, left by {claim.holder(held)}, which is gone; `sweep resume` takes it over")
    else:
        lines.append(f"claim: held by {claim.holder(held)}, alive")
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    lines.append(f"study.db: intact, {len(trials)} trials ({', '.join(f'{n} {k.lower()}' for k, n in states.items())})")
    saved, damaged = ledger.scan_checkpoints(exp)
    records = ranking.records_from(study, saved, plan["metric"])
    found = damage_lines(damaged, records)
    problems += len(found)
    lines.append(f"checkpoints: {len(saved)} trials have one" + (f"; {len(found)} problems:" if found else ", intact"))
    lines += [f"  {line}" for line in found]
    lines += ["", "what `sweep resume` would do:"]
    lines += [f"  {line}" for line in _redo(plan, trials, saved, driver, command("status", name, storage))]
    loaded = None
    try:
        loaded = confirm.load_answer(exp)
    except UserError as exc:
        problems += 1
        lines.append(f"confirmation: {exc}")
    if loaded is not None:
        race_plan, answer = loaded
        _, race_damage = ledger.scan_checkpoints(join(exp, confirm.CONFIRM_DIR))
        problems += len(race_damage)
        lines.append(f"confirmation: {answer.state.rounds} rounds, {answer.runs_done} runs with an outcome"
                     + ("" if answer.state.finished else f", {len(answer.state.todo)} to run in this round"))
        lines += [f"  damaged checkpoint of run {d.number}: {d.path} ({d.why}); it runs again" for d in race_damage]
    lines.append("")
    lines.append(f"{problems} problem{'s' if problems != 1 else ''} found" if problems else "no damage found")
    print("\n".join(lines), file=out)
    return 1 if problems else 0


def _redo(plan: dict[str, Any], trials: Sequence[Any], saved: dict[int, ledger.Saved], driver: dict[str, Any],
          status: str) -> list[str]:
    running = [t for t in trials if t.state == TrialState.RUNNING]
    asked = sum(t.state in ledger.ASKED for t in trials)
    out = []
    for t in running:
        s = saved.get(t.number)
        out.append(f"trial {t.number}: continue from epoch {s.epoch} ({s.path})" if s is not None
                   else f"trial {t.number}: start again from epoch 1 (no checkpoint)")
    if asked < plan["num_samples"] and driver.get("state") != "finished":
        out.append(f"start {plan['num_samples'] - asked} trial(s) not asked for yet")
    if not out:
        out.append("nothing: every trial has ended" + (
            "; with --confirm, go on to the race and the report" if plan["settings"].get("confirm") else ""))
    since = time.time() - max((s.get("heartbeat", 0) for s in driver.get("sessions", [])), default=0)
    if running and driver.get("state") == "running" and since < ledger.HEARTBEAT_STALE_S:
        out.append(f"(a driver wrote its heartbeat {since:.0f} s ago: the sweep may be running; see `{status}`)")
    return out
