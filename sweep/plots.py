"""Figures for the sweep report: pure functions from trial records to PNG bytes.

The ranking table gives one number per strategy; these figures show what stands behind it: the spread of scores,
how the hardness knobs mattered, where ASHA cut trials short, which hyperparameters explain the score and what the
compute went to. Trials stop at different epochs, so every figure keeps a score's budget visible: a score after 2
epochs is not a final one and must not read as one.

Only matplotlib's object-oriented API with the Agg canvas is used (no pyplot global state), so figures can be built
in any thread or process, and the same records always give the same bytes.
"""

from __future__ import annotations

import io
import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from sweep.ranking import TrialRecord, finite, rank
from trainables.strategies import KNOBS
from trainables.tasks import TASKS

DPI = 100
WIDTH = 10.0  # inches: wide enough for four small panels, narrow enough for a report column
MIN_IMPORTANCE_TRIALS = 4
# Below this many scored trials per strategy, fANOVA cannot tell a strategy's effect from its own tuning's (with one
# trial each, "strategy" explains whatever the nuisance parameters did): the importance is left out, and says why.
MIN_TRIALS_PER_STRATEGY = 5
MAX_KNOB_PANELS = 12  # past this, lr and temperature leave the knobs figure (they are in the importance one)
NUISANCE = ("lr", "temperature")  # tuned under every strategy, on a log scale
INACTIVE = "(inactive)"
LABEL_CHARS = 28
TICK_CHARS = 12


@dataclass(frozen=True)
class ReportFigure:
    name: str  # file stem: scores, knobs, curves, importance, compute
    title: str
    caption: str  # what is plotted and how to read it
    png: bytes


@dataclass(frozen=True)
class Importance:
    """fANOVA importances at one epoch that every scored trial reached, so all targets share a budget."""

    epoch: int
    trials: int
    importances: dict[str, float]  # parameter -> share of the explained variance, summing to 1, largest first
    conditional: tuple[str, ...] = ()  # parameters some trials lack, imputed with a sentinel value or "(inactive)"
    omitted: str = ""  # why it was not computed (then ``importances`` is empty)


@dataclass(frozen=True)
class _Sweep:
    """What every plot needs, computed once so that order and colours agree across figures."""

    records: list[TrialRecord]
    metric: str
    mode: str
    epochs: int
    rungs: tuple[int, ...]
    order: list[str]  # strategies, best first, as the ranking orders them
    colours: dict[str, Any]

    @property
    def better(self) -> str:
        return "higher" if self.mode == "max" else "lower"

    def of(self, strategy: str) -> list[TrialRecord]:
        return [r for r in self.records if _strategy(r) == strategy]


def report_figures(
    records: Iterable[TrialRecord], metric: str, mode: str, epochs: int, rungs: Sequence[int]
) -> list[ReportFigure]:
    """The report's figures, in reading order; a figure with nothing to show is left out rather than drawn empty."""
    records = list(records)
    if not records:
        return []
    order = [row.strategy for row in rank(records, metric, mode, epochs)]
    sweep = _Sweep(
        records=records,
        metric=metric,
        mode=mode,
        epochs=int(epochs or 0),
        rungs=tuple(int(r) for r in rungs or ()),
        order=order,
        colours=strategy_colours(order),
    )
    figures = (_scores(sweep), _knobs(sweep), _curves(sweep), _importance(sweep), _compute(sweep))
    return [f for f in figures if f is not None]


def strategy_colours(strategies: Iterable[str]) -> dict[str, Any]:
    """One colour per strategy, fixed by the registry's order (the tasks', in turn), so a strategy keeps its colour
    from sweep to sweep."""
    known = list(dict.fromkeys(name for task in TASKS.values() for name in task.strategies))
    tab10, extra = colormaps["tab10"].colors, colormaps["Dark2"].colors
    unknown = sorted({s for s in strategies if s not in known})
    colours = {s: tab10[i % len(tab10)] for i, s in enumerate(known)}
    colours.update({s: extra[i % len(extra)] for i, s in enumerate(unknown)})
    return {s: colours[s] for s in strategies}


# --- 1. scores ----------------------------------------------------------------------------------------------------


def _scores(sweep: _Sweep) -> ReportFigure | None:
    if not any(_score(r, sweep.metric) is not None for r in sweep.records):
        return None
    n = len(sweep.order)
    fig = _figure(WIDTH * 0.9, max(2.6, 0.5 * n + 1.4))
    ax = fig.add_subplot()
    best = {row.strategy: row.best for row in rank(sweep.records, sweep.metric, sweep.mode, sweep.epochs)}
    labels = []
    for i, strategy in enumerate(sweep.order):
        y, colour, recs = n - 1 - i, sweep.colours[strategy], sweep.of(strategy)
        scored = [(r, s) for r in recs if (s := _score(r, sweep.metric)) is not None]
        for j, (rec, score) in enumerate(scored):
            dy = _spread(j, len(scored), 0.25)
            full = _full(rec, sweep.epochs)
            ax.scatter(
                score, y + dy, s=40, facecolors=colour if full else "none", edgecolors=colour, linewidths=1.4, zorder=3
            )
            if best[strategy] is rec:  # drawn like the dots: filled only at the full budget
                ax.scatter(score, y + dy, marker="*", s=220, facecolors=colour if full else "white",
                           edgecolors="black" if full else colour, linewidths=1.2, zorder=4)
        labels.append(_row_label(strategy, recs, sweep.metric))
    ax.set_yticks(range(n), labels[::-1])
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_xlabel(f"{sweep.metric}, last reported value ({sweep.better} is better)")
    ax.grid(axis="x", alpha=0.3)
    handles = [
        Line2D([], [], ls="", marker="o", color="0.3", label=f"full budget ({sweep.epochs} epochs)"),
        Line2D([], [], ls="", marker="o", mfc="none", color="0.3", label="stopped early or unfinished"),
        Line2D([], [], ls="", marker="*", ms=12, color="0.3", mec="black", label="the ranking's pick"),
        Line2D([], [], ls="", marker="*", ms=12, mfc="white", mec="0.3", label="its pick, below full budget"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=4, frameon=False)
    caption = (
        f"Each dot is one trial's last reported {sweep.metric}, one row per strategy, best-ranked on top; hollow dots "
        f"stopped before {sweep.epochs} epochs, so their scores are at a smaller budget and not comparable with "
        "filled ones. The star is the trial the ranking picks (full budget first), hollow when even the pick did not "
        "reach the full budget; failed trials without a score are only counted in the row label."
    )
    return ReportFigure("scores", "Score per strategy", caption, _png(fig))


def _row_label(strategy: str, recs: list[TrialRecord], metric: str) -> str:
    failed = sum(1 for r in recs if r.status == "failed")
    unscored = sum(1 for r in recs if r.status != "failed" and _score(r, metric) is None)
    parts = [f"{len(recs)} trial{'s' if len(recs) != 1 else ''}"]
    parts += [f"{failed} failed"] if failed else []
    parts += [f"{unscored} without a score"] if unscored else []
    return f"{_short(strategy, 18)} ({', '.join(parts)})"


# --- 2. knobs -----------------------------------------------------------------------------------------------------


def _knobs(sweep: _Sweep) -> ReportFigure | None:
    hardness = _varying_pairs(sweep, list(KNOBS))
    if not hardness:
        return None
    nuisance = _varying_pairs(sweep, list(NUISANCE))
    with_nuisance = len(hardness) + len(nuisance) <= MAX_KNOB_PANELS
    pairs = hardness + nuisance if with_nuisance else hardness
    ncols = min(4, len(pairs))
    nrows = math.ceil(len(pairs) / ncols)
    fig = _figure(WIDTH if ncols >= 3 else 4.0 * ncols + 1.5, 2.6 * nrows + 0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    top = max([sweep.epochs, 1] + [r.reached for r in sweep.records])
    norm, cmap = Normalize(vmin=1, vmax=top), colormaps["viridis"]
    for ax, (strategy, knob, points) in zip(axes, pairs, strict=False):
        _knob_panel(ax, knob, points, norm, cmap)
        ax.set_title(f"{_short(strategy, 18)}: {_short(knob, 14)}", fontsize=9, color=sweep.colours[strategy])
    for ax in axes[len(pairs) :]:
        ax.set_visible(False)
    for ax in axes[::ncols]:
        ax.set_ylabel(sweep.metric)
    fig.colorbar(
        ScalarMappable(norm=norm, cmap=cmap),
        ax=list(axes[: len(pairs)]),
        shrink=min(0.9, 0.3 * nrows + 0.3),
        label=f"epochs reached (of {sweep.epochs})",
    )
    knobs = sorted({k for _, k, _ in hardness})
    if not nuisance:
        extra = ""
    elif with_nuisance:
        extra = " lr and temperature (log scale) are shown too, as they were tuned alongside."
    else:
        extra = " lr and temperature are left out to keep the panels readable; see the importance figure."
    caption = (
        f"Last reported {sweep.metric} against each hardness knob that varied within a strategy "
        f"({', '.join(knobs)}), one panel per strategy and knob. Colour is the epochs the trial reached: dark points "
        f"stopped early and their scores are at a smaller budget, not final ones.{extra}"
    )
    return ReportFigure("knobs", "Score against the strategies' knobs", caption, _png(fig))


def _varying_pairs(sweep: _Sweep, names: list[str]) -> list[tuple[str, str, list[tuple[Any, float, int]]]]:
    """(strategy, knob, [(value, score, epochs)]) for each knob that takes two or more values under a strategy."""
    pairs = []
    for strategy in sweep.order:
        scored = [(r, s) for r in sweep.of(strategy) if (s := _score(r, sweep.metric)) is not None]
        for name in names:
            points = [(r.config[name], s, r.reached) for r, s in scored if r.config.get(name) is not None]
            if len({_hashable(v) for v, _, _ in points}) >= 2:
                pairs.append((strategy, name, points))
    return pairs


def _knob_panel(ax: Any, knob: str, points: list[tuple[Any, float, int]], norm: Normalize, cmap: Any) -> None:
    log = False
    colours = [cmap(norm(e)) for _, _, e in points]
    scores = [s for _, s, _ in points]
    if all(_is_number(v) for v, _, _ in points):
        xs = [float(v) for v, _, _ in points]
        log = knob in NUISANCE and min(xs) > 0  # sampled log-uniform: plot log10 on a linear axis, label plainly
        ax.scatter(
            [math.log10(x) for x in xs] if log else xs, scores, c=colours, s=28, edgecolors="0.2", linewidths=0.4
        )
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{10**x:.2g}" if log else f"{x:.3g}"))
    else:
        categories = sorted({str(v) for v, _, _ in points})
        xs, seen = [], {c: 0 for c in categories}
        counts = {c: sum(1 for v, _, _ in points if str(v) == c) for c in categories}
        for v, _, _ in points:
            c = str(v)
            xs.append(categories.index(c) + _spread(seen[c], counts[c], 0.2))
            seen[c] += 1
        ax.scatter(xs, scores, c=colours, s=28, edgecolors="0.2", linewidths=0.4)
        ax.set_xticks(range(len(categories)), [_short(c, TICK_CHARS) for c in categories])
        ax.set_xlim(-0.5, len(categories) - 0.5)
    ax.set_xlabel(_short(knob, LABEL_CHARS) + (" (log scale)" if log else ""), fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)


# --- 3. learning curves -------------------------------------------------------------------------------------------


def _curves(sweep: _Sweep) -> ReportFigure | None:
    strategies = [s for s in sweep.order if any(_series(r, sweep.metric) for r in sweep.of(s))]
    if not strategies:
        return None
    ncols = min(3, len(strategies))
    nrows = math.ceil(len(strategies) / ncols)
    fig = _figure(WIDTH if ncols >= 2 else WIDTH * 0.8, 2.8 * nrows + 0.8)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True).ravel()
    top = max([sweep.epochs, 1] + [r.reached for r in sweep.records])
    present = set()
    for ax, strategy in zip(axes, strategies, strict=False):
        colour, recs = sweep.colours[strategy], sweep.of(strategy)
        for rec in recs:
            points = _series(rec, sweep.metric)
            if not points:
                continue
            ax.plot([e for e, _ in points], [v for _, v in points], color=colour, alpha=0.55, lw=1.2)
            end = _ending(rec, sweep.epochs)
            present.add(end)
            ax.plot(*points[-1], ls="", zorder=3, **_END_STYLE[end](colour))
        for rung in sweep.rungs:
            if 0 < rung <= top:
                ax.axvline(rung, color="0.55", lw=0.9, ls=":", zorder=0)
        ax.set_title(_curve_title(strategy, recs), fontsize=9, color=colour)
        ax.set_xlim(0.5, top + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.25)
        ax.tick_params(labelsize=8)
    for ax in axes[len(strategies) :]:
        ax.set_visible(False)
    for ax in axes[::ncols]:
        ax.set_ylabel(sweep.metric)
    for ax in axes[len(strategies) - ncols : len(strategies)]:  # the lowest panel of each column, even above a gap
        ax.xaxis.set_tick_params(labelbottom=True)
        ax.set_xlabel("epoch")
    handles = [
        Line2D([], [], ls="", label=_END_LABEL[end], **_END_STYLE[end]("0.3")) for end in _END_STYLE if end in present
    ]
    if any(0 < r <= top for r in sweep.rungs):
        handles.append(Line2D([], [], color="0.55", lw=0.9, ls=":", label="ASHA rung"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
    rungs = ", ".join(str(r) for r in sweep.rungs)
    caption = (
        f"{sweep.metric} per epoch for every trial, one panel per strategy (best-ranked first). An x marks where the "
        f"ASHA scheduler stopped a trial, a red triangle a failed one, a filled dot one that ran all "
        f"{sweep.epochs} epochs and a hollow dot one stopped otherwise or still running"
        + (
            f"; dotted lines are the ASHA rungs (epochs {rungs}), where trials are compared and the worse stopped."
            if rungs
            else "."
        )
    )
    return ReportFigure("curves", "Learning curves and ASHA stops", caption, _png(fig))


def _ending(rec: TrialRecord, epochs: int) -> str:
    if rec.status == "failed":
        return "failed"
    if rec.status == "stopped" and "scheduler" in rec.reason.lower():
        return "asha"
    return "full" if _full(rec, epochs) else "other"


_END_STYLE = {
    "full": lambda c: {"marker": "o", "ms": 6, "color": c, "mec": c},
    "asha": lambda c: {"marker": "x", "ms": 7, "mew": 1.8, "color": "black"},
    "failed": lambda c: {"marker": "v", "ms": 8, "color": "crimson", "mec": "black", "mew": 0.6},
    "other": lambda c: {"marker": "o", "ms": 6, "mfc": "none", "color": c, "mec": c},
}
_END_LABEL = {
    "full": "full budget",
    "asha": "stopped by ASHA",
    "failed": "failed",
    "other": "stopped otherwise or running",
}


def _curve_title(strategy: str, recs: list[TrialRecord]) -> str:
    asha = sum(1 for r in recs if r.status == "stopped" and "scheduler" in r.reason.lower())
    failed = sum(1 for r in recs if r.status == "failed")
    extra = "".join([f", {asha} ASHA-stopped" if asha else "", f", {failed} failed" if failed else ""])
    return f"{_short(strategy, 18)} ({len(recs)} trial{'s' if len(recs) != 1 else ''}{extra})"


# --- 4. importance ------------------------------------------------------------------------------------------------


def param_importance(records: Iterable[TrialRecord], metric: str, mode: str, *, seed: int = 0) -> Importance | None:
    """fANOVA importance of strategy, lr, temperature and the varying knobs, on scores at a shared epoch.

    Trials stop at different epochs, and a score after 2 epochs is not comparable with one after 12, so the target
    is each trial's score at the largest epoch at which every trial with a finite score (failed ones aside) has one.
    Knobs that only some strategies have are imputed (a sentinel just below the observed range, or the choice
    "(inactive)"), so fANOVA sees every trial. lr and temperature enter as log10, the scale they are sampled on.
    ``mode`` does not change the importances (variance is blind to the sign) and is accepted for symmetry with the
    ranking. None when fewer than 4 trials are scored, fewer than 2 parameters vary, or the target does not vary.
    """
    del mode
    # Failed trials are left out: one collapse at epoch 1 would pull the shared epoch down to 1 for everyone.
    scored = [r for r in records if r.status != "failed" and finite(r.last.get(metric))]
    if len(scored) < MIN_IMPORTANCE_TRIALS:
        return None
    by_epoch = [_by_epoch(r, metric) for r in scored]
    common = set.intersection(*(set(values) for values in by_epoch))
    if not common:
        return None
    epoch = max(common)
    targets = [values[epoch] for values in by_epoch]
    if max(targets) == min(targets):
        return None
    strategies = {_strategy(r) for r in scored}
    if len(strategies) > 1 and len(scored) < MIN_TRIALS_PER_STRATEGY * len(strategies):
        return Importance(epoch, len(scored), {}, omitted=(
            f"not computed: {len(scored)} scored trials over {len(strategies)} strategies "
            f"({len(scored) / len(strategies):.1f} each); with fewer than {MIN_TRIALS_PER_STRATEGY} per strategy, "
            "fANOVA cannot tell a strategy's effect from its own tuning's"))
    columns = {"strategy": [_strategy(r) for r in scored]}
    columns.update({name: [r.config.get(name) for r in scored] for name in (*NUISANCE, *KNOBS)})
    encoded = {name: enc for name, values in columns.items() if (enc := _encode(name, values)) is not None}
    if len(encoded) < 2:
        return None
    distributions = {name: dist for name, (dist, _) in encoded.items()}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # silence "A new study created in memory"
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        study.add_trials(
            [
                optuna.trial.create_trial(
                    params={name: column[i] for name, (_, column) in encoded.items()},
                    distributions=distributions,
                    value=target,
                )
                for i, target in enumerate(targets)
            ]
        )
        raw = optuna.importance.FanovaImportanceEvaluator(seed=seed).evaluate(study, params=list(distributions))
    finally:
        optuna.logging.set_verbosity(verbosity)
    raw = {name: (v if finite(v) and v > 0 else 0.0) for name, v in raw.items()}
    total = sum(raw.values())
    if total <= 0:
        return None
    shares = sorted(((v / total, name) for name, v in raw.items()), key=lambda p: (-p[0], p[1]))
    conditional = tuple(name for name, values in columns.items() if name in encoded and None in values)
    return Importance(epoch, len(scored), {name: share for share, name in shares}, conditional)


def _by_epoch(rec: TrialRecord, metric: str) -> dict[int, float]:
    """The trial's finite scores by epoch (a repeated epoch, as after a resume, keeps its last report)."""
    return {
        int(row["epoch"]): float(row[metric])
        for row in rec.history
        if finite(row.get("epoch")) and finite(row.get(metric))
    }


def _encode(name: str, values: list[Any]) -> tuple[Any, list[Any]] | None:
    """An Optuna distribution and the imputed column for one parameter, or None if it does not vary."""
    active = [v for v in values if v is not None]
    if len({_hashable(v) for v in active}) < 2:
        return None
    if all(_is_number(v) for v in active):
        log = name in NUISANCE and min(float(v) for v in active) > 0
        xs = [math.log10(float(v)) if log else float(v) for v in active]
        low, high = min(xs), max(xs)
        sentinel = low - 0.1 * (high - low)
        it = iter(xs)
        column = [next(it) if v is not None else sentinel for v in values]
        low = sentinel if len(active) < len(values) else low
        return optuna.distributions.FloatDistribution(low, high), column
    choices = sorted({str(v) for v in active}) + ([INACTIVE] if len(active) < len(values) else [])
    column = [str(v) if v is not None else INACTIVE for v in values]
    return optuna.distributions.CategoricalDistribution(choices), column


def _importance(sweep: _Sweep) -> ReportFigure | None:
    result = param_importance(sweep.records, sweep.metric, sweep.mode)
    if result is None or result.omitted:
        return None
    names = list(result.importances)
    fig = _figure(WIDTH * 0.8, max(2.4, 0.42 * len(names) + 1.3))
    ax = fig.add_subplot()
    ys = range(len(names) - 1, -1, -1)  # most important on top
    shares = [result.importances[n] for n in names]
    ax.barh(list(ys), shares, color="steelblue", height=0.6)
    labels = [_short(n, LABEL_CHARS) + (" *" if n in result.conditional else "") for n in names]
    ax.set_yticks(list(ys), labels)
    for y, share in zip(ys, shares, strict=True):
        ax.text(share, y, f" {share:.0%}", va="center", fontsize=8)
    ax.set_xlim(0, max(shares) * 1.15)
    ax.set_xlabel(f"share of explained variance of {sweep.metric} at epoch {result.epoch}")
    ax.grid(axis="x", alpha=0.3)
    starred = (
        " Parameters marked * exist only under some strategies; trials without them were given a sentinel value."
        if result.conditional
        else ""
    )
    early = (
        f"; it says what explains early scores, which need not be what wins at {sweep.epochs} epochs"
        if result.epoch < sweep.epochs
        else ""
    )
    caption = (
        f"fANOVA importance of each hyperparameter (Optuna's evaluator), fitted to {result.trials} trials' "
        f"{sweep.metric} at epoch {result.epoch}, the last epoch every scored trial reached, so the scores share a "
        f"budget{early}. With few trials the estimate is rough.{starred}"
    )
    return ReportFigure("importance", "Hyperparameter importance", caption, _png(fig))


# --- 5. compute ---------------------------------------------------------------------------------------------------


def _compute(sweep: _Sweep) -> ReportFigure | None:
    full, short, train, evals = {}, {}, {}, {}
    for strategy in sweep.order:
        recs = sweep.of(strategy)
        full[strategy] = sum(r.reached for r in recs if _full(r, sweep.epochs))
        short[strategy] = sum(r.reached for r in recs if not _full(r, sweep.epochs))
        train[strategy] = sum(_seconds(r, "time_train_s") for r in recs)
        evals[strategy] = sum(_seconds(r, "time_eval_s") for r in recs)
    if sum(full.values()) + sum(short.values()) <= 0:
        return None
    timed = sum(train.values()) + sum(evals.values()) > 0
    n = len(sweep.order)
    fig = _figure(WIDTH, max(2.6, 0.45 * n + 1.6))
    axes = fig.subplots(1, 2 if timed else 1, squeeze=False, sharey=True).ravel()
    ys = list(range(n - 1, -1, -1))
    colours = [sweep.colours[s] for s in sweep.order]
    _stacked(
        axes[0],
        ys,
        [full[s] for s in sweep.order],
        [short[s] for s in sweep.order],
        colours,
        ("reached full budget", "stopped early, failed or running"),
        "{:.0f}",
    )
    axes[0].set_xlabel("trial-epochs")
    axes[0].set_yticks(ys, [_short(s, 18) for s in sweep.order])
    if timed:
        _stacked(
            axes[1],
            ys,
            [train[s] for s in sweep.order],
            [evals[s] for s in sweep.order],
            colours,
            ("training", "evaluation"),
            "{:.0f} s",
        )
        axes[1].set_xlabel("seconds (sum over trials and epochs)")
    seconds = (
        " Right: seconds spent, training (solid) and evaluation (hatched), summed over every reported epoch."
        if timed
        else " No timings were recorded."
    )
    caption = (
        "Where the compute went. Left: epochs trained per strategy, solid for trials that reached the full "
        f"{sweep.epochs} epochs, hatched for trials stopped early, failed or still running; a strategy that "
        f"ASHA stopped often got less compute, which also makes its best score less certain.{seconds}"
    )
    return ReportFigure("compute", "Compute per strategy", caption, _png(fig))


def _stacked(
    ax: Any,
    ys: list[int],
    solid: list[float],
    hatched: list[float],
    colours: list[Any],
    labels: tuple[str, str],
    fmt: str,
) -> None:
    ax.barh(ys, solid, color=colours, height=0.6, edgecolor="0.2", linewidth=0.5)
    ax.barh(ys, hatched, left=solid, color=colours, alpha=0.35, hatch="//", height=0.6, edgecolor="0.2", linewidth=0.5)
    totals = [a + b for a, b in zip(solid, hatched, strict=True)]
    for y, total in zip(ys, totals, strict=True):
        ax.text(total, y, " " + fmt.format(total), va="center", fontsize=8)
    ax.set_xlim(0, max(max(totals), 1) * 1.18)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(
        handles=[
            Patch(facecolor="0.55", edgecolor="0.2", label=labels[0]),
            Patch(facecolor="0.55", alpha=0.35, hatch="//", edgecolor="0.2", label=labels[1]),
        ],
        loc="lower left",
        bbox_to_anchor=(0, 1),
        ncols=2,
        fontsize=8,
        frameon=False,
        borderaxespad=0.2,
    )


# --- shared helpers -----------------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _png(fig: Figure) -> bytes:
    """PNG bytes without a software/version stamp, so the same records give the same file."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _strategy(rec: TrialRecord) -> str:
    return str(rec.config.get("strategy", "?"))


def _score(rec: TrialRecord, metric: str) -> float | None:
    """The trial's score: its last reported value (None when missing or not finite)."""
    value = rec.last.get(metric)
    return float(value) if finite(value) else None


def _series(rec: TrialRecord, metric: str) -> list[tuple[int, float]]:
    return [
        (int(row["epoch"]), float(row[metric]))
        for row in rec.history
        if finite(row.get("epoch")) and finite(row.get(metric))
    ]


def _seconds(rec: TrialRecord, key: str) -> float:
    return sum(float(row[key]) for row in rec.history if finite(row.get(key)) and row[key] > 0)


def _full(rec: TrialRecord, epochs: int) -> bool:
    return rec.reached >= epochs


def _spread(i: int, n: int, width: float) -> float:
    """Evenly spaced offsets in [-width, width]: overlapping points separate, and the layout is reproducible."""
    return 0.0 if n <= 1 else -width + 2 * width * i / (n - 1)


def _is_number(value: Any) -> bool:
    """A finite real that is not a bool: what can sit on an axis or in a FloatDistribution."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _hashable(value: Any) -> Any:
    return float(value) if _is_number(value) else str(value)


def _short(text: str, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- confirmation -------------------------------------------------------------------------------------------------


def confirm_figure(answer: Any) -> ReportFigure:
    """The race (``sweep confirm``): each strategy's validation score per seed, what the race decided on, and the
    survivors' test scores, each with its mean and 95% interval."""
    entries = list(answer.entries)
    colours = strategy_colours([e.strategy for e in entries])
    fig = _figure(WIDTH, max(2.6, 0.45 * len(entries) + 1.5))
    val_ax, test_ax = fig.subplots(1, 2, sharey=True, width_ratios=(3, 2))
    seeds = list(answer.seeds)
    for y, e in zip(range(len(entries) - 1, -1, -1), entries, strict=True):
        colour, alive = colours[e.strategy], e.status != "dropped"
        for ax, scores, interval in ((val_ax, e.val_scores, e.val), (test_ax, e.test_scores, e.test)):
            if interval is None or not interval.n:
                continue
            if finite(interval.low):
                ax.plot([interval.low, interval.high], [y, y], color=colour, lw=2.5, alpha=0.45 if alive else 0.2,
                        solid_capstyle="butt")
            ax.plot([interval.mean], [y], marker="|", ms=16, mew=2.5, color=colour, alpha=1.0 if alive else 0.4)
            for k, score in enumerate(scores):
                ax.plot([score], [y + _spread(k, max(len(seeds), 1), 0.3)], marker="o", ls="none", ms=4,
                        mfc=colour if alive else "white", mec=colour, mew=0.8, alpha=0.8)
    labels = [f"{_short(e.strategy, LABEL_CHARS)}" + ("" if e.drop is None else f" (out after {e.drop.after_round})")
              for e in entries]
    val_ax.set_yticks(list(range(len(entries) - 1, -1, -1)), labels)
    better = "higher" if answer.mode == "max" else "lower"
    val_ax.set_xlabel(f"validation {answer.metric} ({better} is better)")
    test_ax.set_xlabel(f"test {answer.metric}, survivors only")
    for ax in (val_ax, test_ax):
        ax.grid(axis="x", alpha=0.3)
    caption = (
        f"The confirmation race over seeds {', '.join(map(str, seeds))} (the same seeds, so the same data split and "
        "batch order, for every strategy in a round). Left: one dot per seed of the validation score the race "
        "decided on, the tick is the mean and the bar its 95% interval (Student's t); hollow dots are strategies "
        "dropped as significantly worse than the best, after the round in brackets. Right: the test scores of the "
        "strategies still in the race, which never chose anything."
    )
    return ReportFigure("confirm", f"Confirmation race: {answer.metric} per seed", caption, _png(fig))


# --- a knob against several scores (the seed paper's figure) -----------------------------------------------------


def levels_figure(
    records: Iterable[TrialRecord], metrics: Sequence[str], knob: str, epochs: int
) -> ReportFigure | None:
    """Each score in ``metrics`` against ``knob``, one panel per score: trials that have the knob as points coloured
    by the epochs they reached; trials without it (a baseline strategy) as a shaded band of their scores."""
    records = [r for r in records if r.status != "failed"]
    with_knob = [r for r in records if _is_number(r.config.get(knob))]
    if not with_knob:
        return None
    fig = _figure(WIDTH, 3.2)
    axes = fig.subplots(1, len(metrics), squeeze=False, sharey=True).ravel()
    norm, cmap = Normalize(1, max(epochs, 2)), colormaps["viridis"]
    for ax, metric in zip(axes, metrics, strict=True):
        points = [(float(r.config[knob]), r.last.get(metric), r.reached) for r in with_knob]
        points = [(x, float(y), e) for x, y, e in points if finite(y)]
        for strategy in sorted({_strategy(r) for r in records if r not in with_knob}):
            ys = [float(r.last[metric]) for r in records if _strategy(r) == strategy and r not in with_knob
                  and finite(r.last.get(metric))]
            if ys:
                ax.axhspan(min(ys), max(ys), color="grey", alpha=0.2, lw=0)
                ax.axhline(max(ys), color="grey", lw=0.8, ls="--", label=f"{_short(strategy, 14)} (best, range)")
        if points:
            xs, ys, es = zip(*points, strict=True)
            ax.scatter(xs, ys, c=[cmap(norm(e)) for e in es], s=28, edgecolors="black", linewidths=0.4)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel(knob)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation score")
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7, loc="lower left", frameon=False)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=list(axes), shrink=0.85,
                 label=f"epochs reached (of {epochs})")
    caption = (
        f"Each trial's last validation score at each level against {knob}; colour is the epochs it reached (dark "
        "points stopped early, so their scores are at a smaller budget). The grey band spans the scores of the "
        "trials without the knob, and the dashed line is their best."
    )
    return ReportFigure("levels", f"Scores per level against {knob}", caption, _png(fig))


# --- Optuna's standard plots -----------------------------------------------------------------------------------

OPTUNA_PLOTS = (  # (file name, title, what it adds)
    ("optuna_history", "Optimization history",
     "each finished trial's final value in the order it was asked, and the best so far (COMPLETE trials only)"),
    ("optuna_intermediate", "Intermediate values",
     "every trial's score per epoch, pruned ones included: where ASHA stopped them"),
    ("optuna_parallel", "Parallel coordinates",
     "each finished trial's parameters and final value, one line per trial"),
    ("optuna_timeline", "Timeline", "when each trial ran and how it ended"),
)


def optuna_figures(study: optuna.Study, metric: str) -> list[ReportFigure]:
    """Optuna's own matplotlib plots of the study (as optuna-dashboard shows them), each where it has something to
    show: history with two finished trials, intermediate values with pruned or intermediate data, parallel
    coordinates with five finished trials, the timeline always. A plot Optuna cannot draw is left out."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")  # Optuna's plots go through pyplot: never a display
    from matplotlib import pyplot as plt
    from optuna.visualization import matplotlib as ov

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    draw = {
        "optuna_history": (len(complete) >= 2, lambda: ov.plot_optimization_history(study, target_name=metric)),
        "optuna_intermediate": (any(t.intermediate_values for t in trials),
                                lambda: ov.plot_intermediate_values(study)),
        "optuna_parallel": (len(complete) >= 5, lambda: ov.plot_parallel_coordinate(study, target_name=metric)),
        "optuna_timeline": (bool(trials), lambda: ov.plot_timeline(study)),
    }
    out = []
    for name, title, what in OPTUNA_PLOTS:
        wanted, plot = draw[name]
        if not wanted:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            try:
                ax = plot()
            except (ValueError, TypeError, KeyError, IndexError, RuntimeError):
                continue
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.set_size_inches(WIDTH, 3.6)
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
            plt.close(fig)
        out.append(ReportFigure(name, title, f"Optuna's {title.lower()}: {what}.", buf.getvalue()))
    return out


def optuna_importance(study: optuna.Study, seed: int = 0) -> dict[str, float] | None:
    """What Optuna itself (and optuna-dashboard) says of the study's parameters: fANOVA on the COMPLETE trials'
    final values, over the parameters every one of them has; None when it cannot say (fewer than two such trials,
    or nothing varies)."""
    try:
        return dict(optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed)))
    except (ValueError, RuntimeError, ZeroDivisionError):
        return None
