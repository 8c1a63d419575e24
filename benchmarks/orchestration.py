"""What Ray Tune costs: the same 16 trials in a plain Python loop and as a real `sweep run` (2 trials at a time).

Usage: ``.venv/bin/python benchmarks/orchestration.py [--smoke] [--reuse-ray] [--out PATH] [--keep DIR]``
(about 3 minutes on the 2-core development machine, 5 with ``--reuse-ray``; ``--smoke``: about 1).

(a) *loop*: a fresh Python process runs the 16 trials one after another with ``trainables.loop.run_trial`` and a
report callback that only keeps the metrics (no checkpoint, no Ray), 1 torch thread per trial: 1 of the 2 cores.
(b) *sweep*: the real CLI as a subprocess, ``sweep run --space benchmarks/orchestration_space.py:STUDY
--max-concurrent 2 --cpus-per-trial 1 --seed 0`` (a FIFO grid: the same 16 configurations, each to its full 4
epochs; the trainable gives a 1-CPU trial 1 thread). The script checks that both ran identical configurations.
(b') with ``--reuse-ray``: the same sweep given ``--address`` of a local Ray started beforehand (as one would keep
a Ray running across sweeps), to see what Ray's start and shut-down cost.

Definitions (every time is wall-clock):

- compute: a trial's training and scoring, the sum over its epochs of ``time_train_s + time_eval_s`` (run_trial's own
  timers; for the sweep read from each trial's newest checkpoint, ``history.json``). On a loaded machine it includes
  waiting for a core, so the sweep's compute of the same trials can exceed the loop's: both are printed;
- wall: from launching the process to its exit (imports, Ray's start and shut-down included);
- busy fraction: sum of compute / (wall x cores used): 1 core for the loop, 2 for the sweep;
- per-trial overhead: (wall x concurrency - sum of compute) / trials.

The sweep's overhead is split per slot (a slot runs one trial at a time; both wait while the driver starts): start-up
(launch to the slot's first trial: interpreter, imports, plan and study; then ray.init and Tune's set-up up to the
driver's first line; then Tune's actors, i.e. new worker processes importing torch and the trainable, up to the
trial function's start), inside each trial its set-up (data, model; in a new worker also the modules a trial imports
on first use) and its per-epoch reports, the gaps between a slot's trials (trial end, Tune's and Optuna's bookkeeping,
the next trial's start), and the tail (last trial's end to exit: ranking, Ray's shut-down). A report's time is what
lies between two consecutive epochs' report timestamps (history.json) and was not compute; it is split with two
measurements made here: the checkpoint write (``torch.save`` of a real trial state plus ``history.json``, as
trainables/tune_entry.py does) and Tune's copy of the checkpoint directory into the sweep directory (Ray's own copy
function); the rest is the round trip through the driver (Tune's function API reports synchronously: the trial waits
until the driver has processed the result, saved the checkpoint's record and asked for the next). ``ray.init`` and
``ray.shutdown`` are timed once more in a separate process, with the CLI's arguments. CPU seconds per kind of process
(driver, Ray's daemons, workers) come from sampling the process tree with psutil every 0.5 s.

A trial's start in the sweep is its first report's timestamp minus Tune's ``time_this_iter_s`` for it (which runs
from the trial function's start to the report handed over) plus the checkpoint write and copy; its end is the last
report's timestamp plus a typical report.

``--smoke``: the 4-trial ``SMOKE_STUDY`` with ``--smoke-test`` sizes, 2 epochs; the JSON goes to a temporary file.
Prints Markdown tables and writes benchmarks/results/orchestration.json (atomically) with the command, date, machine
and load average before and after: quote figures from an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SPACE_FILE = Path(__file__).resolve().parent / "orchestration_space.py"
RESULTS = ROOT / "benchmarks" / "results" / "orchestration.json"
CONCURRENCY = 2
GOAL_SPEEDUP = 1.6  # the sweep at 2 at a time against the 1-core loop
GOAL_FIXED_S = 5.0  # wall seconds of fixed start plus stop
GOAL_PER_TRIAL_S = 0.15  # per trial: report round trips, checkpoints, gaps between a slot's trials
SEED = 0
SAMPLE_PERIOD_S = 0.5  # CPU time per kind of process (driver, Ray's daemons, workers); light, to disturb little

sys.path.insert(0, str(Path(__file__).resolve().parent))
from default_run import (  # noqa: E402
    TreeSampler,
    UsageError,
    check_keep,
    check_out,
    machine,
    save,
    sweep_executable,
    versions,
)

# --- the trials ---------------------------------------------------------------------------------------------------


def trial_configs(smoke: bool) -> list[dict[str, Any]]:
    """The configurations the sweep's trials get: grid point + the space's fixed settings + the CLI's overrides (seed,
    and the smoke sizes), with the 1 thread the sweep's trainable gives a 1-CPU trial."""
    sys.path.insert(0, str(SPACE_FILE.parent))
    import orchestration_space as space

    from sweep.plan import SweepSettings, trial_overrides

    overrides = trial_overrides(SweepSettings(seed=SEED, smoke_test=smoke), "image")
    grid = space.SMOKE_GRID if smoke else space.GRID
    return [{**point, **space.FIXED, **overrides, "num_threads": 1} for point in space.grid_points(grid)]


def _loop_child(configs_path: str, out_path: str) -> None:
    """(a), in its own process: the trials one after another, no Ray, no checkpoint."""
    started = time.time()
    from trainables.loop import run_trial
    from trainables.tasks import build_trial

    imported = time.time()
    trials = []
    for config in json.loads(Path(configs_path).read_text()):
        rows: list[dict[str, Any]] = []
        start = time.time()
        run_trial(build_trial(config), lambda m, s, rows=rows: rows.append({
            "epoch": m["epoch"], "time_train_s": m["time_train_s"], "time_eval_s": m["time_eval_s"],
            "timestamp": time.time()}))
        trials.append({"config": config, "start": start, "end": time.time(), "history": rows})
    Path(out_path).write_text(json.dumps({"started": started, "imported": imported, "trials": trials}))


def run_loop(configs: list[dict[str, Any]], work: Path) -> dict[str, Any]:
    cfg_path, out_path = work / "loop_configs.json", work / "loop_result.json"
    cfg_path.write_text(json.dumps(configs))
    launched = time.time()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--_loop", str(cfg_path), str(out_path)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = TreeSampler(proc.pid, SAMPLE_PERIOD_S, pss_every=10**9)
    sampler.start()
    output, _ = proc.communicate()
    ended = time.time()
    sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"the plain loop failed (exit {proc.returncode}):\n{output[-3000:]}")
    record = json.loads(out_path.read_text())
    return {**record, "launched": launched, "exited": ended, "cpu_s_by_kind": sampler.result()["cpu_s_by_kind"]}


def run_sweep(sweep_exe: Path, storage: Path, name: str, smoke: bool, address: str | None = None) -> dict[str, Any]:
    """(b): the real CLI; every stdout line stamped on arrival (the child runs unbuffered)."""
    study = "SMOKE_STUDY" if smoke else "STUDY"
    cmd = [str(sweep_exe), "run", "--space", f"{SPACE_FILE.relative_to(ROOT)}:{study}", "--max-concurrent",
           str(CONCURRENCY), "--cpus-per-trial", "1", "--seed", str(SEED), "--storage", str(storage), "--name", name]
    if smoke:
        cmd.append("--smoke-test")
    if address:
        cmd += ["--address", address]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a fresh local Ray, as `make run` gets
    env["PYTHONUNBUFFERED"] = "1"
    if address:
        env["RAY_AUTH_MODE"] = "token"  # as the head below was started
    lines: list[tuple[float, str]] = []
    launched = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = TreeSampler(proc.pid, SAMPLE_PERIOD_S, pss_every=10**9)
    sampler.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append((time.time(), line.rstrip("\n")))
    rc = proc.wait()
    exited = time.time()
    sampler.stop()
    if rc != 0:
        tail = "\n".join(text for _, text in lines[-30:])
        raise RuntimeError(f"`sweep run` failed (exit {rc}):\n{tail}")
    return {"command": cmd, "launched": launched, "exited": exited, "lines": lines,
            "cpu_s_by_kind": sampler.result()["cpu_s_by_kind"], "sampler_cpu_s": sampler.result()["sampler_cpu_s"]}


def read_sweep_trials(exp: Path) -> list[dict[str, Any]]:
    """Each trial's config, history (newest checkpoint) and Tune's per-iteration times (result.json)."""
    from trainables.tune_entry import SWEEP_KEYS

    trials = []
    for d in sorted(exp.glob("session-0/[0-9]*_*")):
        checkpoints = sorted(d.glob("checkpoint_*"))
        if not checkpoints:
            continue
        history = json.loads((checkpoints[-1] / "history.json").read_text())
        results = [json.loads(line) for line in (d / "result.json").read_text().splitlines() if line.strip()]
        params = json.loads((d / "params.json").read_text())
        config = {k: v for k, v in params.items() if k not in SWEEP_KEYS}
        config.setdefault("num_threads", history[0]["num_threads"])
        trials.append({"dir": d.name, "config": config, "history": history, "results": results,
                       "checkpoint_bytes": sum(f.stat().st_size for f in checkpoints[-1].iterdir())})
    return trials


# --- side measurements --------------------------------------------------------------------------------------------

_RAY_PROBE = """
import json, os, sys, time
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")
t0 = time.time()
import ray
from sweep.ray_start import init_ray
t1 = time.time()
init_ray(None, False)
t2 = time.time()
ray.shutdown()
t3 = time.time()
print(json.dumps({"import_s": t1 - t0, "init_s": t2 - t1, "shutdown_s": t3 - t2}))
"""


_TUNE_FLOOR = """
import json, os, sys, time
t0 = float(sys.argv[1])
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
import ray
from ray import tune
from sweep.ray_start import init_ray
init_ray(None, False)
t1 = time.time()
def trainable(config):
    tune.report({"x": 1.0})
tune.Tuner(trainable, tune_config=tune.TuneConfig(num_samples=2, max_concurrent_trials=2),
           run_config=tune.RunConfig(storage_path=sys.argv[2], verbose=0)).fit()
t2 = time.time()
ray.shutdown()
print(json.dumps({"to_ray_s": t1 - t0, "tune_s": t2 - t1, "shutdown_s": time.time() - t2}))
"""


def time_tune_floor(work: Path) -> dict[str, float]:
    """Ray's own floor: a fresh process that imports Ray, starts it as `sweep run` does, runs a Tune experiment of
    two trials that each report once (no torch, no data), and shuts Ray down; launch to exit, wall."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    launched = time.time()
    proc = subprocess.run([sys.executable, "-c", _TUNE_FLOOR, repr(launched), str(work / "floor")], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    wall = time.time() - launched
    if proc.returncode != 0:
        raise RuntimeError(f"the empty Tune run failed:\n{proc.stderr[-2000:]}")
    return {"wall_s": wall, **json.loads(proc.stdout.strip().splitlines()[-1])}


def time_ray_init() -> dict[str, float]:
    """ray.init as `sweep run` calls it (sweep.ray_start.init_ray: a fresh local Ray), ray.shutdown; own process."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-c", _RAY_PROBE], cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"timing ray.init failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


_RAY_HEAD = """
import os, sys
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")
import ray
from sweep.ray_start import init_ray
init_ray(None, False)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the benchmark closes our stdin
ray.shutdown()
"""


class RayHead:
    """A local Ray started apart (as `sweep run` starts its own), for a sweep given ``--address``; stopped on exit."""

    def __enter__(self) -> str:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        self.proc = subprocess.Popen([sys.executable, "-c", _RAY_HEAD], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        address = self.proc.stdout.readline().strip()
        if not address:
            self.__exit__()
            raise RuntimeError("the separate Ray head did not start")
        time.sleep(5.0)  # let its daemons finish starting, as they would have long before a later sweep
        return address

    def __exit__(self, *exc: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def time_checkpoint(checkpoint: Path, history: list[dict[str, Any]], work: Path, reps: int = 20) -> dict[str, float]:
    """One epoch's checkpoint as the trainable writes it (torch.save + history.json), and Tune's copy of it into the
    sweep directory (ray.train's own copy function, as Checkpoint persistence calls it for local storage)."""
    import pyarrow.fs
    import torch

    try:
        from ray.train._internal.storage import _pyarrow_fs_copy_files as copy_files
    except ImportError:  # another Ray: the same call without its tuning
        copy_files = pyarrow.fs.copy_files
    state = torch.load(checkpoint / "state.pt", map_location="cpu", weights_only=False)
    local = pyarrow.fs.LocalFileSystem()
    write, copy = [], []
    for i in range(reps):
        stage, dest = work / f"stage_{i}", work / f"dest_{i}"
        start = time.perf_counter()
        stage.mkdir(parents=True)
        torch.save(state, stage / "state.pt")
        (stage / "history.json").write_text(json.dumps(history))
        mid = time.perf_counter()
        local.create_dir(str(dest))
        copy_files(str(stage), str(dest), source_filesystem=local, destination_filesystem=local)
        shutil.rmtree(stage)
        end = time.perf_counter()
        write.append(mid - start)
        copy.append(end - mid)
        shutil.rmtree(dest)
    return {"write_s": statistics.median(write), "copy_s": statistics.median(copy)}


# --- analysis -----------------------------------------------------------------------------------------------------


def _compute(history: list[dict[str, Any]]) -> float:
    return sum(r["time_train_s"] + r["time_eval_s"] for r in history)


def _slots(intervals: list[tuple[float, float]], n: int) -> list[list[int]]:
    """Trials (indices, by start) assigned to ``n`` slots: each to the slot freed last before it starts."""
    order = sorted(range(len(intervals)), key=lambda i: intervals[i][0])
    slots: list[list[int]] = [[] for _ in range(n)]
    for i in order:
        start = intervals[i][0]
        free = [s for s in range(n) if not slots[s] or intervals[slots[s][-1]][1] <= start + 0.05]
        pick = max(free or range(n), key=lambda s: intervals[slots[s][-1]][1] if slots[s] else -1.0)
        slots[pick].append(i)
    return slots


def _line_time(lines: list[tuple[float, str]], prefix: str) -> float | None:
    return next((t for t, text in lines if text.startswith(prefix)), None)


def analyse_loop(loop: dict[str, Any]) -> dict[str, Any]:
    wall = loop["exited"] - loop["launched"]
    compute = sum(_compute(t["history"]) for t in loop["trials"])
    n = len(loop["trials"])
    spans = sum(t["end"] - t["start"] for t in loop["trials"])
    return {
        "wall_s": wall, "cores": 1, "trials": n, "compute_s": compute,
        "busy_fraction": compute / wall, "busy_fraction_of_2_cores": compute / (2 * wall),
        "overhead_per_trial_s": (wall - compute) / n,
        "split_s": {
            "start-up (interpreter, imports)": loop["imported"] - loop["launched"],
            "trial set-up (data, model; the first trial's cold caches)": spans - compute,
            "between trials and exit": wall - (loop["imported"] - loop["launched"]) - spans,
        },
        "fixed_s": wall - spans, "trial_setup_per_trial_s": (spans - compute) / n,
        "trial_setup_s": [round(t["end"] - t["start"] - _compute(t["history"]), 3) for t in loop["trials"]],
        "cpu_s_by_kind": loop["cpu_s_by_kind"],
    }


def analyse_sweep(sweep: dict[str, Any], trials: list[dict[str, Any]], ray_probe: dict[str, float],
                  ckpt: dict[str, float], driver_started: float | None) -> dict[str, Any]:
    t0, t_exit = sweep["launched"], sweep["exited"]
    wall = t_exit - t0
    n = len(trials)
    rows = []
    for t in trials:
        hist, res = t["history"], t["results"]
        # Tune's first iteration runs from the trial function's start to the first report handed over (after the
        # checkpoint's write and copy); the history's timestamp is taken before them
        start = hist[0]["timestamp"] - res[0]["time_this_iter_s"] + ckpt["write_s"] + ckpt["copy_s"]
        rows.append({
            "start": start, "compute": _compute(hist), "epochs": len(hist), "pid": hist[0]["pid"],
            "setup": hist[0]["timestamp"] - start - (hist[0]["time_train_s"] + hist[0]["time_eval_s"]),
            # between two epochs' report timestamps, what was not compute: the previous epoch's report
            "gaps": [hist[k]["timestamp"] - hist[k - 1]["timestamp"]
                     - (hist[k]["time_train_s"] + hist[k]["time_eval_s"]) for k in range(1, len(hist))],
        })
    first_of_worker = {min((r for r in rows if r["pid"] == pid), key=lambda r: r["start"])["start"]
                       for pid in {r["pid"] for r in rows}}
    cold = [r["gaps"][0] for r in rows if r["start"] in first_of_worker and r["gaps"]]
    steady = [g for r in rows for g in (r["gaps"][1:] if r["start"] in first_of_worker else r["gaps"])]
    typical = statistics.median(steady or cold or [0.0])
    for r, t in zip(rows, trials, strict=True):  # the last report is not followed by a timestamp: a typical one
        r["report"] = sum(r["gaps"]) + typical
        r["end"] = t["history"][-1]["timestamp"] + typical
    compute = sum(r["compute"] for r in rows)
    intervals = [(r["start"], r["end"]) for r in rows]
    slots = _slots(intervals, CONCURRENCY)
    startup = sum(intervals[s[0]][0] - t0 for s in slots if s)
    tail = sum(t_exit - intervals[s[-1]][1] for s in slots if s)
    gaps = sum(intervals[b][0] - intervals[a][1] for s in slots for a, b in zip(s, s[1:], strict=False))
    setup = sum(r["setup"] for r in rows)
    report = sum(r["report"] for r in rows)
    cold_extra = sum(g - typical for g in cold)
    epochs = sum(r["epochs"] for r in rows)
    checkpoint = epochs * ckpt["write_s"]
    copy = epochs * ckpt["copy_s"]
    t_plan = driver_started or t0
    t_sweep_line = _line_time(sweep["lines"], "sweep ") or t_plan
    slot_time = wall * CONCURRENCY
    split = {
        # both slots wait while the driver starts: these count once per slot
        "start-up: interpreter, imports, plan, study (x2 slots)": CONCURRENCY * (t_plan - t0),
        "start-up: ray.init, Tune's set-up (x2 slots)": CONCURRENCY * (t_sweep_line - t_plan),
        "start-up: worker processes, to each slot's first trial": startup - CONCURRENCY * (t_sweep_line - t0),
        "trial set-up in the worker (data, model; a new worker's imports)": setup,
        "first report of a new worker (extra over a typical one)": cold_extra,
        "per-epoch checkpoint write (torch.save + history.json)": checkpoint,
        "per-epoch checkpoint copy by Tune": copy,
        "per-epoch report round trip through the driver (the rest)": report - cold_extra - checkpoint - copy,
        "between a slot's trials (trial end, Tune's bookkeeping, next start)": gaps,
        "tail: last trial's end to exit (ranking, ray.shutdown)": tail,
    }
    per_trial = [k for k in split if k.startswith(("first report", "per-epoch", "between"))]
    return {
        "wall_s": wall, "cores": CONCURRENCY, "trials": n, "epochs": epochs, "compute_s": compute,
        "busy_fraction": compute / slot_time, "overhead_per_trial_s": (slot_time - compute) / n,
        # the two figures: fixed cost in wall seconds (slot-seconds over the slots), and per trial
        "fixed_s": (startup + tail) / CONCURRENCY, "per_trial_s": sum(split[k] for k in per_trial) / n,
        "trial_setup_per_trial_s": setup / n,
        "split_s": split, "unaccounted_s": slot_time - compute - sum(split.values()),
        "first_trial_start_s": min(r["start"] for r in rows) - t0,
        "last_trial_end_s": max(r["end"] for r in rows) - t0,
        "worker_pids": sorted({r["pid"] for r in rows}),
        "report_typical_s": typical, "report_first_of_worker_s": cold,
        "report_steady_s": sorted(steady),
        "trial_setup_s": [round(r["setup"], 3) for r in sorted(rows, key=lambda r: r["start"])],
        "checkpoint_bytes": statistics.median(t["checkpoint_bytes"] for t in trials),
        "checkpoint_write_s": ckpt["write_s"], "checkpoint_copy_s": ckpt["copy_s"],
        "ray_init_s": ray_probe["init_s"], "ray_shutdown_s": ray_probe["shutdown_s"],
        "ray_import_s": ray_probe["import_s"], "cpu_s_by_kind": sweep["cpu_s_by_kind"],
        "sampler_cpu_s": sweep["sampler_cpu_s"],
    }


# --- output -------------------------------------------------------------------------------------------------------


def table(loop: dict[str, Any], sweep: dict[str, Any], reused: dict[str, Any] | None = None,
          floor: dict[str, float] | None = None) -> str:
    def row(label: str, r: dict[str, Any]) -> str:
        return (f"| {label} | {r['trials']} | {r['wall_s']:.1f} | {CONCURRENCY} | {r['compute_s']:.1f} | "
                f"{r['busy_fraction']:.2f} | **{r['fixed_s']:.1f}** | **{r['per_trial_s']:.2f}** | "
                f"{r['trial_setup_per_trial_s']:.2f} | **{loop['wall_s'] / r['wall_s']:.2f}x** |")

    out = [
        f"| run | trials | wall s | cores | compute s | busy fraction | fixed start + stop, wall s (goal <= "
        f"{GOAL_FIXED_S:g}) | per-trial overhead s (goal <= {GOAL_PER_TRIAL_S:g}) | trial set-up s per trial | "
        f"speed-up over (a) (goal >= {GOAL_SPEEDUP:g}x) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| (a) plain loop, no Ray | {loop['trials']} | {loop['wall_s']:.1f} | 1 | {loop['compute_s']:.1f} | "
        f"{loop['busy_fraction']:.2f} | {loop['fixed_s']:.1f} | | {loop['trial_setup_per_trial_s']:.2f} | 1.00x |",
        row("(b) `sweep run`, 2 at a time", sweep),
    ]
    if reused:
        out.append(row("(b') the same with `--address` of a running Ray", reused))
    if floor:
        out += [
            "",
            f"Ray's floor, an empty Tune run (a fresh process imports Ray and starts it as `sweep run` does, two "
            f"trials that report once, no torch; then ray.shutdown): **{floor['wall_s']:.1f} s** launch to exit "
            f"({floor['to_ray_s']:.1f} to a running Ray, {floor['tune_s']:.1f} Tune, {floor['shutdown_s']:.1f} "
            f"shut-down). With the trials' {sweep['compute_s']:.1f} s of compute on {CONCURRENCY} slots, "
            f"the best a Ray Tune sweep can do here is about "
            f"{floor['wall_s'] + sweep['compute_s'] / CONCURRENCY:.1f} s wall, "
            f"{loop['wall_s'] / (floor['wall_s'] + sweep['compute_s'] / CONCURRENCY):.2f}x the loop.",
        ]
    out += [
        "",
        f"The same trials' compute took {sweep['compute_s'] / loop['compute_s']:.2f}x as long in the sweep as in the "
        f"loop (two trials, the driver and Ray's daemons share the 2 cores); counting the loop's compute instead, "
        f"the sweep's cores were busy {loop['compute_s'] / (sweep['wall_s'] * CONCURRENCY):.2f} of the time.",
        "",
        "| where the sweep's overhead goes, slot-seconds (per trial) | (b) | " + ("(b') |" if reused else ""),
        "|---|---:|" + ("---:|" if reused else ""),
    ]
    n = sweep["trials"]
    for what in [*sweep["split_s"], "unaccounted"]:
        cells = [r["split_s"].get(what, r["unaccounted_s"]) for r in (sweep, reused) if r]
        out.append(f"| {what} | " + " | ".join(f"{c:.1f} ({c / n:.2f})" for c in cells) + " |")
    cold = ", ".join(f"{1e3 * g:.0f}" for g in sweep["report_first_of_worker_s"])
    cpu = ", ".join(f"{kind} {seconds:.0f}" for kind, seconds in sweep["cpu_s_by_kind"].items())
    out += [
        "",
        f"(b): ray.init {sweep['ray_init_s']:.2f} s and ray.shutdown {sweep['ray_shutdown_s']:.2f} s (timed apart); "
        f"the first trial started {sweep['first_trial_start_s']:.1f} s after launch; "
        f"{len(sweep['worker_pids'])} worker processes served the {sweep['trials']} trials (reuse_actors). "
        f"A typical report took {1e3 * sweep['report_typical_s']:.0f} ms (a new worker's first: {cold} ms), "
        f"of which the checkpoint write {1e3 * sweep['checkpoint_write_s']:.0f} ms and Tune's copy "
        f"{1e3 * sweep['checkpoint_copy_s']:.0f} ms "
        f"({sweep['checkpoint_bytes'] / 1e6:.2f} MB). CPU seconds of the sweep's processes: {cpu}.",
        "",
        "| (a) plain loop | s |",
        "|---|---:|",
    ]
    out += [f"| {what} | {seconds:.1f} |" for what, seconds in loop["split_s"].items()]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="4 tiny trials x 2 epochs; JSON to a temporary file")
    parser.add_argument("--out", type=Path, default=None, help=f"JSON result (default {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--keep", type=Path, default=None, help="keep the sweep directory here (default: deleted)")
    parser.add_argument("--reuse-ray", action="store_true",
                        help="also run the sweep with --address of a Ray started beforehand (no ray.init/shutdown)")
    parser.add_argument("--_loop", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._loop:
        _loop_child(*args._loop)
        return 0
    try:
        return _main(args)
    except UsageError as exc:
        print(f"orchestration.py: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # a run that failed: its own message and output tail, not our traceback
        print(f"orchestration.py: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("orchestration.py: interrupted", file=sys.stderr)
        return 130


def _main(args: argparse.Namespace) -> int:
    out = args.out or (Path(tempfile.gettempdir()) / f"orchestration-smoke-{os.getpid()}.json" if args.smoke
                       else RESULTS)
    out = out.expanduser().resolve()
    check_out(out, RESULTS.name)
    sweep_exe = sweep_executable()
    check_keep(args.keep)
    load_before = os.getloadavg()
    configs = trial_configs(args.smoke)
    work = Path(tempfile.mkdtemp(prefix="orchestration-"))
    storage = args.keep.expanduser().resolve() if args.keep else work / "sweeps"
    runs: dict[str, dict[str, Any]] = {}
    try:
        print(f"(a) plain loop: {len(configs)} trials, one after another ...", flush=True)
        loop_raw = run_loop(configs, work)
        print(f"(b) sweep run: {len(configs)} trials, {CONCURRENCY} at a time ...", flush=True)
        runs["sweep"] = {"raw": run_sweep(sweep_exe, storage, "orchestration", args.smoke)}
        if args.reuse_ray:
            print("(b') the same sweep given --address of a Ray started before ...", flush=True)
            with RayHead() as address:
                runs["sweep_reusing_ray"] = {"raw": run_sweep(sweep_exe, storage, "orchestration-reusing-ray",
                                                              args.smoke, address)}
        print("side measurements: ray.init, checkpoint write and copy ...", flush=True)
        ray_probe = time_ray_init()
        print("Ray's floor: an empty Tune run ...", flush=True)
        floor = time_tune_floor(work)
        for name, run in runs.items():
            exp = Path(run["raw"]["command"][run["raw"]["command"].index("--storage") + 1]) / (
                run["raw"]["command"][run["raw"]["command"].index("--name") + 1])
            run["trials"] = read_sweep_trials(exp)
            run["driver_started"] = json.loads((exp / "driver.json").read_text())["sessions"][0]["started"]
            if name == "sweep":
                newest = sorted((exp / "session-0" / run["trials"][0]["dir"]).glob("checkpoint_*"))[-1]
                ckpt = time_checkpoint(newest, run["trials"][0]["history"], work / "ckpt")
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    key = lambda c: json.dumps(c, sort_keys=True)  # noqa: E731
    for run in runs.values():
        if sorted(map(key, configs)) != sorted(key(t["config"]) for t in run["trials"]):
            raise RuntimeError("the sweep's trial configs differ from the loop's; the comparison would be unfair")
    loop = analyse_loop(loop_raw)
    results = {name: analyse_sweep(run["raw"], run["trials"], ray_probe, ckpt, run["driver_started"])
               for name, run in runs.items()}
    report = table(loop, results["sweep"], results.get("sweep_reusing_ray"), floor)
    busy = "busy" if load_before[0] > 0.5 else "idle"
    print()
    print(report)
    print(f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f} (machine {busy} before the run)")
    sweep = results["sweep"]
    payload = {
        "benchmark": "orchestration",
        "command": " ".join([sys.executable, *sys.argv]),
        "sweep_command": " ".join(runs["sweep"]["raw"]["command"]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(), "versions": versions(),
        "load_average_before": load_before, "load_average_after": load_after,
        "smoke": args.smoke, "trials": len(configs), "epochs": configs[0]["epochs"], "concurrency": CONCURRENCY,
        "configs_identical": True,
        "goal": {"speedup": GOAL_SPEEDUP, "fixed_s": GOAL_FIXED_S, "per_trial_s": GOAL_PER_TRIAL_S},
        "tune_floor": floor,
        "loop": loop, "speedup": loop["wall_s"] / sweep["wall_s"],
        "compute_ratio_sweep_to_loop": sweep["compute_s"] / loop["compute_s"],
        "busy_fraction_of_sweep_against_loop_compute": loop["compute_s"] / (sweep["wall_s"] * CONCURRENCY),
        **results,
        "outputs": {name: [f"{t - run['raw']['launched']:7.2f}s {text}" for t, text in run["raw"]["lines"]]
                    for name, run in runs.items()},
        "raw": {"loop": loop_raw, **{name: [{k: t[k] for k in ("dir", "history", "results")} for t in run["trials"]]
                                      for name, run in runs.items()}},
        "table": report,
    }
    return save(out, payload)


if __name__ == "__main__":
    sys.exit(main())
