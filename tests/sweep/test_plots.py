"""The report's figures from hand-built trial records: no Ray, no training, synthetic histories."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from matplotlib.image import imread

from sweep.plots import Importance, ReportFigure, param_importance, report_figures, strategy_colours
from sweep.ranking import TrialRecord

METRIC, EPOCHS, RUNGS = "linear_acc", 12, (2, 4, 8)
ALL_FIGURES = {"scores", "knobs", "curves", "importance", "compute"}


def _record(number, strategy, scores, *, status=None, reason="", stop_reason="", **knobs):
    """A trial whose metric took ``scores`` at epochs 1.., with timings; status follows the epochs reached."""
    history = [
        {
            "epoch": e,
            METRIC: s,
            "loss": 2.0 / e,
            "knn_acc": s,
            "time_train_s": 1.0,
            "time_eval_s": 0.25,
            "stop_reason": "",
        }
        for e, s in enumerate(scores, 1)
    ]
    if history and stop_reason:
        history[-1]["stop_reason"] = stop_reason
    if status is None:
        status = "finished" if len(scores) >= EPOCHS else "stopped"
        reason = reason or ("" if status == "finished" else f"stopped early by the scheduler at epoch {len(scores)}")
    config = {"strategy": strategy, "epochs": EPOCHS, "dataset": "digits", "seed": 0, **knobs}
    return TrialRecord(number=number, config=config, history=history, status=status, reason=reason)


def _curve(final, epochs):
    return [final * (1 - 0.5**e) for e in range(1, epochs + 1)]


def _sweep():
    """Three strategies with knobs, ASHA stops at the rungs, one failure with an empty history, one NaN."""
    return [
        _record(0, "infonce", _curve(0.80, 12), lr=1e-3, temperature=0.5),
        _record(1, "infonce", _curve(0.60, 2), lr=3e-3, temperature=0.2),
        _record(2, "hard", _curve(0.85, 12), lr=1e-3, temperature=0.5, tau_plus=0.1, beta=1.0),
        _record(3, "hard", _curve(0.70, 4), lr=2e-3, temperature=0.3, tau_plus=0.05, beta=2.0),
        _record(4, "hard", [], status="failed", reason="non-finite loss at epoch 1", lr=9e-3, tau_plus=0.0, beta=3.0),
        _record(5, "semi_hard", _curve(0.75, 8), lr=5e-4, temperature=0.7, variant="band", margin=0.2),
        _record(6, "semi_hard", _curve(0.78, 12), lr=7e-4, temperature=0.4, variant="nearest", margin=0.4),
        _record(
            7,
            "semi_hard",
            [0.3, math.nan],
            status="failed",
            reason="non-finite loss",
            lr=1e-2,
            temperature=0.1,
            variant="band",
            margin=0.1,
            stop_reason="non-finite loss",
        ),
    ]


def _pixels(fig: ReportFigure) -> np.ndarray:
    assert fig.png[:8] == b"\x89PNG\r\n\x1a\n", fig.name
    return imread(io.BytesIO(fig.png), format="png")


def _assert_drawn(figures):
    for fig in figures:
        pixels = _pixels(fig)
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 300, fig.name
        assert pixels.std() > 0, f"{fig.name} is blank"
        assert fig.title and fig.caption and len(fig.caption) < 600, fig.name


@pytest.fixture(scope="module")
def figures():
    """The full sweep's figures, drawn once for the tests that only read them."""
    return report_figures(_sweep(), METRIC, "max", EPOCHS, RUNGS)


@pytest.fixture(scope="module")
def lr_driven():
    return param_importance(_lr_driven(), METRIC, "max")


def test_a_sweep_with_knobs_gets_every_figure_each_a_valid_non_blank_png(figures):
    assert [f.name for f in figures] == ["scores", "knobs", "curves", "compute"]  # 3 trials each: no importance
    _assert_drawn(figures)
    width = _pixels(figures[0]).shape[1]
    assert 700 <= width <= 1100  # about 8-10 inches at 100 dpi


def test_figures_are_deterministic():
    records = _sweep()[:4]  # small, yet every figure but the importance (two trials per strategy)
    first, second = (report_figures(records, METRIC, "max", EPOCHS, RUNGS) for _ in range(2))
    assert {f.name for f in first} == ALL_FIGURES - {"importance"}
    assert [f.png for f in first] == [f.png for f in second]


def test_knobs_figure_is_skipped_when_no_knob_varies_within_a_strategy():
    records = [
        _record(0, "infonce", _curve(0.8, 12), lr=1e-3, temperature=0.5),
        _record(1, "infonce", _curve(0.7, 4), lr=3e-3, temperature=0.2),
        _record(2, "hard", _curve(0.9, 12), lr=1e-3, temperature=0.5, tau_plus=0.1, beta=1.0),
        _record(3, "hard", _curve(0.6, 2), lr=2e-3, temperature=0.3, tau_plus=0.1, beta=1.0),
    ]
    names = {f.name for f in report_figures(records, METRIC, "max", EPOCHS, RUNGS)}
    assert "knobs" not in names
    assert {"scores", "curves", "compute"} <= names


def test_knobs_caption_says_whether_lr_and_temperature_are_shown(figures):
    knobs = {f.name: f for f in figures}["knobs"]
    assert "tau_plus" in knobs.caption and "margin" in knobs.caption and "variant" in knobs.caption
    assert "lr and temperature" in knobs.caption


def test_scores_figure_shows_the_budget_a_score_was_reached_at():
    """Same last scores, one trial at 4 epochs instead of 12: the picture must change (hollow versus filled)."""
    full = [_record(0, "infonce", [0.8] * 12), _record(1, "infonce", [0.7] * 12)]
    short = [full[0], _record(1, "infonce", [0.7] * 4)]
    a = report_figures(full, METRIC, "max", EPOCHS, RUNGS)[0]
    b = report_figures(short, METRIC, "max", EPOCHS, RUNGS)[0]
    assert a.name == b.name == "scores" and a.png != b.png


def test_curves_figure_marks_asha_stops_and_failures_differently():
    base = [_record(0, "infonce", _curve(0.8, 12)), _record(1, "infonce", _curve(0.6, 4))]
    failed = [base[0], TrialRecord(1, base[1].config, base[1].history, status="failed", reason="collapsed")]
    a = {f.name: f.png for f in report_figures(base, METRIC, "max", EPOCHS, RUNGS)}["curves"]
    b = {f.name: f.png for f in report_figures(failed, METRIC, "max", EPOCHS, RUNGS)}["curves"]
    c = {f.name: f.png for f in report_figures(base, METRIC, "max", EPOCHS, ())}["curves"]
    assert a != b  # x versus failure marker
    assert a != c  # rungs drawn


def test_strategy_colours_are_fixed_by_the_registry_and_distinct():
    a = strategy_colours(["hard", "infonce", "my_own"])
    b = strategy_colours(["infonce", "my_own", "hard", "debiased"])
    assert a["hard"] == b["hard"] and a["infonce"] == b["infonce"] and a["my_own"] == b["my_own"]
    assert len({a["hard"], a["infonce"], a["my_own"], b["debiased"]}) == 4


# --- param_importance ---------------------------------------------------------------------------------------------


def _lr_driven(n=24, epochs=(12,), seed=0):
    """Scores that depend strongly on lr and not at all on temperature; tau_plus exists only under `hard`."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        lr = float(10 ** rng.uniform(-4, -1))
        temperature = float(rng.uniform(0.1, 1.0))
        final = 0.9 - 0.25 * abs(math.log10(lr) + 2.5)
        strategy = "hard" if i % 2 else "infonce"
        knobs = {"tau_plus": float(rng.uniform(0, 0.2))} if strategy == "hard" else {}
        e = epochs[i % len(epochs)]
        records.append(_record(i, strategy, _curve(final, e), lr=lr, temperature=temperature, **knobs))
    return records


def test_importance_ranks_the_parameter_the_score_depends_on_above_the_one_it_ignores(lr_driven):
    result = lr_driven
    assert isinstance(result, Importance)
    names = list(result.importances)
    assert names.index("lr") < names.index("temperature")
    assert names[0] == "lr"
    assert result.importances["lr"] > 2 * result.importances["temperature"]


def test_importance_imputes_a_conditional_knob_and_sums_to_one(lr_driven):
    result = lr_driven
    assert set(result.importances) == {"strategy", "lr", "temperature", "tau_plus"}
    assert result.conditional == ("tau_plus",)
    assert sum(result.importances.values()) == pytest.approx(1.0)
    assert list(result.importances.values()) == sorted(result.importances.values(), reverse=True)
    assert all(v >= 0 for v in result.importances.values())


def test_importance_uses_the_last_epoch_every_scored_trial_reached():
    result = param_importance(_lr_driven(epochs=(2, 4, 12)), METRIC, "max")
    assert result.epoch == 2 and result.trials == 24


def test_importance_target_is_the_score_at_the_common_epoch_not_the_last():
    """Final scores driven by temperature, epoch-2 scores by lr: at the common epoch lr must win."""
    rng = np.random.default_rng(1)
    records = []
    for i in range(24):
        lr, temperature = float(10 ** rng.uniform(-4, -1)), float(rng.uniform(0.1, 1.0))
        early = 0.5 - 0.2 * abs(math.log10(lr) + 2.5)
        history = [early, early] + ([0.3 + 0.5 * temperature] * 10 if i % 3 else [])
        records.append(_record(i, "infonce", history, lr=lr, temperature=temperature))
    result = param_importance(records, METRIC, "max")
    assert result.epoch == 2
    assert list(result.importances)[0] == "lr"


def test_importance_is_omitted_with_its_reason_when_strategies_have_too_few_trials():
    result = param_importance(_sweep(), METRIC, "max")
    assert result.importances == {} and "not computed" in result.omitted and "per strategy" in result.omitted
    assert param_importance(_lr_driven(n=8), METRIC, "max").omitted  # 2 strategies x 4 trials
    assert not param_importance(_lr_driven(n=10), METRIC, "max").omitted  # 5 each


def test_importance_is_none_with_too_few_trials_or_parameters():
    assert param_importance(_lr_driven(n=3), METRIC, "max") is None
    one_param = [_record(i, "infonce", _curve(0.5 + 0.1 * i, 12), lr=10.0**-i) for i in range(1, 6)]
    assert param_importance(one_param, METRIC, "max") is None
    assert param_importance([], METRIC, "max") is None


def test_importance_is_deterministic_the_same_for_mode_min_and_ignores_unscored_trials(lr_driven):
    records = _lr_driven()
    broken = [
        _record(99, "hard", [], status="failed", reason="crash", lr=1e-3),
        _record(98, "hard", [0.2, math.nan], status="failed", reason="nan", lr=2e-3, tau_plus=0.3),
    ]
    assert param_importance(records + broken, METRIC, "min") == lr_driven


# --- robustness ---------------------------------------------------------------------------------------------------


def test_empty_input_gives_no_figures():
    assert report_figures([], METRIC, "max", EPOCHS, RUNGS) == []


def test_only_failed_trials_with_empty_histories_do_not_crash():
    records = [_record(i, "hard", [], status="failed", reason="crash", tau_plus=0.1 * i) for i in range(3)]
    assert report_figures(records, METRIC, "max", EPOCHS, RUNGS) == []


def test_nan_scores_a_single_strategy_and_mode_min_do_not_crash():
    records = [
        _record(0, "infonce", [1.0, 0.8, 0.6], lr=1e-3, temperature=0.5),
        _record(1, "infonce", [1.0, math.nan], status="failed", reason="nan", lr=1e-2, temperature=0.2),
        _record(2, "infonce", [1.1, 0.9], lr=3e-3, temperature=0.3),
        _record(3, "infonce", [], status="running", lr=2e-3, temperature=0.4),
    ]
    figures = report_figures(records, "loss_metric_absent", "min", 3, (1,))
    assert [f.name for f in figures] == ["compute"]  # nothing scored: only the compute spent
    records = [
        TrialRecord(r.number, r.config, [{**row, "val_loss": row[METRIC]} for row in r.history], r.status, r.reason)
        for r in records
    ]
    figures = report_figures(records, "val_loss", "min", 3, (1,))
    assert {"scores", "curves", "compute"} <= {f.name for f in figures}
    _assert_drawn(figures)


def test_missing_metric_on_some_epochs_and_missing_timings_do_not_crash():
    history = [{"epoch": 1, "loss": 1.0}, {"epoch": 2, METRIC: 0.5}, {"epoch": 3, METRIC: None}, {"epoch": 4}]
    records = [
        TrialRecord(0, {"strategy": "infonce"}, history, "stopped", "time budget"),
        _record(1, "infonce", _curve(0.7, 12), lr=1e-3),
    ]
    figures = report_figures(records, METRIC, "max", EPOCHS, RUNGS)
    assert {"scores", "curves", "compute"} <= {f.name for f in figures}
    _assert_drawn(figures)


def test_a_config_lacking_a_knob_and_long_names_do_not_crash():
    long_name = "a_strategy_with_a_very_long_name_that_would_overflow_every_label"
    records = _sweep()[2:5] + [
        _record(10, "hard", _curve(0.6, 12), lr=1e-3, temperature=0.5, beta=0.5),  # no tau_plus
        _record(11, long_name, _curve(0.65, 12), lr=1e-3, temperature=0.5, variant="x" * 80),
        _record(12, long_name, _curve(0.55, 4), lr=1e-3, temperature=0.5, variant="y" * 80),
        TrialRecord(13, {}, [{"epoch": 1, METRIC: 0.4}], "stopped", "scheduler"),  # no strategy at all
    ]
    figures = report_figures(records, METRIC, "max", EPOCHS, RUNGS)
    assert {f.name for f in figures} == ALL_FIGURES - {"importance"}  # too few trials per strategy for one
    _assert_drawn(figures)
    plenty = records + [_record(20 + i, s, _curve(0.5 + 0.02 * i, 12), lr=10 ** (-2 - 0.1 * i), temperature=0.5)
                        for i in range(10) for s in ("hard", long_name)]
    result = param_importance(plenty, METRIC, "max")
    assert "tau_plus" in result.conditional and sum(result.importances.values()) == pytest.approx(1.0)
