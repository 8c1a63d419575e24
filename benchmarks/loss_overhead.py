"""Forward+backward time of ``two_view_loss`` for every registered strategy, relative to InfoNCE.

Usage: ``python benchmarks/loss_overhead.py [--threads N] [--device cpu|cuda] [--rounds R]``

Each round times one step of every configuration, in a freshly shuffled order, so machine noise hits all
of them alike; the ratio is the median over rounds of (step time / InfoNCE step time in the same round), shown
with the quartiles of those per-round ratios. Strategies whose weighting is ``all`` run the InfoNCE code itself,
so their spread around 1.00x shows the noise floor. On a machine shared with other jobs use ``--threads 1`` and a
few hundred rounds: with every core busy elsewhere, a multi-threaded step waits on its slowest thread and the
ratios scatter by tens of percent. Prints a Markdown table and writes ``benchmarks/results/loss_overhead.json``
(atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from trainables.losses import two_view_loss
from trainables.strategies import TWO_VIEW_STRATEGIES as STRATEGIES

GOAL = 1.10  # a negative weighting may cost at most 10% more than InfoNCE per step
RESULTS = Path(__file__).resolve().parent / "results" / "loss_overhead.json"


def configurations() -> list[tuple[str, str, dict]]:
    """(label, strategy, knobs): every registered strategy at its defaults, plus the other semi-hard rule and HCL at
    a beta other than its default 1 (nothing in the loss is special to beta = 1)."""
    rows = [(name, name, {}) for name in STRATEGIES]
    rows.append(("semi_hard (nearest)", "semi_hard", {"variant": "nearest"}))
    rows.append(("hard (beta 0.5)", "hard", {"beta": 0.5}))
    return rows


def loss_params(strategy: str, knobs: dict) -> dict:
    """The loss knobs the configuration runs with: its overrides on top of the strategy's defaults."""
    spec = STRATEGIES[strategy]
    resolved = spec.resolve(knobs)
    return {key: resolved[key] for key in spec.loss_knobs}


def measure(batch: int, dim: int, temperature: float, rounds: int, warmup: int, device: str, seed: int):
    """Per-configuration step times (seconds, one per round) at one batch size."""
    gen = torch.Generator().manual_seed(seed)
    z1 = torch.randn(batch, dim, generator=gen).to(device).requires_grad_()
    z2 = (z1.detach() + 0.5 * torch.randn(batch, dim, generator=gen).to(device)).requires_grad_()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step(strategy: str, knobs: dict) -> float:
        z1.grad = z2.grad = None
        sync()
        start = time.perf_counter()
        two_view_loss(z1, z2, strategy, temperature, **knobs).backward()
        sync()
        return time.perf_counter() - start

    configs = configurations()
    for _ in range(warmup):
        for _, strategy, knobs in configs:
            step(strategy, knobs)
    order = random.Random(seed)
    times: dict[str, list[float]] = {label: [] for label, _, _ in configs}
    for _ in range(rounds):
        for label, strategy, knobs in order.sample(configs, len(configs)):
            times[label].append(step(strategy, knobs))
    return times


def summarise(times: dict[str, list[float]]) -> dict[str, tuple[float, float, float, float]]:
    """label -> (median ms, then the median, lower and upper quartile over rounds of the ratio to InfoNCE in the
    same round)."""
    base = times["infonce"]
    summary = {}
    for label, ts in times.items():
        ratios = [t / b for t, b in zip(ts, base, strict=True)]
        low, _, high = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        summary[label] = (1e3 * statistics.median(ts), statistics.median(ratios), low, high)
    return summary


def write_atomically(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2)
            handle.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device")
    torch.set_num_threads(args.threads or os.cpu_count() or 1)

    started = time.perf_counter()
    summary = {b: summarise(measure(b, args.dim, args.temperature, args.rounds, args.warmup, args.device,
                                    args.seed)) for b in args.batch_sizes}
    device = (torch.cuda.get_device_name() if args.device == "cuda"
              else platform.processor() or platform.machine())

    columns = " | ".join(f"B={b} ms | B={b} ratio (quartiles)" for b in args.batch_sizes)
    header = f"| strategy | {columns} | goal <= {GOAL:.2f}x |"
    print(f"two_view_loss forward+backward, d={args.dim}, t={args.temperature}, {args.device} ({device}), "
          f"{torch.get_num_threads()} threads, {args.rounds} rounds, torch {torch.__version__}\n")
    print(header)
    print("|" + "---|" * (2 + 2 * len(args.batch_sizes)))
    rows = []
    for label, strategy, knobs in configurations():
        cells = [summary[b][label] for b in args.batch_sizes]
        meets = all(ratio <= GOAL for _, ratio, _, _ in cells)
        print(f"| {label} | " + " | ".join(f"{ms:.2f} | {ratio:.2f}x ({low:.2f}-{high:.2f})"
                                           for ms, ratio, low, high in cells)
              + f" | {'yes' if meets else 'NO'} |")
        rows.extend({"label": label, "strategy": strategy, "weighting": STRATEGIES[strategy].weighting,
                     "loss_params": loss_params(strategy, knobs), "batch_size": b, "median_ms": ms,
                     "ratio_to_infonce": ratio, "ratio_quartiles": [low, high], "meets_goal": ratio <= GOAL}
                    for b, (ms, ratio, low, high) in zip(args.batch_sizes, cells, strict=True))
    elapsed = time.perf_counter() - started
    print(f"\n{elapsed:.0f} s; written to {args.out}")
    write_atomically(args.out, {
        "benchmark": "loss_overhead", "goal_ratio": GOAL, "dim": args.dim, "temperature": args.temperature,
        "device": args.device, "device_name": device, "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "warmup": args.warmup, "torch": torch.__version__, "python": platform.python_version(),
        "elapsed_s": round(elapsed, 1), "results": rows,
    })


if __name__ == "__main__":
    main()
