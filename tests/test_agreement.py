"""analysis.agreement: Bland–Altman limits on log latency, against hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis import agreement as ag


def test_limits_are_bias_plus_minus_196_sd_of_log_ratios():
    measured = np.array([1000.0, 2000.0, 3000.0, 4000.0, 5000.0])
    ratio = np.array([1.02, 0.97, 1.05, 1.00, 1.01])
    a = ag.limits(measured * ratio, measured)
    d = np.log(ratio)
    assert a["n"] == 5
    assert a["bias_log"] == pytest.approx(d.mean())
    assert a["bias_pct"] == pytest.approx(100 * (math.exp(d.mean()) - 1))
    sd = d.std(ddof=1)
    assert a["lower_pct"] == pytest.approx(100 * (math.exp(d.mean() - 1.959964 * sd) - 1),
                                           rel=1e-5)
    assert a["upper_pct"] == pytest.approx(100 * (math.exp(d.mean() + 1.959964 * sd) - 1),
                                           rel=1e-5)
    lo, hi = a["bias_ci_pct"]
    assert lo < a["bias_pct"] < hi


def test_a_constant_scale_error_is_all_bias():
    m = [1000.0, 2500.0, 7000.0]
    a = ag.limits([1.1 * x for x in m], m)
    assert a["bias_pct"] == pytest.approx(10.0)
    assert a["lower_pct"] == pytest.approx(10.0) and a["upper_pct"] == pytest.approx(10.0)


def test_too_few_and_mismatched():
    assert ag.limits([], []) == {"n": 0}
    one = ag.limits([110.0], [100.0])
    assert one["n"] == 1 and "lower_pct" not in one and one["bias_pct"] == pytest.approx(10.0)
    with pytest.raises(ValueError):
        ag.limits([1.0], [1.0, 2.0])


def test_repeatability_pools_the_within_network_variance():
    reps = [[100.0, 110.0, 105.0], [2000.0, 1900.0, 2100.0], [50.0]]  # the last: one repeat
    r = ag.repeatability(reps)
    logs = [np.log(x) for x in reps[:2]]
    s_w = math.sqrt(sum(((g - g.mean()) ** 2).sum() for g in logs) / 4)
    assert r["n"] == 2 and r["repeats"] == 3
    assert r["sd_within_log"] == pytest.approx(s_w)
    half = 1.959964 * math.sqrt(2) * s_w
    assert r["upper_pct"] == pytest.approx(100 * math.expm1(half), rel=1e-5)
    assert r["lower_pct"] == pytest.approx(100 * math.expm1(-half), rel=1e-5)
    assert r["drift_pct"] == pytest.approx(100 * math.expm1(
        np.mean([math.log(105 / 100), math.log(2100 / 2000)])))
    assert ag.repeatability([[1.0]]) == {"n": 0}


def test_side_by_side_says_how_many_times_as_wide():
    m = np.array([1000.0, 2000.0, 3000.0, 4000.0])
    est = m * np.array([1.04, 0.96, 1.02, 0.98])
    reps = [[x * 0.99, x * 1.01] for x in m]
    a = ag.side_by_side(est, m, reps)
    e, r = a["estimate"], a["repeatability"]
    assert a["width_ratio"] == pytest.approx(
        (e["upper_log"] - e["lower_log"]) / (r["upper_log"] - r["lower_log"]))
    assert a["width_ratio"] > 1
    text = ag.describe(a)
    assert "estimate vs measured: bias" in text and "measured vs measured again" in text
    assert f"{a['width_ratio']:.2f}x as wide" in text
    no_reps = ag.side_by_side(est, m, [[x] for x in m])
    assert "width_ratio" not in no_reps
    assert "repeatability not measured" in ag.describe(no_reps)
