"""Does packing image trials on one GPU pay off? Training throughput of one trial alone vs N packed at 1/N GPU.

Usage: ``python benchmarks/gpu_packing.py [--seconds S | --steps N] [--batch-size B] [--packs 1,4] [--smoke]``

A sweep can give each trial ``{"gpu": 1}`` or pack four on one GPU at ``{"gpu": 0.25}``. Packing pays off only if
one image trial at a realistic size leaves the GPU idle (kernel launches, the per-step ``loss.item()`` sync, the
augmentation's small kernels), so that four of them together push more images through than one alone. This
measures exactly that, through Ray Tune as a sweep runs its trials: for each pack size N, N trials at once with
``{"cpu": C, "gpu": 1/N}`` each (the same C for every set-up, so only the GPU share differs).

Each trial is an image-task training step as ``trainables.train`` runs it: random CIFAR-shaped uint8 data
(made on the device), two SimCLR views per image from ``make_augment`` (on the GPU by default, see ``--augment``),
ResNet-18 with the CIFAR stem and the 512-128 projection head, Adam, ``two_view_loss`` (HCL ``hard`` by default)
in fp32 outside bf16 autocast, channels-last via ``Accel``, and ``optimizer_step`` with its finiteness check
plus the per-step ``loss.item()``. Warm-up steps (first allocations, cuDNN's choices) are not timed; a packed
trial keeps warming up until every trial of its pack is warm, and keeps stepping after its timed window until
every trial has ended its own, so the windows coincide and each is timed under the full load. Throughput is
**images/s counting both views** (2 x batch per step). Total GPU memory in use and utilisation come from NVML
(pynvml) or ``nvidia-smi`` when either is there. Prints a Markdown table and writes
``benchmarks/results/gpu_packing.json`` atomically (``--smoke``: a CPU check of the script, written to the temp
folder and marked as smoke).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable as a plain script without the package installed
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no Tune progress boxes between the set-ups

import torch  # noqa: E402

from trainables.files import write_atomic  # noqa: E402
from trainables.strategies import TWO_VIEW_STRATEGIES as STRATEGIES  # noqa: E402

# the strategies this step runs faithfully: plain two-view batches, only the negative weighting differs
LOSSES = tuple(name for name, s in STRATEGIES.items() if (s.positive, s.sampler) == ("same_instance", "random"))

RESULTS = ROOT / "benchmarks" / "results" / "gpu_packing.json"
NO_GPU = "no CUDA GPU visible; run on a GPU machine, or --smoke for a CPU check of the script"
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
BARRIER_TIMEOUT_S = 300.0  # how long a trial waits for the rest of its pack before it times alone


# ------------------------------------------------------------------------------------------------ the trial


def _arrive(barrier: str, phase: str, index: int) -> None:
    Path(barrier, f"{phase}-{index}").touch()


def _all_arrived(barrier: str, phase: str, n: int) -> bool:
    return sum(1 for _ in Path(barrier).glob(f"{phase}-*")) >= n


def _wait(barrier: str, phase: str, n: int, step, busy: bool) -> tuple[int, bool]:
    """Wait until all ``n`` trials reached ``phase``; ``busy``: stepping meanwhile. -> (steps taken, gave up).

    Gives up after ``BARRIER_TIMEOUT_S``, or at once when a trial of the pack has failed (say, out of memory).
    """
    steps, deadline = 0, time.monotonic() + BARRIER_TIMEOUT_S
    while not _all_arrived(barrier, phase, n):
        if time.monotonic() > deadline or _all_arrived(barrier, "failed", 1):
            return steps, True
        if busy:
            step()
            steps += 1
        else:
            time.sleep(0.05)
    return steps, False


def packing_trial(config: dict) -> None:
    """One benchmark trial (module level: Ray pickles it). Reports throughput, timed window, memory and GPU."""
    try:
        _trial(config)
    except BaseException:
        _arrive(config["barrier"], "failed", config["index"])  # so the rest of the pack stops waiting for it
        raise


def _trial(config: dict) -> None:
    import torch  # imported here: cloudpickle cannot pickle the torch.backends.cudnn a global torch would drag in
    from ray import tune

    from trainables.accel import Accel
    from trainables.augment import make_augment
    from trainables.loop import optimizer_step
    from trainables.losses import two_view_loss
    from trainables.models import ContrastiveModel

    cuda = config["cuda"]
    torch.set_num_threads(config["threads"])
    if cuda:
        torch.backends.cudnn.benchmark = config["cudnn_benchmark"]
    device = torch.device("cuda" if cuda else "cpu")
    accel = Accel.resolve(device, "auto")
    seed = config["seed"] + config["index"]
    torch.manual_seed(seed)

    # where the data and the augmentation live: "gpu" on the device, "cpu" on the host as trainables.train does
    where = device if config["augment"] != "cpu" else torch.device("cpu")
    gen = torch.Generator(device=where).manual_seed(seed)
    data = torch.randint(0, 256, (config["images"], 3, 32, 32), dtype=torch.uint8, generator=gen, device=where)
    augment = make_augment(32, 3, CIFAR_MEAN, CIFAR_STD)
    batch = config["batch_size"]

    def views() -> torch.Tensor:
        x = data[torch.randint(config["images"], (batch,), generator=gen, device=where)]
        return torch.cat([augment(x, gen), augment(x, gen)])

    fixed = views() if config["augment"] == "none" else None  # one pre-made pair of views, reused every step

    model = accel.module(ContrastiveModel.build("resnet18", 3, hidden_dim=512, out_dim=128))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-6)
    spec = STRATEGIES[config["strategy"]]
    knobs = {key: value for key, value in spec.resolve({}).items() if key in spec.loss_knobs}
    model.train()
    losses: list[float] = []

    def step() -> None:
        x = fixed if fixed is not None else views()
        with accel.autocast():
            _, z = model(accel.images(x))
        z1, z2 = z.float().chunk(2)  # the loss in fp32, as the trials do
        loss = two_view_loss(z1, z2, config["strategy"], config["temperature"], **knobs)
        if not optimizer_step(optimizer, loss):
            raise FloatingPointError(f"non-finite loss {float(loss.detach())}")
        losses.append(loss.item())

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    barrier, pack, index = config["barrier"], config["pack"], config["index"]
    for _ in range(config["warmup"]):
        step()
    _arrive(barrier, "ready", index)
    # on the GPU, keep it as busy as a running trial would while the rest of the pack warms up
    warm_extra, waited_out = _wait(barrier, "ready", pack, step, busy=cuda)

    sync()
    wall_start, start = time.time(), time.perf_counter()
    step_times: list[float] = []
    steps = 0
    while (steps < config["steps"]) if config["steps"] else (time.perf_counter() - start < config["seconds"]):
        t = time.perf_counter()
        step()  # ends on loss.item(), so the host clock follows the GPU
        step_times.append(time.perf_counter() - t)
        steps += 1
    sync()
    elapsed, wall_end = time.perf_counter() - start, time.time()

    _arrive(barrier, "done", index)
    # and keep loading it until every packed trial has ended its timed window
    tail, late = _wait(barrier, "done", pack, step, busy=cuda)
    waited_out = waited_out or late

    import ray

    tune.report({
        "index": index,
        "steps": steps,
        "elapsed_s": elapsed,
        "images_per_s": 2 * batch * steps / elapsed,
        "median_step_ms": 1e3 * statistics.median(step_times),
        "wall_start": wall_start,
        "wall_end": wall_end,
        "warmup_steps": config["warmup"] + warm_extra,
        "tail_steps": tail,
        "barrier_timed_out": waited_out,
        "last_loss": losses[-1],
        "max_memory_allocated": torch.cuda.max_memory_allocated() if cuda else None,
        "max_memory_reserved": torch.cuda.max_memory_reserved() if cuda else None,
        "device_name": torch.cuda.get_device_name() if cuda else f"cpu ({platform.machine()})",
        "device_total_memory": torch.cuda.get_device_properties(0).total_memory if cuda else None,
        "bf16": accel.bf16,
        "channels_last": accel.channels_last,
        "ray_gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "threads": torch.get_num_threads(),
    })


# ------------------------------------------------------------------------------------------------ GPU monitor


class GpuMonitor:
    """Samples total memory in use and utilisation of the GPU in the background (NVML, else nvidia-smi).

    Best effort: ``available`` is False, with ``reason``, where neither answers. Samples are (wall time,
    MiB used, % utilisation), so a set-up's figures can be cut to its timed window afterwards.
    """

    def __init__(self, enabled: bool, period_s: float = 0.25) -> None:
        self.samples: list[tuple[float, float, float]] = []
        self.period_s, self.source, self.reason = period_s, None, ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read = None
        if not enabled:
            self.reason = "no GPU (smoke run)"
            return
        index = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0].strip()
        index = index if index.isdigit() else "0"
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(int(index))

            def nvml() -> tuple[float, float]:
                return (pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20,
                        float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))

            nvml()
            self._read, self.source = nvml, "pynvml"
        except Exception as error:  # not installed, or no driver: fall back to nvidia-smi
            smi = shutil.which("nvidia-smi")
            if smi is None:
                self.reason = f"pynvml unusable ({type(error).__name__}) and no nvidia-smi on PATH"
                return
            command = [smi, "-i", index, "--query-gpu=memory.used,utilization.gpu", "--format=csv,noheader,nounits"]

            def nvidia_smi() -> tuple[float, float]:
                out = subprocess.run(command, capture_output=True, text=True, timeout=5, check=True).stdout
                used, util = out.strip().splitlines()[0].split(",")
                return float(used), float(util)

            try:
                nvidia_smi()
            except (OSError, subprocess.SubprocessError, ValueError, IndexError) as smi_error:
                self.reason = f"pynvml unusable and nvidia-smi failed ({type(smi_error).__name__})"
                return
            self._read, self.source, self.period_s = nvidia_smi, "nvidia-smi", max(period_s, 0.5)

    @property
    def available(self) -> bool:
        return self._read is not None

    def __enter__(self) -> GpuMonitor:
        if self.available:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                used, util = self._read()
                self.samples.append((time.time(), used, util))
            except Exception:  # a missed sample is no reason to stop the benchmark
                pass
            self._stop.wait(self.period_s)

    def window(self, start: float, end: float) -> dict | None:
        """Peak MiB in use and mean utilisation over the samples in [start, end], or None without samples."""
        inside = [(used, util) for t, used, util in self.samples if start <= t <= end]
        if not inside:
            return None
        return {"samples": len(inside), "memory_used_peak_mib": max(u for u, _ in inside),
                "utilization_mean_pct": statistics.fmean(p for _, p in inside)}

    def baseline(self, before: float) -> float | None:
        """MiB in use just before ``before``: what is held while no trial of the set-up runs yet."""
        earlier = [used for t, used, _ in self.samples if t < before]
        return earlier[-1] if earlier else None


# ------------------------------------------------------------------------------------------------ the driver


def run_pack(pack: int, args: argparse.Namespace, storage: str, monitor: GpuMonitor) -> dict:
    """Run ``pack`` trials at once through Ray Tune; return the set-up's per-trial reports and figures."""
    from ray import tune

    barrier = tempfile.mkdtemp(prefix=f"barrier{pack}_", dir=storage)
    resources = {"cpu": args.cpus_per_trial}
    if not args.smoke:
        resources["gpu"] = math.floor(10_000 / pack) / 10_000  # Ray's GPU fractions go to 1e-4
    common = {
        "pack": pack, "barrier": barrier, "cuda": not args.smoke, "batch_size": args.batch_size,
        "images": args.images, "warmup": args.warmup, "steps": args.steps, "seconds": args.seconds,
        "threads": max(1, int(args.cpus_per_trial)), "strategy": args.strategy, "temperature": args.temperature,
        "augment": args.augment, "seed": args.seed, "cudnn_benchmark": args.cudnn_benchmark,
    }
    tuner = tune.Tuner(
        tune.with_resources(packing_trial, resources),
        param_space={**common, "index": tune.grid_search(list(range(pack)))},
        tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=pack),
        run_config=tune.RunConfig(name=f"pack{pack}", storage_path=storage, verbose=0),
    )
    started = time.time()
    grid = tuner.fit()
    failed = [str(r.error).strip().splitlines()[-1] for r in grid if r.error is not None]
    trials = sorted((r.metrics for r in grid if r.error is None), key=lambda m: m["index"])
    keep = ("index", "steps", "elapsed_s", "images_per_s", "median_step_ms", "wall_start", "wall_end",
            "warmup_steps", "tail_steps", "barrier_timed_out", "last_loss", "max_memory_allocated",
            "max_memory_reserved", "device_name", "device_total_memory", "bf16", "channels_last", "ray_gpu_ids",
            "threads")
    out = {"pack": pack, "resources": resources, "trials": [{k: m.get(k) for k in keep} for m in trials],
           "errors": failed}
    if not trials:
        return out
    rates = [m["images_per_s"] for m in trials]
    starts, ends = [m["wall_start"] for m in trials], [m["wall_end"] for m in trials]
    overlap, span = max(0.0, min(ends) - max(starts)), max(ends) - min(starts)
    mem = [m["max_memory_allocated"] for m in trials if m["max_memory_allocated"] is not None]
    reserved = [m["max_memory_reserved"] for m in trials if m["max_memory_reserved"] is not None]
    out.update({
        "images_per_s_mean": statistics.fmean(rates), "images_per_s_min": min(rates),
        "images_per_s_total": sum(rates), "overlap_s": overlap, "span_s": span,
        "overlap_fraction": overlap / span if span > 0 else 1.0,
        "max_memory_allocated_per_trial": max(mem) if mem else None,
        "max_memory_reserved_per_trial": max(reserved) if reserved else None,
        "device_name": trials[0]["device_name"],
        "gpu_monitor": monitor.window(max(starts), min(ends)) if overlap > 0 else None,
        "gpu_memory_used_before_mib": monitor.baseline(started),
    })
    return out


def parse_packs(text: str) -> list[int]:
    try:
        packs = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated trial counts such as 1,4, got {text!r}") from None
    if not packs or any(p < 1 for p in packs) or len(set(packs)) != len(packs):
        raise argparse.ArgumentTypeError(f"expected distinct positive trial counts such as 1,4, got {text!r}")
    return packs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    window = parser.add_mutually_exclusive_group()
    window.add_argument("--seconds", type=float, default=None, help="timed window per trial (default 30; smoke: steps)")
    window.add_argument("--steps", type=int, default=None, help="timed steps per trial instead of --seconds")
    parser.add_argument("--batch-size", type=int, default=None, help="images per step, two views each (default 512)")
    parser.add_argument("--packs", type=parse_packs, default=[1, 4], help="trials sharing the GPU, per set-up (1,4)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per trial first (default 20)")
    parser.add_argument("--cpus-per-trial", type=float, default=None,
                        help="Ray CPUs (and torch threads) per trial, the same in every set-up "
                             "(default: as many as let the largest pack fit, at most 3)")
    parser.add_argument("--images", type=int, default=None, help="random uint8 images per trial (default 50000)")
    parser.add_argument("--augment", choices=("gpu", "cpu", "none"), default="gpu",
                        help="gpu: data and SimCLR views on the GPU (default); cpu: on the host, then copied, as "
                             "trainables.train does today; none: one pre-made pair of views reused (model step only)")
    parser.add_argument("--strategy", choices=LOSSES, default="hard",
                        help="loss of two_view_loss at its default knobs (hard: HCL, beta 1, tau_plus 0.1)")
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--cudnn-benchmark", action="store_true",
                        help="let cuDNN autotune its kernels (the trials leave it off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true",
                        help="CPU check of the script: batch 8, 64 images, 1+2 steps, 1 CPU per trial, no GPU")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"JSON path (default {RESULTS.relative_to(ROOT)}; smoke: the temp folder)")
    args = parser.parse_args(argv)

    if args.smoke:
        defaults = {"batch_size": 8, "images": 64, "warmup": 1, "cpus_per_trial": 1}
        if args.seconds is None and args.steps is None:
            args.steps = 2
    else:
        defaults = {"batch_size": 512, "images": 50_000, "warmup": 20, "cpus_per_trial": None}
        if args.seconds is None and args.steps is None:
            args.seconds = 30.0
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    cpus = os.cpu_count() or 1
    if args.cpus_per_trial is None:
        args.cpus_per_trial = max(1, min(3, cpus // max(args.packs)))
    args.out = args.out or (Path(tempfile.gettempdir()) / "gpu_packing_smoke.json" if args.smoke else RESULTS)

    if args.batch_size < 2:
        parser.error("--batch-size must be at least 2 (the loss needs negatives)")
    if args.images < 1 or args.warmup < 0 or args.temperature <= 0 or args.cpus_per_trial <= 0:
        parser.error("--images, --cpus-per-trial and --temperature must be positive, --warmup not negative")
    if (args.steps is not None and args.steps < 1) or (args.seconds is not None and args.seconds <= 0):
        parser.error("--steps / --seconds must be positive")
    if not args.smoke and not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        sys.exit(2)
    if not args.smoke and args.cpus_per_trial * max(args.packs) > cpus:
        parser.error(f"{max(args.packs)} trials x {args.cpus_per_trial:g} CPUs do not fit on {cpus} CPUs; "
                     "lower --cpus-per-trial")
    return args


def gib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f}"


def print_table(setups: list[dict], monitor: GpuMonitor) -> None:
    alone = next((s for s in setups if s["pack"] == 1 and "images_per_s_total" in s), None)
    print("\n| set-up | trials | img/s per trial, mean | min | img/s total | speed-up vs alone | "
          "peak alloc / trial GiB | peak reserved / trial GiB | GPU mem used MiB | GPU util % | GPU |")
    print("|" + "---|" * 11)
    for s in setups:
        name = "alone" if s["pack"] == 1 else "packed"
        share = s["resources"].get("gpu")
        label = f"{name} (gpu {share:g})" if share is not None else f"{name} (cpu only)"
        if "images_per_s_total" not in s:
            print(f"| {label} | {s['pack']} | failed | | | | | | | | |")
            continue
        speed = f"{s['images_per_s_total'] / alone['images_per_s_total']:.2f}x" if alone else "n/a"
        smi = s["gpu_monitor"]
        used = f"{smi['memory_used_peak_mib']:.0f}" if smi else "n/a"
        util = f"{smi['utilization_mean_pct']:.0f}" if smi else "n/a"
        print(f"| {label} | {len(s['trials'])} | {s['images_per_s_mean']:.0f} | {s['images_per_s_min']:.0f} | "
              f"{s['images_per_s_total']:.0f} | {speed} | {gib(s['max_memory_allocated_per_trial'])} | "
              f"{gib(s['max_memory_reserved_per_trial'])} | {used} | {util} | {s['device_name']} |")
    print()
    for s in setups:
        if "images_per_s_total" not in s:
            continue
        timed_out = any(m["barrier_timed_out"] for m in s["trials"])
        step_ms = statistics.median(m["median_step_ms"] for m in s["trials"])
        print(f"{s['pack']}-trial set-up: timed windows overlap {s['overlap_s']:.1f} s of a {s['span_s']:.1f} s span "
              f"({100 * s['overlap_fraction']:.0f}%); median step {step_ms:.1f} ms"
              + ("; a trial gave up waiting for the rest of its pack" if timed_out else ""))
        if alone and s is not alone:
            print(f"  total {s['images_per_s_total'] / alone['images_per_s_total']:.2f}x alone; each trial at "
                  f"{s['images_per_s_mean'] / alone['images_per_s_total']:.2f}x the speed it has alone")
    if not monitor.available:
        print(f"GPU memory in use / utilisation: not available ({monitor.reason})")
    else:
        print(f"GPU memory in use / utilisation: {monitor.source}, sampled in the overlap of the timed windows "
              f"(before each set-up: {', '.join(str(s.get('gpu_memory_used_before_mib')) for s in setups)} MiB)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import ray

    # workers of a local Ray inherit the driver's environment: let them import trainables too
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    cpus = os.cpu_count() or 1
    num_cpus = max(cpus, math.ceil(args.cpus_per_trial * max(args.packs))) if args.smoke else cpus
    window = f"{args.steps} steps" if args.steps else f"{args.seconds:g} s"
    print(f"gpu_packing: batch {args.batch_size} (x2 views), {window} timed after {args.warmup} warm-up steps, "
          f"packs {args.packs}, {args.cpus_per_trial:g} CPU(s) per trial, augment {args.augment}, "
          f"loss {args.strategy}{'; SMOKE: all on the CPU' if args.smoke else ''}", flush=True)
    began = time.perf_counter()
    storage = tempfile.mkdtemp(prefix="gpu_packing_")
    setups: list[dict] = []
    try:
        ray.init(num_cpus=num_cpus, num_gpus=0 if args.smoke else 1, include_dashboard=False,
                 _node_ip_address="127.0.0.1", logging_level="WARNING",
                 log_to_driver=False)  # trials print nothing; their errors come back through Tune
        with GpuMonitor(enabled=not args.smoke) as monitor:
            for pack in args.packs:
                setups.append(run_pack(pack, args, storage, monitor))
                print(f"  {pack} trial(s) done ({time.perf_counter() - began:.0f} s)", flush=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)

    print_table(setups, monitor)
    errors = [(s["pack"], e) for s in setups for e in s["errors"]]
    for pack, error in errors:
        print(f"a trial of the {pack}-trial set-up failed: {error}", file=sys.stderr)

    elapsed = time.perf_counter() - began
    if errors:  # a failed run must not replace the figures of a good one
        print(f"\n{elapsed:.0f} s; nothing written ({len(errors)} trial(s) failed)", file=sys.stderr)
        return 1
    payload = {
        "benchmark": "gpu_packing", "smoke": args.smoke,
        "command": shlex.join([sys.executable, *sys.argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "ray": ray.__version__, "python": platform.python_version(),
        "device_name": next((s["device_name"] for s in setups if "device_name" in s), None),
        "cpus": os.cpu_count(), "throughput_unit": "training images per second, both views counted (2 x batch/step)",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "gpu_monitor": {"source": monitor.source, "reason": monitor.reason or None},
        "elapsed_s": round(elapsed, 1), "setups": setups,
    }
    write_atomic(args.out, (json.dumps(payload, indent=2) + "\n").encode())
    print(f"\n{elapsed:.0f} s; written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
