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


def _row(raw, measured, drift=1.0, extra_us=0.0, extra_drift=1.0):
    return {"measured_us": measured, "held_out": False,
            "drift": {"lut": drift, "extra": extra_drift},
            "estimate": {"raw_us": raw, "extra_us": extra_us, "layers": 10}}


def test_predictions_steps():
    rows = [_row(1000.0, 1100.0, drift=1.05),
            _row(1000.0, 1100.0, drift=1.05, extra_us=200.0, extra_drift=1.2)]
    pred = stats.predictions(rows, overhead_us=1.0)
    assert set(pred) == {"naive", "overhead", "drift"}
    assert list(pred["naive"]) == [1000.0, 1000.0]
    assert pred["overhead"][0] == pytest.approx(1000.0 - 9 * 1.0)
    assert pred["drift"][0] == pytest.approx(1050.0 - 9.0)
    # keys measured on demand drift with their own factor, the LUT's with the LUT's
    assert pred["drift"][1] == pytest.approx(800 * 1.05 + 200 * 1.2 - 9.0)
