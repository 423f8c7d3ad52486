"""analysis.stats: agreement numbers against scipy, bootstrap intervals, the corrections."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from analysis import stats


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    m = rng.uniform(1000, 20000, 60)
    return m * rng.normal(1.0, 0.03, 60), m


def test_agreement_matches_scipy_and_definitions(pair):
    p, m = pair
    a = stats.agreement(p, m, n_boot=0)
    assert a["n"] == 60
    assert a["pearson_r"] == pytest.approx(sps.pearsonr(p, m).statistic)
    assert a["spearman_rho"] == pytest.approx(sps.spearmanr(p, m).statistic)
    assert a["kendall_tau"] == pytest.approx(sps.kendalltau(p, m).statistic)
    err = p / m - 1
    assert a["mape_pct"] == pytest.approx(100 * np.mean(np.abs(err)))
    assert a["rmse_ms"] == pytest.approx(np.sqrt(np.mean((p - m) ** 2)) / 1000)
    assert a["within_5pct"] == pytest.approx(np.mean(np.abs(err) <= 0.05))
    assert a["count_within_10pct"] == int(np.sum(np.abs(err) <= 0.10))
    assert abs(a["max_error_pct"]) == pytest.approx(100 * np.max(np.abs(err)))
    assert a["fit"]["slope"] == pytest.approx(sps.linregress(p, m).slope)
    assert "ci" not in a


def test_bootstrap_intervals_hold_the_estimate(pair):
    p, m = pair
    a = stats.agreement(p, m, n_boot=500, seed=1)
    for name in stats.BOOTSTRAPPED:
        lo, hi = a["ci"][name]
        assert lo <= a[name] <= hi, name
    assert a == stats.agreement(p, m, n_boot=500, seed=1)  # seeded: repeatable


def test_resamples_without_spread_leave_the_correlation_interval_finite():
    """Four networks: some resamples repeat one network, so they have no correlation."""
    p, m = np.array([1000.0, 2000, 3000, 4000]), np.array([1100.0, 1900, 3300, 3900])
    ci = stats.bootstrap_ci(p, m, n_boot=500, seed=0)
    assert set(ci) == set(stats.BOOTSTRAPPED)
    assert all(np.isfinite(v).all() and v[0] <= v[1] for v in ci.values())


def test_vectorised_kendall_is_scipys_tau_b_with_ties():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 6, (5, 30)).astype(float)  # many ties, as resampling makes
    b = a + rng.integers(0, 3, (5, 30))
    got = stats._kendall_rows(a, b)
    want = [sps.kendalltau(x, y).statistic for x, y in zip(a, b)]
    assert got == pytest.approx(want)


def test_degenerate_inputs():
    assert stats.agreement([], [])["n"] == 0
    one = stats.agreement([1.0, 1.0], [1.0, 2.0])
    assert "pearson_r" not in one and one["within_5pct"] == 0.5
    with pytest.raises(ValueError):
        stats.agreement([1.0], [1.0, 2.0])


def test_macs_predictor_is_the_least_squares_line():
    macs = np.array([1e6, 2e6, 3e6, 4e6])
    us = 2.0 * macs / 1e6 * 1000 + 500  # 2 ms per MMAC + 0.5 ms
    pred, line = stats.macs_predictor(macs, us)
    assert line["us_per_mmac"] == pytest.approx(2000)
    assert line["intercept_ms"] == pytest.approx(0.5)
    assert pred == pytest.approx(us)


def test_fit_correction_recovers_a_known_model():
    rng = np.random.default_rng(3)
    entries = [{"conv2d 1x1": rng.uniform(500, 5000),
                "depthwise_conv2d 3x3": rng.uniform(100, 900)} for _ in range(40)]
    mb = [(rng.uniform(0.5, 15), rng.uniform(1, 30)) for _ in range(40)]
    gap = [0.15 * e["conv2d 1x1"] + 0.25 * e["depthwise_conv2d 3x3"] + 20 * w + 3 * a
           for e, (w, a) in zip(entries, mb)]
    measured = [5000.0 + g for g in gap]
    model = stats.fit_correction(entries, mb, gap, measured)
    assert model.rel["conv2d 1x1"] == pytest.approx(0.15)
    assert model.rel["depthwise_conv2d 3x3"] == pytest.approx(0.25)
    assert model.us_per_weight_mb == pytest.approx(20)
    assert model.us_per_act_mb == pytest.approx(3)
    # A class never seen gets the fitted classes' time-weighted mean factor.
    assert 0.15 < model.rel_other < 0.25
    assert model.extra_us({"conv2d 3x3": 100.0}, (0.0, 0.0)) == pytest.approx(100 * model.rel_other)
    oof = stats.cross_validated(entries, mb, gap, measured)
    assert oof == pytest.approx(gap, rel=1e-6)  # noise-free: every fold finds the model


def test_minor_classes_get_no_factor():
    entries = [{"conv2d 1x1": 1000.0 * (i + 1), "add": 1.0 + i % 3} for i in range(20)]
    gap = [0.1 * e["conv2d 1x1"] + 50 * e["add"] for e in entries]  # the add share is ~0.1 %
    model = stats.fit_correction(entries, [(0.0, 0.0)] * 20, gap)
    assert model.rel["add"] == 0.0 and model.rel["conv2d 1x1"] > 0  # seen, too small to fit


def test_cross_validation_never_fits_a_network_on_itself():
    """An outlier's out-of-fold correction comes from the others, so it stays an outlier."""
    entries = [{"conv2d 1x1": 1000.0 + i} for i in range(20)]
    gap = [100.0] * 19 + [900.0]
    oof = stats.cross_validated(entries, [(0.0, 0.0)] * 20, gap, folds=5)
    assert oof[-1] < 200  # the fit without it sees only ~10 % gaps


def _row(raw, measured, held_out=False, by_class=None, drift=1.0):
    return {"measured_us": measured, "held_out": held_out, "drift": {"lut": drift, "extra": 1.0},
            "estimate": {"raw_us": raw, "extra_us": 0.0, "layers": 10,
                         "by_class": by_class or {"conv2d 1x1": raw}, "weight_bytes": 0,
                         "act_bytes": 0}}


def test_predictions_steps():
    rows = [_row(1000.0 * (i + 1), 1100.0 * (i + 1) * 1.05, drift=1.05) for i in range(12)]
    rows.append(_row(5000.0, 5000.0, held_out=True, by_class={"conv2d 3x3": 5000.0}))
    pred, model = stats.predictions(rows, overhead_us=1.0)
    assert pred["naive"][0] == 1000.0
    assert pred["overhead"][0] == pytest.approx(1000.0 - 9 * 1.0)
    assert pred["drift"][0] == pytest.approx(1050.0 - 9.0)
    assert model is not None and model.rel["conv2d 1x1"] == pytest.approx(0.1, abs=0.01)
    # The held-out network's class was never fitted: it gets the mean factor.
    assert pred["corrected"][-1] == pytest.approx(5000.0 * (1 + model.rel_other), abs=10)
    few, none = stats.predictions(rows[:5], 1.0)
    assert none is None and "corrected" not in few
