"""The `sweep` command: one small class per subcommand, registered in COMMANDS (Optuna's CLI pattern).

Bad input is answered with one line naming the problem and the fix, and exit status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class UsageError(ValueError):
    pass


class Run:
    help = "launch a sweep: Optuna (TPE) proposes, ASHA stops early, Ray Tune runs the trials"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--space", default="digits", help="registered study (see `sweep spaces`) or file.py:function")
        p.add_argument("--name", help="sweep name (default: <space>-<timestamp>)")
        p.add_argument("--storage", default="./sweeps", help="results directory or URI (s3://...)")
        p.add_argument("--num-samples", type=int, help="number of trials (default: the study's)")
        p.add_argument("--max-concurrent", type=int, help="trials at once (default: as many as resources allow)")
        p.add_argument("--epochs", type=int, help="full budget per trial, in epochs (default: the study's)")
        p.add_argument("--cpus-per-trial", type=float, default=1.0)
        p.add_argument("--gpus-per-trial", type=float, default=0.0, help="fractions pack trials on one GPU")
        p.add_argument("--seed", type=int, default=0, help="seeds the search and every trial")
        p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
        p.add_argument("--data-root", help="local root of a real dataset (CIFAR, STL-10, ImageFolder)")
        p.add_argument("--dashboard", action="store_true", help="start the Ray dashboard (bound to 127.0.0.1)")
        p.add_argument("--smoke-test", action="store_true", help="4 trials x 2 epochs on a sliver of the data")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        import os

        address = args.address or os.environ.get("RAY_ADDRESS")
        if not address:  # read by Ray when it is imported: a local Ray then binds its ports to 127.0.0.1 only
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        from sweep.runner import SweepSettings, run

        for flag in ("num_samples", "max_concurrent", "epochs"):
            value = getattr(args, flag)
            if value is not None and value < 1:
                raise UsageError(f"--{flag.replace('_', '-')} is {value} but must be >= 1")
        for flag in ("cpus_per_trial", "gpus_per_trial"):
            if getattr(args, flag) < 0:
                raise UsageError(f"--{flag.replace('_', '-')} must be >= 0")
        settings = SweepSettings(
            space=args.space,
            name=args.name,
            storage=args.storage,
            num_samples=args.num_samples,
            max_concurrent=args.max_concurrent,
            epochs=args.epochs,
            cpus_per_trial=args.cpus_per_trial,
            gpus_per_trial=args.gpus_per_trial,
            seed=args.seed,
            address=args.address or os.environ.get("RAY_ADDRESS"),
            data_root=args.data_root,
            smoke_test=args.smoke_test,
            dashboard=args.dashboard,
        )
        return run(settings)


class Train:
    help = "run one trial without Ray from a YAML or JSON config"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", required=True, help="YAML or JSON file with the trial's settings")
        p.add_argument("--out", help="directory for checkpoint, metrics.jsonl and TensorBoard (resumed if present)")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from trainables.train import train

        train(load_config_file(args.config), out_dir=args.out)
        return 0


class Spaces:
    help = "list the registered search spaces"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        pass

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from search_spaces import SPACES

        width = max(len(n) for n in SPACES)
        for name, study in SPACES.items():
            print(f"{name:<{width}}  {study.description}")
        return 0


COMMANDS: dict[str, Any] = {"run": Run, "train": Train, "spaces": Spaces}


def load_config_file(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"config file {path!r} not found")
    text = p.read_text()
    try:
        if p.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:
        raise UsageError(f"could not parse {path}: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold a mapping of settings (key: value), not {type(data).__name__}")
    return data


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sweep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        command.add_arguments(sub.add_parser(name, help=command.help, description=command.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line per describe/ask
    try:
        return COMMANDS[args.command].run(args)
    except ValueError as exc:  # UsageError, config validation, missing datasets: the user's to fix
        print(f"sweep {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sweep {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
