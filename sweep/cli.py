"""The `sweep` command line: a thin layer over the Python API (:mod:`sweep.api`) and the drivers.

One small class per subcommand, registered in COMMANDS (Optuna's CLI pattern). Bad input is answered with one line
naming the problem and the fix, and exit status 2; a storage failure likewise; a bug with one line saying where its
traceback went (:mod:`sweep.errors`). Never a traceback on the terminal.
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import re
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from trainables.errors import UserError, quoted

# The largest count the CLI takes, and the largest seed (trainables.config.SEED_MAX, numpy's 32 bits: repeated here so
# that parsing the command line imports no torch; a test holds the two equal).
MAX_COUNT = 10**6
MAX_SEED = 2**32 - 1


class _Parser(argparse.ArgumentParser):
    """argparse's own errors (a missing value, `--num-samples abc`) in the same form: one line, not the usage."""

    def error(self, message: str) -> NoReturn:
        wrong = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if wrong:  # a misspelt command or choice: say which was meant
            from trainables.errors import did_you_mean

            choices = re.findall(r"'([^']*)'", wrong.group(2)) or [c.strip() for c in wrong.group(2).split(",")]
            message += did_you_mean(wrong.group(1), choices)
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def _number(kind: type, low: float, high: float | None = None, *, above: bool = False) -> Callable[[str], Any]:
    """An argparse ``type``: a finite number of ``kind`` in [low, high] (or above ``low``), else argparse's own
    one-line error naming the option."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number")
        too_low = value <= low if above else value < low
        if too_low or (high is not None and value > high):
            bound = f"above {low}" if above else f">= {low}"
            upto = f" and <= {high}" if high is not None else ""
            raise argparse.ArgumentTypeError(f"{text} must be {bound}{upto}")
        return value

    parse.__name__ = "integer" if kind is int else "number"  # what argparse calls it in its messages
    return parse


_COUNT = _number(int, 1, MAX_COUNT)
_SEED = _number(int, 0, MAX_SEED)
_CPUS = _number(float, 0, 1024, above=True)
_GPUS = _number(float, 0, 1024)
_RETRIES = _number(int, 0, 1000)
_SEEDS = _number(int, 2, 1000)
_INTERVAL = _number(float, 0.2, 86400)
_ALPHA = _number(float, 0, 0.5, above=True)


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


def parse_duration(text: str, flag: str = "--time-budget") -> float:
    """'3600', '90m', '2h', '1.5d' -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    unit = units.get(text[-1:].lower(), 0)
    try:
        seconds = float(text[:-1] if unit else text) * (unit or 1)
    except ValueError:
        raise UserError(f"{flag} {text!r} is not a duration; write e.g. 3600, 90m, 2h") from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise UserError(f"{flag} {text!r} must be a positive, finite duration; write e.g. 3600, 90m, 2h")
    return seconds


def load_yaml(text: str, what: str) -> Any:
    """YAML as ``yaml.safe_load`` reads it, but without aliases (``*name``): a few hundred bytes of nested aliases
    expand to gigabytes (the "billion laughs"), and a config never needs one. ``what`` names the source."""
    import yaml

    class NoAliases(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                anchor = self.peek_event().anchor
                raise UserError(f"{what} uses a YAML alias (*{quoted(anchor)[1:-1]}); write the value out instead")
            return super().compose_node(parent, index)

    return yaml.load(text, Loader=NoAliases)  # noqa: S506 (a SafeLoader)


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
    """--set key=value (YAML value: 0.1, true, null, text) -> {key: value}."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {quoted(item)} must look like key=value, e.g. --set batch_size=64")
        try:
            parsed = load_yaml(value, f"--set {key.strip()[:40]}")
        except yaml.YAMLError:
            raise UserError(f"--set {quoted(item)}: {quoted(value)} is not a value") from None
        if isinstance(parsed, str) and _EXPONENT.fullmatch(parsed.strip()):  # YAML 1.1 reads 1e-3 as text
            parsed = float(parsed)
        if isinstance(parsed, float) and not math.isfinite(parsed):
            raise UserError(f"--set {quoted(item)}: the value must be a finite number")
        if not (parsed is None or isinstance(parsed, (str, int, float, bool))):
            raise UserError(f"--set {quoted(item)}: the value must be one number, word or true/false, not a "
                            f"{type(parsed).__name__}")
        out[key.strip()] = parsed
    return out


class Run:
    help = "launch a sweep: Optuna (TPE) proposes, ASHA stops early, Ray Tune runs the trials"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--space", default="mnist1d", help="registered study (see `sweep spaces`) or file.py:function "
                       "(default: mnist1d)")
        p.add_argument("--name", help="sweep name (default: <space>-<timestamp>)")
        p.add_argument("--storage", default="./sweeps", help="results directory (default ./sweeps)")
        p.add_argument("--num-samples", type=_COUNT, help="number of trials (default: the study's)")
        p.add_argument("--max-concurrent", type=_COUNT, help="trials at once (default: as many as resources allow)")
        p.add_argument("--epochs", type=_COUNT, help="full budget per trial, in epochs (default: the study's)")
        p.add_argument("--strategies", help="comma-separated subset of the space's strategies (default: all)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="fix a trial setting or parameter for every trial, e.g. --set batch_size=64 (repeatable)")
        p.add_argument("--cpus-per-trial", type=_CPUS,
                       help="CPUs (torch threads) per trial (default: the study's, else 1)")
        p.add_argument("--gpus-per-trial", type=_GPUS, help="GPUs per trial; a fraction packs trials on one GPU, "
                       "e.g. 0.25 runs four per GPU (default: the study's, else 1 where there are GPUs, else 0)")
        p.add_argument("--seed", type=_SEED, default=0, help=f"seeds the search and every trial (0 to {MAX_SEED})")
        p.add_argument("--max-failures", type=_RETRIES, default=2,
                       help="retries of a trial whose worker raises or dies, from its last checkpoint (default 2)")
        p.add_argument("--time-budget", help="stop the sweep after this long, all sessions together (3600, 90m, 2h)")
        p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
        p.add_argument("--data-root", help="local root of a real dataset (CIFAR, STL-10, ImageFolder, Clotho, a "
                       "VGGSound-style folder) for the space's dataset or the one --set dataset=NAME names")
        p.add_argument("--dashboard", action="store_true", help="start the Ray dashboard (bound to 127.0.0.1)")
        p.add_argument("--smoke-test", action="store_true", help="4 trials x 2 epochs on a sliver of the data")
        p.add_argument("--confirm", action="store_true", help="when the sweep is done, race each strategy's finalist "
                       "on fresh seeds (as `sweep confirm`), then write the report: the whole answer in one command, "
                       "resumable with `sweep resume NAME`")
        _add_race_arguments(p, "--race-time-budget")
        p.add_argument("--tracker", choices=("mlflow", "wandb"), help="also log every trial to MLflow "
                       "($MLFLOW_TRACKING_URI, else <sweep>/mlflow.db) or W&B (offline without WANDB_API_KEY)")
        p.add_argument("--dry-run", action="store_true", help="print the plan (trials per strategy, rungs, resources, "
                       "trial-epochs at most) and exit: nothing is written, Ray is not started")
        _add_json(p, "the final ranking (and the race's answer) as one JSON document; progress goes to stderr")

    example = """examples:
  sweep run                                         # every strategy on MNIST-1D (40 trials of 8 epochs)
  sweep run --confirm                               # the sweep, then the race and the report (as `make run`)
  sweep run --space digits --strategies hard,debiased --num-samples 12 --name mine
  sweep run --dry-run                               # what it would run, without running it
"""

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        import os

        address = args.address or os.environ.get("RAY_ADDRESS")
        _local_ray_binds_loopback(address)
        strategies = None
        if args.strategies is not None:  # given, even if empty (an unset shell variable): never "all" by accident
            strategies = [x.strip() for x in args.strategies.split(",") if x.strip()]
            if not strategies:
                raise UserError("--strategies is empty; name at least one strategy (see `sweep spaces`), "
                                "or leave the option out to sweep them all")
        rules = race_rules(args)
        budget = race_budget(args, "--race-time-budget")
        if not args.confirm and (rules is not None or budget is not None):
            raise UserError("--max-seeds, --min-seeds, --alpha, --test and --race-time-budget set up the race that "
                            "--confirm runs after the sweep; add --confirm, or leave them out")
        confirm = None
        if args.confirm:
            from dataclasses import asdict

            from sweep.race import Rules

            confirm = {**asdict(rules or Rules()), "time_budget_s": budget}
        from sweep.plan import SweepSettings
        from sweep.runner import run

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
            time_budget_s=parse_duration(args.time_budget) if args.time_budget is not None else None,
            strategies=strategies,
            overrides=parse_sets(args.set),
            confirm=confirm,
            tracker=args.tracker,
        )
        if args.dry_run:
            from sweep.plan import describe_plan, plan
            from sweep.runner import check_run

            p = plan(settings)
            check_run(p, probe_storage=False)  # refused here as the run itself would be (name, tracker, Ray, CPUs)
            text = describe_plan(p)
            print(json.dumps(text, indent=2) if args.json else text["text"])
            return 0
        return _then_json(args, lambda out: run(settings, out=out), settings)


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
        p.add_argument("--max-concurrent", type=_COUNT, help="trials at once (default: the sweep's own)")
        _add_json(p, "the final ranking (and the race's answer) as one JSON document; progress goes to stderr")

    example = """examples:
  sweep resume mnist1d-20261207-183550              # after a kill, a Ctrl-C or a full disk
  sweep resume big --storage s3://bucket/sweeps --address auto
"""

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        import os

        address = args.address or os.environ.get("RAY_ADDRESS")
        _local_ray_binds_loopback(address)
        from sweep.runner import resume

        return _then_json(args, lambda out: resume(args.name, args.storage, address=address,
                                                   max_concurrent=args.max_concurrent, out=out))


class Status:
    help = "where a sweep stands: trials finished, stopped, failed, running; best score per strategy; epochs spent"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _add_sweep_arguments(p)
        _add_json(p, "the same as one JSON document")
        p.add_argument("--watch", nargs="?", type=_INTERVAL, const=5.0, metavar="SECONDS",
                       help="show it again every SECONDS (default 5) until the sweep ends or Ctrl-C")

    example = """examples:
  sweep status mnist1d-20261207-183550
  sweep status big --storage s3://bucket/sweeps --watch 30    # a sweep running on a cluster
  sweep status mine --json | jq .ranking
"""

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from sweep.status import status, watch

        if args.watch:
            return watch(args.name, args.storage, args.watch, as_json=args.json)
        if args.json:
            import sweep

            print(json.dumps(sweep.load(args.name, args.storage).status(), indent=2, default=str))
            return 0
        return status(args.name, args.storage)


class Check:
    help = "verify a sweep's files: what is damaged or missing, and what `sweep resume` would redo (read-only)"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _add_sweep_arguments(p)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from sweep.check import check

        return check(args.name, args.storage)


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
    help = ("race each strategy's best configuration on fresh, paired seeds: the significantly worse drop out round by "
            "round, until one strategy is left or --max-seeds; test scores are reported for the survivors")

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _add_sweep_arguments(p)
        _add_race_arguments(p, "--time-budget")
        p.add_argument("--address", help="Ray cluster address (default: the sweep's own, else $RAY_ADDRESS)")
        p.add_argument("--max-concurrent", type=_COUNT, help="runs at once (default: the sweep's own)")
        _add_json(p, "the race's answer as one JSON document; progress goes to stderr")

    example = """examples:
  sweep confirm mnist1d-20261207-183550             # race the finalists: at most 10 rounds, alpha 0.05
  sweep confirm mine --max-seeds 20 --time-budget 2h
"""

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        import os

        address = args.address or os.environ.get("RAY_ADDRESS")
        _local_ray_binds_loopback(address)
        from sweep.confirm import confirm

        return _then_json(args, lambda out: confirm(
            args.name,
            args.storage,
            rules=race_rules(args),
            time_budget_s=race_budget(args, "--time-budget"),
            address=address,
            max_concurrent=args.max_concurrent,
            out=out,
        ))


def _add_race_arguments(p: argparse.ArgumentParser, budget_flag: str) -> None:
    """How the confirmation races (`sweep confirm`, and `sweep run --confirm`)."""
    p.add_argument("--max-seeds", type=_SEEDS, help="rounds at most, one fresh seed each (default 10)")
    p.add_argument("--min-seeds", type=_SEEDS, help="rounds before any strategy can be dropped (default 3)")
    p.add_argument("--alpha", type=_ALPHA, help="per-round error level of dropping the best (default 0.05)")
    p.add_argument("--test", choices=("t", "permutation"), help="paired t-test (default), or exact sign-flip "
                   "permutation test (no normality assumed; needs about 8 seeds to drop anything among 10)")
    p.add_argument(budget_flag, dest="race_time_budget",
                   help="the race starts no new round after this long, all sessions together (3600, 90m, 2h)")


def race_budget(args: argparse.Namespace, flag: str) -> float | None:
    return parse_duration(args.race_time_budget, flag) if args.race_time_budget is not None else None


def race_rules(args: argparse.Namespace) -> Any:
    """The race's rules when any was given on the command line (the others at their defaults), else None."""
    given = {k: getattr(args, k) for k in ("max_seeds", "min_seeds", "alpha", "test") if getattr(args, k) is not None}
    if not given:
        return None
    from sweep.race import Rules

    rules = Rules(**given)
    problems = rules.check()
    if problems:
        raise UserError(problems[0])
    return rules


class Train:
    help = "run one trial without Ray from a YAML or JSON config"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", required=True, help="YAML or JSON file with the trial's settings")
        p.add_argument("--out", help="directory for checkpoint, metrics.jsonl and TensorBoard (resumed if present)")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from sweep.storage import check_writable
        from trainables.train import train

        config = load_config_file(args.config)
        if args.out is not None:
            check_writable(args.out, "--out")
        train(config, out_dir=args.out)
        return 0


class Spaces:
    help = "the registered studies, or what one of them sweeps (strategies, knobs and ranges, settings, budget)"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("name", nargs="?", help="a study to describe (default: list them all)")
        _add_json(p, "the same as JSON")

    example = """examples:
  sweep spaces
  sweep spaces mnist1d
  sweep spaces path/to/my_space.py:space --json
"""

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from search_spaces import SPACES, describe_study

        if args.name is None:
            if args.json:
                print(json.dumps({n: s.description for n, s in SPACES.items()}, indent=2))
            else:
                width = max(len(n) for n in SPACES)
                for name, study in SPACES.items():
                    print(f"{name:<{width}}  {study.description}")
            return 0
        about = describe_study(args.name)
        print(json.dumps(about, indent=2, default=str) if args.json else about["text"])
        return 0


class List:
    help = "the sweeps under --storage: name, space, state, trials, best strategy and score, when, confirmed"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--storage", default="./sweeps", help="where the sweeps live (default ./sweeps; s3://... too)")
        _add_json(p, "one JSON object per sweep")

    example = """examples:
  sweep list
  sweep list --storage s3://bucket/sweeps --json
"""

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        import sweep

        frame = sweep.list_sweeps(args.storage)
        if args.json:
            print(json.dumps(frame.astype(object).where(frame.notna(), None).to_dict("records"), indent=2,
                             default=str))
        elif frame.empty:
            print(f"no sweep in {args.storage}")
        else:
            print(_table(frame))
        return 0


class Delete:
    help = "delete a sweep and everything in it (asks first unless --yes; never a running one)"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _add_sweep_arguments(p)
        p.add_argument("--yes", action="store_true", help="do not ask")

    example = """examples:
  sweep delete old-sweep
  sweep delete old-sweep --storage s3://bucket/sweeps --yes
"""

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from sweep.runner import delete

        return delete(args.name, args.storage, yes=args.yes)


def _add_json(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--json", action="store_true", help=what)


def _then_json(args: argparse.Namespace, work: Callable[[Any], int], settings: Any = None) -> int:
    """Run ``work(out)``; with --json, its progress goes to stderr and stdout gets the sweep's status as JSON."""
    if not getattr(args, "json", False):
        return work(sys.stdout)
    code = work(sys.stderr)
    import sweep

    name = settings.name if settings is not None else args.name
    if name is not None:
        print(json.dumps(sweep.load(name, args.storage).status(), indent=2, default=str))
    return code


def _table(frame: Any) -> str:
    """A DataFrame as a plain text table (no index), for the terminal."""
    return frame.to_string(index=False, na_rep="")


COMMANDS: dict[str, Any] = {
    "run": Run,
    "resume": Resume,
    "status": Status,
    "check": Check,
    "report": Report,
    "confirm": Confirm,
    "train": Train,
    "spaces": Spaces,
    "list": List,
    "delete": Delete,
}


def load_config_file(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {path!r} not found; give the path of a YAML or JSON file")
    text = p.read_text()
    try:
        data = json.loads(text) if p.suffix == ".json" else load_yaml(text, f"config file {path}")
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"could not parse {path}: {exc}".splitlines()[0][:200]) from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of settings (key: value), not {type(data).__name__}")
    return data


DESCRIPTION = """Which positive/negative sampling strategy really works for your contrastive model? `sweep run`
tunes every strategy fairly (Optuna's TPE, successive halving within each strategy, on Ray Tune), `sweep confirm`
races each strategy's best configuration on fresh, paired seeds, and `sweep report` writes the answer down."""

EXAMPLES = """examples:
  sweep run --confirm            # the default study, its race and its report: the whole answer
  sweep status NAME              # while it runs, or after a kill
  sweep resume NAME              # continue whatever was interrupted
  sweep COMMAND --help           # each command's options, defaults and examples
"""


def build_parser() -> argparse.ArgumentParser:
    from sweep import __version__

    parser = _Parser(prog="sweep", description=DESCRIPTION, epilog=EXAMPLES,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        command.add_arguments(sub.add_parser(name, help=command.help, description=command.help,
                                             epilog=getattr(command, "example", None),
                                             formatter_class=argparse.RawDescriptionHelpFormatter))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    import optuna

    from sweep import errors

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line per describe/ask
    prog = f"sweep {args.command}"
    try:
        return COMMANDS[args.command].run(args)
    except UserError as exc:
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `sweep status X | head`: the reader has all it wants
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 0
    except Exception as exc:
        problem = errors.storage_problem(exc)
        if problem is not None:
            storage = getattr(args, "storage", None)
            if storage and storage not in problem and not getattr(exc, "filename", None):  # e.g. an S3 endpoint
                problem = f"storage {storage}: {problem}"
            then = errors.resume_command()
            place = "--out" if getattr(args, "out", None) else "--storage" if hasattr(args, "storage") else "path"
            fix = f"; fix the storage, then continue with `{then}`" if then else f"; fix it, or choose another {place}"
            print(f"{prog}: error: {_one_line(problem)}{fix}", file=sys.stderr)
            return 2
        log = errors.write_bug(exc, argv)
        print(f"{prog}: internal error ({type(exc).__name__}: {_one_line(exc)[:200]}); this is a bug, not your "
              f"input: the traceback is in {log}", file=sys.stderr)
        return 1


def entry() -> None:
    """The `sweep` command: `main`, then a quick exit once everything is on disk and printed.

    The atexit handlers still run (Ray's shutdown, logging's flush); what is skipped is the interpreter's teardown of
    torch's, Ray's and Optuna's modules, about 1.4 s after the answer that nobody needs to wait for. A live
    non-daemon thread (none is left here today) gets the ordinary exit, which waits for it.
    """
    code = main()
    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon and t.is_alive() for t in threading.enumerate()):
        sys.exit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # `sweep status X | head`: the reader has all it wants
        pass
    os._exit(code)


def _one_line(what: object) -> str:
    text = str(what).strip()
    return " ".join(text.split()) if text else type(what).__name__


if __name__ == "__main__":
    entry()
