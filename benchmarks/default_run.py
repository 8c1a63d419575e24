"""Wall time and peak memory of the default run (what `make run` runs) and of `sweep report` on its sweep.

Usage: ``.venv/bin/python benchmarks/default_run.py [--smoke] [--out PATH] [--keep DIR] [--period S]``

Runs, as subprocesses of the real CLI, ``sweep run --space mnist1d --confirm --storage TMP --name default`` (`make
run` is the same into ./sweeps under a dated name; only the place differs): the sweep, the race of its finalists and
the report, in one driver; then ``sweep report default --storage TMP`` again on its own, each with a fresh local Ray
(RAY_ADDRESS is dropped). While each runs, its whole process tree (the driver, Ray's daemons and Ray's workers) is
sampled with psutil (Ray's vendored copy when psutil itself is not installed) every ``--period`` seconds (0.2): the
sum of RSS over the tree, the driver's own RSS, and every 10th sample the sum of PSS. RSS counts a page shared between
processes (torch's libraries in every worker, Ray's object store in /dev/shm) once per process, so the RSS sum
over-states what the tree needs; PSS splits each shared page among its users, so its sum does not (a PSS pass is
slower, hence rarer, and may miss a short peak). Also recorded: the largest RSS that any single process reached among
the driver and the descendants it reaped, as the kernel counts it (what ``/usr/bin/time -v`` calls "Maximum resident
set size": the README's figures), the processes and RSS per kind at the peak, CPU seconds per kind of process (each
process's last sample: it loses at most one period) and the sampler's own CPU time (about 5% of one core at 0.2 s).
Prints a Markdown table and writes benchmarks/results/default_run.json (atomically) with the commands, date, machine
and load average.

A full run takes minutes (40 trials of up to 8 epochs, 2 at a time on 2 cores, then a race of up to 10 rounds) and
needs an otherwise idle machine for figures worth quoting; ``--smoke`` runs ``--smoke-test`` (4 trials x 2 epochs on
a sliver of the data, no race, under a minute) and writes the JSON to a temporary file instead of benchmarks/results.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "default_run.json"
GIB = 2**30


class UsageError(Exception):
    """A mistake of the user's (a path that cannot be written, a missing executable): one line, exit status 2."""


def import_psutil() -> Any:
    """psutil, or the copy Ray ships in ray/thirdparty_files (Ray puts it on sys.path only when imported)."""
    try:
        import psutil
    except ImportError:
        spec = importlib.util.find_spec("ray")
        if spec is None or not spec.submodule_search_locations:
            raise UsageError("psutil is not installed and Ray is not there to lend its copy; "
                             "run this with the project's .venv/bin/python") from None
        sys.path.append(os.path.join(next(iter(spec.submodule_search_locations)), "thirdparty_files"))
        import psutil
    return psutil


def kind_of(pid: int, root: int, cmdline: list[str], name: str) -> str:
    """A process of the tree by what it is: the driver, Ray's core (C++), Ray's Python daemons, or a Ray worker."""
    text = " ".join(cmdline) or name
    if pid == root:
        return "driver"
    if "gcs_server" in text or "raylet" in name or text.split(" ", 1)[0].endswith("/raylet"):
        return "ray core (gcs_server, raylet)"
    program = " ".join(cmdline[:3]) if not text.startswith("ray::") else text.split(" ", 1)[0]
    if "Agent" in program or any(w in program for w in ("dashboard", "agent", "log_monitor", "monitor.py")):
        return "ray python daemons (dashboard, agents, monitors)"
    if text.startswith("ray::") or "default_worker.py" in text:  # its title is ray::IDLE, ray::ImplicitFunc...
        return "ray workers (trials)"
    return "other"


class TreeSampler(threading.Thread):
    """Samples RSS (every ``period`` s), PSS (every ``pss_every`` samples) and CPU time of a process and all its
    descendants until stopped."""

    def __init__(self, pid: int, period: float = 0.2, pss_every: int = 10) -> None:
        super().__init__(daemon=True)
        self.psutil = import_psutil()
        self.root, self.period, self.pss_every = pid, period, pss_every
        self.stop_event = threading.Event()
        self.kinds: dict[int, str] = {}
        self.cpu: dict[int, float] = {}
        self.samples = 0
        self.peak_rss, self.peak_driver_rss, self.peak_pss, self.peak_procs = 0, 0, 0, 0
        self.peak_rss_by_kind: dict[str, int] = {}
        self.peak_count_by_kind: dict[str, int] = {}
        self.peak_rss_at = 0.0
        self.started = time.time()
        self.cost_s = 0.0  # the sampler's own CPU time

    def run(self) -> None:
        start_cpu = time.thread_time()
        while True:
            self.sample()
            if self.stop_event.wait(self.period):
                break
        self.cost_s = time.thread_time() - start_cpu

    def stop(self) -> None:
        self.stop_event.set()
        self.join()

    def _tree(self) -> list[Any]:
        ps = self.psutil
        try:
            root = ps.Process(self.root)
            return [root, *root.children(recursive=True)]
        except ps.Error:
            return []

    def sample(self) -> None:
        ps = self.psutil
        procs = self._tree()
        if not procs:
            return
        with_pss = self.samples % self.pss_every == 0
        total, pss, by_kind, count = 0, 0, {}, {}
        for p in procs:
            try:
                with p.oneshot():
                    if p.pid not in self.kinds:
                        self.kinds[p.pid] = kind_of(p.pid, self.root, p.cmdline(), p.name())
                    rss = p.memory_info().rss
                    times = p.cpu_times()
                if with_pss:
                    pss += p.memory_full_info().pss
            except ps.Error:  # it ended between the listing and now
                continue
            kind = self.kinds[p.pid]
            self.cpu[p.pid] = times.user + times.system
            total += rss
            by_kind[kind] = by_kind.get(kind, 0) + rss
            count[kind] = count.get(kind, 0) + 1
            if p.pid == self.root:
                self.peak_driver_rss = max(self.peak_driver_rss, rss)
        self.samples += 1
        self.peak_procs = max(self.peak_procs, len(procs))
        if with_pss:
            self.peak_pss = max(self.peak_pss, pss)
        if total > self.peak_rss:
            self.peak_rss, self.peak_rss_by_kind, self.peak_rss_at = total, by_kind, time.time() - self.started
            self.peak_count_by_kind = count

    def result(self) -> dict[str, Any]:
        cpu: dict[str, float] = {}
        for pid, seconds in self.cpu.items():
            cpu[self.kinds[pid]] = cpu.get(self.kinds[pid], 0.0) + seconds
        return {
            "samples": self.samples, "period_s": self.period,
            "peak_tree_rss_gib": self.peak_rss / GIB, "peak_tree_rss_at_s": self.peak_rss_at,
            "peak_tree_rss_by_kind_gib": {k: v / GIB for k, v in sorted(self.peak_rss_by_kind.items())},
            "processes_by_kind_at_peak": dict(sorted(self.peak_count_by_kind.items())),
            "peak_tree_pss_gib": self.peak_pss / GIB, "peak_driver_rss_gib": self.peak_driver_rss / GIB,
            "peak_processes": self.peak_procs, "processes_seen": len(self.kinds),
            "cpu_s_by_kind": {k: round(v, 2) for k, v in sorted(cpu.items())},
            "sampler_cpu_s": round(self.cost_s, 2),
        }


def run_measured(cmd: list[str], log: Path, period: float = 0.2, env: dict[str, str] | None = None,
                 cwd: Path = ROOT) -> dict[str, Any]:
    """Run ``cmd`` with its output to ``log``, sampling its process tree; wall time, exit status, memory, CPU."""
    with open(log, "w") as out:
        launched = time.time()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        sampler = TreeSampler(proc.pid, period)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)  # the kernel's peak RSS of the child and its reaped descendants
        exited = time.time()
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop()
    return {
        "command": " ".join(cmd), "exit_status": proc.returncode, "wall_s": exited - launched,
        "launched": launched, "largest_process_peak_rss_gib": usage.ru_maxrss * 1024 / GIB,
        **sampler.result(),
    }


def tail(path: Path, lines: int = 25) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def machine() -> dict[str, Any]:
    ps = import_psutil()
    return {"hostname": platform.node(), "cores": os.cpu_count(),
            "memory_gib": round(ps.virtual_memory().total / GIB, 1), "platform": platform.platform(),
            "python": platform.python_version()}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for p in ("ray", "optuna", "torch"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "missing"
    return out


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Atomically (a temporary file in the same directory, then a rename), readable by all like any result."""
    from trainables.files import write_atomic

    write_atomic(path, (json.dumps(payload, indent=2) + "\n").encode())
    os.chmod(path, 0o644)


def save(out: Path, payload: dict[str, Any]) -> int:
    """Write the result; a failure (the directory went away meanwhile) in one line, after the table was printed."""
    try:
        write_json(out, payload)
    except OSError as exc:
        print(f"error: could not write {out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"written to {out}")
    return 0


def check_out(path: Path, example: str = RESULTS.name) -> None:
    """--out must be a file path in a directory we can create or write; checked before anything runs."""
    if path.is_dir():
        raise UsageError(f"--out {path} is a directory; give a file path such as {path / example}")
    probe = path.parent
    while not probe.exists():
        probe = probe.parent
    try:  # create and delete a file where the result's directory would be made: the only sure test
        if not probe.is_dir():
            raise NotADirectoryError(probe)
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError:
        raise UsageError(f"cannot write --out {path}: {probe} is not a writable directory; choose another "
                         "--out") from None


def sweep_executable() -> Path:
    exe = Path(sys.executable).parent / "sweep"
    if not exe.exists():
        raise UsageError(f"no `sweep` executable beside {sys.executable}; run this with the project's "
                         ".venv/bin/python (`make setup` creates it)")
    return exe


def check_keep(keep: Path | None) -> None:
    if keep is not None and keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
        raise UsageError(f"--keep {keep} exists and is not an empty directory; choose a new directory")


def clean_env() -> dict[str, str]:
    """The caller's environment without RAY_ADDRESS: a fresh local Ray, as `make run` gets on a bare machine."""
    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}


def table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    out = [
        "| command | wall s | tree RSS sum, peak GiB | tree PSS sum, peak GiB | driver RSS, peak GiB | "
        "largest process (kernel) GiB | processes | CPU s: driver / Ray daemons / workers |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label, r in rows:
        cpu = r["cpu_s_by_kind"]
        daemons = cpu.get("ray core (gcs_server, raylet)", 0.0) + cpu.get(
            "ray python daemons (dashboard, agents, monitors)", 0.0)
        out.append(
            f"| {label} | {r['wall_s']:.1f} | {r['peak_tree_rss_gib']:.2f} | {r['peak_tree_pss_gib']:.2f} | "
            f"{r['peak_driver_rss_gib']:.2f} | {r['largest_process_peak_rss_gib']:.2f} | {r['peak_processes']} | "
            f"{cpu.get('driver', 0.0):.0f} / {daemons:.0f} / {cpu.get('ray workers (trials)', 0.0):.0f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="`sweep run --smoke-test`; JSON to a temporary file")
    parser.add_argument("--out", type=Path, default=None, help=f"JSON result (default {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--keep", type=Path, default=None, help="keep the sweep directory here (default: deleted)")
    parser.add_argument("--period", type=float, default=0.2, help="seconds between memory samples (default 0.2)")
    args = parser.parse_args(argv)
    if not 0.01 <= args.period <= 10:
        parser.error(f"--period {args.period:g} must be between 0.01 and 10 seconds")
    try:
        return _main(args)
    except UsageError as exc:
        print(f"default_run.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("default_run.py: interrupted", file=sys.stderr)
        return 130


def _main(args: argparse.Namespace) -> int:
    out = args.out or (Path(tempfile.gettempdir()) / f"default_run-smoke-{os.getpid()}.json" if args.smoke
                       else RESULTS)
    out = out.expanduser().resolve()
    check_out(out)
    check_keep(args.keep)
    exe = sweep_executable()
    import_psutil()
    work = Path(tempfile.mkdtemp(prefix="default_run-"))
    storage = args.keep.expanduser().resolve() if args.keep else work / "sweeps"
    name = "default"
    load_before = os.getloadavg()
    try:
        run_cmd = [str(exe), "run", "--space", "mnist1d", "--storage", str(storage), "--name", name]
        run_cmd.append("--smoke-test" if args.smoke else "--confirm")
        report_cmd = [str(exe), "report", name, "--storage", str(storage)]
        results = []
        for label, cmd in ((f"`sweep run --space mnist1d {run_cmd[-1]}`", run_cmd),
                           ("`sweep report`", report_cmd)):
            print(f"running {label} ...", flush=True)
            log = work / f"{cmd[1]}.log"
            r = run_measured(cmd, log, args.period, env=clean_env())
            if r["exit_status"] != 0:
                print(f"default_run.py: {' '.join(cmd[:2])} failed with exit status {r['exit_status']}; "
                      f"its last lines:\n{tail(log)}", file=sys.stderr)
                return 1
            r["output_tail"] = tail(log, 8).splitlines()
            r["sweep_summary"] = next((line.strip() for line in log.read_text(errors="replace").splitlines()
                                       if "trial-epochs of" in line), "")
            results.append((label, r))
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    report = table(results)
    print()
    print(report)
    summary = results[0][1]["sweep_summary"]
    if summary:
        print(f"\nsweep: {summary.strip()}")
    if not args.smoke and results[0][1]["output_tail"]:
        print(f"answer: {results[0][1]['output_tail'][-1].strip()}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; RSS sums count shared pages once "
          "per process (PSS does not)")
    payload = {
        "benchmark": "default_run",
        "command": " ".join([sys.executable, *sys.argv]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(), "versions": versions(), "smoke": args.smoke,
        "load_average_before": load_before, "load_average_after": load_after,
        "runs": [{"label": label, **r} for label, r in results],
        "table": report,
    }
    return save(out, payload)


if __name__ == "__main__":
    sys.exit(main())
