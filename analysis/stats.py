"""How well a predictor tracks measured latency: correlation, error and agreement numbers.

``agreement(predicted, measured)`` gives Pearson r, Spearman rho, Kendall tau, RMSE (ms),
MAPE, max error, the share within +-5 % and +-10 %, the least-squares line
measured = slope * predicted + intercept, and percentile bootstrap confidence
intervals. ``macs_predictor`` is the best linear fit of latency on MACs, the baseline
a LUT has to beat; its fit is in-sample, which flatters it.

Inputs are microseconds; outputs are ms and percent, for people.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as sps
from sklearn.model_selection import KFold

BOOTSTRAP = 2000
CI = 0.95
BOOTSTRAPPED = ("pearson_r", "spearman_rho", "kendall_tau", "rmse_ms", "mape_pct",
                "within_5pct", "within_10pct")


def agreement(predicted: Sequence[float], measured: Sequence[float], n_boot: int = BOOTSTRAP,
              seed: int = 0) -> dict[str, Any]:
    """Agreement numbers of a predictor against measurements (both in microseconds)."""
    p = np.asarray(predicted, float)
    m = np.asarray(measured, float)
    if p.shape != m.shape:
        raise ValueError(f"{p.size} predictions for {m.size} measurements")
    out: dict[str, Any] = {"n": int(p.size)}
    if p.size == 0:
        return out
    err = (p - m) / m  # relative error of the prediction
    out.update(
        rmse_ms=float(np.sqrt(np.mean((p - m) ** 2)) / 1000),
        mape_pct=float(100 * np.mean(np.abs(err))),
        mean_error_pct=float(100 * np.mean(err)),
        max_error_pct=float(100 * err[np.argmax(np.abs(err))]),
        max_abs_error_ms=float(np.max(np.abs(p - m)) / 1000),
        within_5pct=float(np.mean(np.abs(err) <= 0.05)),
        within_10pct=float(np.mean(np.abs(err) <= 0.10)),
        count_within_5pct=int(np.sum(np.abs(err) <= 0.05)),
        count_within_10pct=int(np.sum(np.abs(err) <= 0.10)),
    )
    if p.size < 3 or np.ptp(p) == 0 or np.ptp(m) == 0:
        return out  # correlations and a line need spread in both
    out.update(
        pearson_r=float(sps.pearsonr(p, m).statistic),
        spearman_rho=float(sps.spearmanr(p, m).statistic),
        kendall_tau=float(sps.kendalltau(p, m).statistic),
    )
    fit = sps.linregress(p / 1000, m / 1000)
    out["fit"] = {"slope": float(fit.slope), "intercept_ms": float(fit.intercept),
                  "r2": float(fit.rvalue ** 2)}
    if n_boot:
        out["ci"] = bootstrap_ci(p, m, n_boot, seed)
        out["ci_level"] = CI
    return out


def bootstrap_ci(p: np.ndarray, m: np.ndarray, n_boot: int = BOOTSTRAP,
                 seed: int = 0) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of the BOOTSTRAPPED numbers (``scipy.stats.bootstrap``,
    all of them from one set of paired resamples)."""

    def statistic(bp: np.ndarray, bm: np.ndarray, axis: int = -1) -> np.ndarray:
        err = (bp - bm) / bm
        return np.stack([  # in BOOTSTRAPPED's order
            _pearson_rows(bp, bm),
            _pearson_rows(sps.rankdata(bp, axis=axis), sps.rankdata(bm, axis=axis)),
            _kendall_rows(bp, bm),
            np.sqrt(np.mean((bp - bm) ** 2, axis=axis)) / 1000,
            100 * np.mean(np.abs(err), axis=axis),
            np.mean(np.abs(err) <= 0.05, axis=axis),
            np.mean(np.abs(err) <= 0.10, axis=axis),
        ])

    with warnings.catch_warnings():  # resamples with no value are dealt with below
        warnings.simplefilter("ignore", sps.DegenerateDataWarning)
        res = sps.bootstrap((p, m), statistic, n_resamples=n_boot, vectorized=True,
                            paired=True, confidence_level=CI, method="percentile",
                            rng=np.random.default_rng(seed))
    ci = res.confidence_interval
    out = {}
    for name, lo, hi, v in zip(BOOTSTRAPPED, ci.low, ci.high, res.bootstrap_distribution):
        finite = v[np.isfinite(v)]
        if finite.size == v.size:
            out[name] = [float(lo), float(hi)]
        elif finite.size:  # a resample without spread has no correlation: leave it out
            half = 100 * (1 - CI) / 2
            out[name] = [float(np.percentile(finite, half)),
                         float(np.percentile(finite, 100 - half))]
    return out


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(axis=1) / den


def _kendall_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row pair (ties from resampling handled as scipy does)."""
    i, j = np.triu_indices(a.shape[1], k=1)
    sa, sb = np.sign(a[:, i] - a[:, j]), np.sign(b[:, i] - b[:, j])
    den = np.sqrt(np.count_nonzero(sa, axis=1) * np.count_nonzero(sb, axis=1).astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sa * sb).sum(axis=1) / den


def macs_predictor(macs: Sequence[float], measured: Sequence[float]) -> tuple[np.ndarray, dict]:
    """The least-squares line latency = a * MACs + b, and its in-sample predictions (us)."""
    x, y = np.asarray(macs, float), np.asarray(measured, float)
    if x.size < 2 or np.ptp(x) == 0:
        return np.full_like(y, y.mean() if y.size else 0.0), {"us_per_mmac": math.nan,
                                                               "intercept_ms": math.nan}
    fit = sps.linregress(x / 1e6, y)
    line = {"us_per_mmac": float(fit.slope), "intercept_ms": float(fit.intercept / 1000)}
    return fit.slope * x / 1e6 + fit.intercept, line


# -- from layer sums to network latency: the alignment steps ----------------------------------

FOLDS = 5  # cross-validation folds, for every model fitted with out_of_fold (analysis.calibrate)


def out_of_fold(n: int, fit_predict: Callable[[np.ndarray, np.ndarray], Sequence[float]],
                folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """Each of ``n`` rows predicted by a model fitted without it: ``fit_predict(train,
    test)`` fits on the ``train`` indices and returns the predictions for ``test``."""
    out = np.zeros(n)
    split = KFold(min(folds, n), shuffle=True, random_state=seed).split(np.arange(n))
    for train, test in split:
        out[test] = fit_predict(train, test)
    return out


PREDICTOR_LABELS = {
    "naive": "sum of LUT entries",
    "overhead": "minus per-invoke overhead",
    "drift": "+ device drift since the LUT",
    "calibrated": "calibrated estimate (as netadapt estimate prints)",
    "calibrated_drift": "calibrated estimate + device drift since the LUT",
    "calibrated_anchored": "calibrated estimate, re-levelled by its own networks measured now",
}


def predictions(rows: Sequence[Mapping[str, Any]], overhead_us: float) -> dict[str, np.ndarray]:
    """Each row's latency (us) at each step from the paper's sum: "naive" (the plain sum),
    "overhead" (less the per-invoke overhead its layers paid alone), "drift" (then aligned
    for the device's drift since the LUT)."""
    est = [r["estimate"] for r in rows]
    raw = np.array([e["raw_us"] for e in est])
    extra = np.array([e.get("extra_us", 0.0) for e in est])
    layers = np.array([e["layers"] for e in est])
    d_lut = np.array([r.get("drift", {}).get("lut", 1.0) for r in rows])
    d_extra = np.array([r.get("drift", {}).get("extra", 1.0) for r in rows])
    overhead = (layers - 1) * overhead_us
    aligned_sum = (raw - extra) * d_lut + extra * d_extra  # on-demand keys drift apart
    return {"naive": raw, "overhead": raw - overhead, "drift": aligned_sum - overhead}
