"""How fast one image trial trains, against a plain PyTorch loop of the same encoder, batch, augmentation and loss.

Usage: ``.venv/bin/python benchmarks/trial_throughput.py [--device cpu|cuda] [--image-size 32] [--batch-size 256]
[--width 16] [--epochs 3] [--rounds 5] [--out PATH]`` (about 3 minutes on the 2-core CPU with the defaults).

(a) the trial: ``trainables.tasks.build_trial`` of an image config (digits, resized to ``--image-size``, the
``small_resnet`` of ``--width``, strategy ``infonce``) and its ``train_epoch``: the project's sampler, positive
constructor, per-sample augmentation of both views, the loss and its bookkeeping (non-finite check, loss average);
on CUDA the data are resident on the GPU (``Accel.resident``), augmented there, bf16 autocast, channels-last.
(b) a hand-written loop of the same pieces: the same model (rebuilt from the same seed), the same
``SimCLRAugment``, a shuffled permutation cut into batches, ``two_view_loss``, Adam, ``zero_grad/backward/step``,
nothing else; on CUDA, the data moved to the GPU once, the same autocast and memory format.

Each round times one training epoch (evaluation left out) of each, in alternating order, after one warm-up epoch of
each; images/s counts both views of every item. Goal: (a) >= 0.95 x (b). Prints a Markdown table and writes
``benchmarks/results/trial_throughput_<device>.json`` (atomically).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from trainables.files import write_atomic  # noqa: E402
from trainables.losses import two_view_loss  # noqa: E402
from trainables.tasks import build_trial  # noqa: E402

GOAL = 0.95


def config(args: argparse.Namespace) -> dict:
    return {"task": "image", "strategy": "infonce", "dataset": "digits", "image_size": args.image_size,
            "encoder": "small_resnet", "width": args.width, "proj_hidden_dim": 128, "proj_dim": 64,
            "batch_size": args.batch_size, "epochs": args.epochs + 1, "seed": 0, "num_threads": args.threads,
            "device": args.device}


class PlainLoop:
    """The same model, data, augmentation and loss, in the loop a researcher would write by hand."""

    def __init__(self, trial) -> None:
        import copy

        self.model = copy.deepcopy(trial.model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=trial.cfg.lr,
                                          weight_decay=trial.cfg.weight_decay)
        self.accel, self.augment, self.cfg = trial.accel, trial.augment, trial.cfg
        self.x = trial.splits["pretrain"][0].to(trial.accel.device)

    def epoch(self, seed: int) -> int:
        g = torch.Generator().manual_seed(seed)
        n, b = len(self.x), self.cfg.batch_size
        perm = torch.randperm(n, generator=g).to(self.x.device)
        self.model.train()
        for i in range(0, n - b + 1, b):
            idx = perm[i : i + b]
            views = torch.cat([self.augment(self.x[idx], g), self.augment(self.x[idx], g)])
            with self.accel.autocast():
                _, z = self.model(self.accel.images(views))
            z1, z2 = z.float().chunk(2)
            loss = two_view_loss(z1, z2, "infonce", self.cfg.temperature)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return (n // b) * b


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--epochs", type=int, default=1, help="epochs timed per round and loop")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    trial = build_trial(config(args))
    loop = PlainLoop(trial)
    items = (len(trial.splits["pretrain"][0]) // args.batch_size) * args.batch_size * 2  # both views

    epochs = {"trial": trial.train_epoch, "loop": loop.epoch}

    def timed(name: str, epoch: int) -> float:
        _sync(args.device)
        start = time.perf_counter()
        epochs[name](epoch)
        _sync(args.device)
        return time.perf_counter() - start

    timed("trial", 0), timed("loop", 0)  # warm-up: first-call costs, caches
    rates = {"trial": [], "loop": []}
    for r in range(1, args.rounds + 1):
        for name in ("trial", "loop") if r % 2 else ("loop", "trial"):
            rates[name].append(items / timed(name, r))
    trial_rate, loop_rate = statistics.median(rates["trial"]), statistics.median(rates["loop"])
    ratio = float(np.median(np.array(rates["trial"]) / np.array(rates["loop"])))
    device = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU ({platform.processor() or 'x86_64'}, "\
        f"{args.threads} thread{'s' if args.threads != 1 else ''})"
    print(f"\n{device}; digits at {args.image_size}px, small_resnet width {args.width}, batch {args.batch_size}, "
          f"median of {args.rounds} rounds:\n")
    print("| run | images/s | ratio to the plain loop |\n|---|---:|---:|")
    print(f"| (b) plain PyTorch loop | {loop_rate:.0f} | 1.00 |")
    print(f"| (a) the image trial's train_epoch | {trial_rate:.0f} | {ratio:.3f} |")
    print(f"\ngoal: the trial >= {GOAL} x the loop: {'met' if ratio >= GOAL else 'MISSED'}")
    out = args.out or ROOT / "benchmarks" / "results" / f"trial_throughput_{args.device}.json"
    result = {"command": " ".join(["benchmarks/trial_throughput.py", *(argv or sys.argv[1:])]), "device": device,
              "torch": torch.__version__, "config": config(args), "rates": rates, "trial_images_s": trial_rate,
              "loop_images_s": loop_rate, "ratio": ratio, "goal": GOAL, "met": ratio >= GOAL,
              "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_atomic(out, (json.dumps(result, indent=2) + "\n").encode())
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
