"""The `sweep` command: one small class per subcommand, registered in COMMANDS (Optuna's CLI pattern).

Bad input is answered with one line naming the problem and the fix, and exit status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn


class UsageError(ValueError):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse's own errors (a missing value, `--num-samples abc`) in the same form: one line, not the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def _local_ray_binds_loopback(address: str | None) -> None:
    """Read by Ray when it is imported: a local Ray then binds its ports to 127.0.0.1 only, and a loopback address
    is dialled as given (without it Ray swaps 127.0.0.1 for the machine's address and waits there forever). A local
    Ray gets token authentication, which Ray 2.60 turns on anyway, but said here so that it does not warn about it.
    """
    import os

    host = (address or "").split("://", 1)[-1].rsplit(":", 1)[0]
    if not address or host in _LOOPBACK:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if not address:
        os.environ.setdefault("RAY_AUTH_MODE", "token")


def parse_duration(text: str) -> float:
    """'3600', '90m', '2h', '1.5d' -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    unit = units.get(text[-1:].lower(), 0)
    try:
        seconds = float(text[:-1] if unit else text) * (unit or 1)
    except ValueError:
        raise UsageError(f"--time-budget {text!r} is not a duration; write e.g. 3600, 90m, 2h") from None
    if not seconds > 0:
        raise UsageError(f"--time-budget {text!r} must be positive")
    return seconds


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
    """--set key=value (YAML value: 0.1, true, null, text) -> {key: value}."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r} must look like key=value, e.g. --set batch_size=64")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            raise UsageError(f"--set {item!r}: {value!r} is not a value") from None
        if isinstance(parsed, str) and _EXPONENT.fullmatch(parsed.strip()):  # YAML 1.1 reads 1e-3 as text
            parsed = float(parsed)
        out[key.strip()] = parsed
    return out


class Run:
    help = "launch a sweep: Optuna (TPE) proposes, ASHA stops early, Ray Tune runs the trials"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--space", default="digits", help="registered study (see `sweep spaces`) or file.py:function")
        p.add_argument("--name", help="sweep name (default: <space>-<timestamp>)")
        p.add_argument("--storage", default="./sweeps", help="results directory (default ./sweeps)")
        p.add_argument("--num-samples", type=int, help="number of trials (default: the study's)")
        p.add_argument("--max-concurrent", type=int, help="trials at once (default: as many as resources allow)")
        p.add_argument("--epochs", type=int, help="full budget per trial, in epochs (default: the study's)")
        p.add_argument("--strategies", help="comma-separated subset of the space's strategies (default: all)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="fix a trial setting or parameter for every trial, e.g. --set batch_size=64 (repeatable)")
        p.add_argument("--cpus-per-trial", type=float,
                       help="CPUs (torch threads) per trial (default: the study's, else 1)")
        p.add_argument("--gpus-per-trial", type=float, help="GPUs per trial; a fraction packs trials on one GPU, "
                       "e.g. 0.25 runs four per GPU (default: the study's, else 1 where there are GPUs, else 0)")
        p.add_argument("--seed", type=int, default=0, help="seeds the search and every trial")
        p.add_argument("--max-failures", type=int, default=2,
                       help="retries of a trial whose worker raises or dies, from its last checkpoint (default 2)")
        p.add_argument("--time-budget", help="stop the sweep after this long, all sessions together (3600, 90m, 2h)")
        p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
        p.add_argument("--data-root", help="local root of a real dataset (CIFAR, STL-10, ImageFolder, Clotho, a "
                       "VGGSound-style folder) for the space's dataset or the one --set dataset=NAME names")
        p.add_argument("--dashboard", action="store_true", help="start the Ray dashboard (bound to 127.0.0.1)")
        p.add_argument("--smoke-test", action="store_true", help="4 trials x 2 epochs on a sliver of the data")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        import os

        address = args.address or os.environ.get("RAY_ADDRESS")
        _local_ray_binds_loopback(address)
        for flag in ("num_samples", "max_concurrent", "epochs"):
            value = getattr(args, flag)
            if value is not None and value < 1:
                raise UsageError(f"--{flag.replace('_', '-')} is {value} but must be >= 1")
        for flag in ("cpus_per_trial", "gpus_per_trial", "max_failures", "seed"):
            if getattr(args, flag) is not None and getattr(args, flag) < 0:
                raise UsageError(f"--{flag.replace('_', '-')} is {getattr(args, flag)} but must be >= 0")
        strategies = [x.strip() for x in args.strategies.split(",") if x.strip()] if args.strategies else None
        from sweep.runner import SweepSettings, run

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
            address=address,
            data_root=args.data_root,
            smoke_test=args.smoke_test,
            dashboard=args.dashboard,
            max_failures=args.max_failures,
            time_budget_s=parse_duration(args.time_budget) if args.time_budget else None,
            strategies=strategies,
            overrides=parse_sets(args.set),
        )
        return run(settings)


def _add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    """NAME and --storage: how resume, status and report find an existing sweep."""
    p.add_argument("name", help="the sweep's name (its directory under --storage)")
    p.add_argument("--storage", default="./sweeps", help="where the sweep lives (default ./sweeps)")


class Resume:
    help = "continue an interrupted sweep with its own settings; finished trials are kept, unfinished ones go on"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _add_sweep_arguments(p)
        p.add_argument("--address", help="Ray cluster address (default: the sweep's own, else $RAY_ADDRESS)")
        p.add_argument("--max-concurrent", type=int, help="trials at once (default: the sweep's own)")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        import os

        if args.max_concurrent is not None and args.max_concurrent < 1:
            raise UsageError(f"--max-concurrent is {args.max_concurrent} but must be >= 1")
        address = args.address or os.environ.get("RAY_ADDRESS")
        _local_ray_binds_loopback(address)
        from sweep.runner import resume

        return resume(args.name, args.storage, address=address, max_concurrent=args.max_concurrent)


class Status:
    help = "where a sweep stands: trials finished, stopped, failed, running; best score per strategy; epochs spent"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _add_sweep_arguments(p)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from sweep.status import status

        return status(args.name, args.storage)


class Report:
    help = "export a sweep's results: trials.parquet, summary.parquet, best_config.yaml, report.md, study.db"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _add_sweep_arguments(p)
        p.add_argument("--out", help="directory for the report (default <storage>/<name>/report)")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from sweep.report import report

        return report(args.name, args.storage, args.out)


class Confirm:
    help = "re-run each strategy's best configurations with paired seeds, score them on test, test the ranking"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _add_sweep_arguments(p)
        p.add_argument("--top-k", type=int, help="finalists per strategy (default 1)")
        p.add_argument("--seeds", type=int, help="seeds per finalist, the same for every strategy (default 3)")
        p.add_argument("--address", help="Ray cluster address (default: the sweep's own, else $RAY_ADDRESS)")
        p.add_argument("--max-concurrent", type=int, help="runs at once (default: the sweep's own)")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        import os

        address = args.address or os.environ.get("RAY_ADDRESS")
        _local_ray_binds_loopback(address)
        from sweep.confirm import confirm

        return confirm(
            args.name,
            args.storage,
            top_k=args.top_k,
            seeds=args.seeds,
            address=address,
            max_concurrent=args.max_concurrent,
        )


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


COMMANDS: dict[str, Any] = {
    "run": Run,
    "resume": Resume,
    "status": Status,
    "report": Report,
    "confirm": Confirm,
    "train": Train,
    "spaces": Spaces,
}


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
    parser = _Parser(prog="sweep", description=__doc__.splitlines()[0])
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
    except BrokenPipeError:  # `sweep status X | head`: the reader has all it wants
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0


if __name__ == "__main__":
    sys.exit(main())
