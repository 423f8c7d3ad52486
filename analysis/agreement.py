"""Agreement as a measurement lab states it: Bland–Altman limits on log latency.

``limits(estimated, measured)``: the bias and 95 % limits of agreement of an estimate
against measurements, on log latency (errors are relative: a 10 ms network must not
outweigh ten 1 ms ones), given back as percentages: the estimate is typically
``bias_pct`` off, and 95 % of networks fall between ``lower_pct`` and ``upper_pct``.

``repeatability(repeats)``: the same limits for a measurement against itself measured
again (each network measured k >= 2 times at separate moments): the within-network
standard deviation s_w of log latency, pooled over networks, and the repeatability
limits +-1.96 x sqrt(2) x s_w. No estimate can agree with a measurement better than
that; ``side_by_side`` puts the two next to each other, with the ratio of their widths.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

Z95 = float(sps.norm.ppf(0.975))  # 1.96


def _pct(log_ratio: float) -> float:
    return 100 * math.expm1(log_ratio)


def limits(estimated_us: Sequence[float], measured_us: Sequence[float]) -> dict[str, Any]:
    """Bias and 95 % limits of agreement of ``estimated_us`` against ``measured_us``."""
    e, m = np.asarray(estimated_us, float), np.asarray(measured_us, float)
    if e.shape != m.shape:
        raise ValueError(f"{e.size} estimates for {m.size} measurements")
    ok = (e > 0) & (m > 0)
    d = np.log(e[ok]) - np.log(m[ok])
    out: dict[str, Any] = {"n": int(d.size)}
    if d.size == 0:
        return out
    bias = float(d.mean())
    out.update(bias_log=bias, bias_pct=_pct(bias))
    if d.size < 2:
        return out
    sd = float(d.std(ddof=1))
    half = Z95 * sd
    t = float(sps.t.ppf(0.975, d.size - 1)) * sd / math.sqrt(d.size)
    out.update(sd_log=sd, lower_log=bias - half, upper_log=bias + half,
               lower_pct=_pct(bias - half), upper_pct=_pct(bias + half),
               bias_ci_pct=[_pct(bias - t), _pct(bias + t)])
    return out


def repeatability(repeats_us: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Limits of agreement of a measurement with itself measured again, from each network's
    repeats (networks with fewer than two are skipped); ``drift_pct``: how much the last
    repeat ran above the first, on average (the session's own drift)."""
    groups = [np.log(np.asarray(r, float)) for r in repeats_us
              if len(r) >= 2 and min(r) > 0]
    out: dict[str, Any] = {"n": len(groups)}
    if not groups:
        return out
    dof = sum(g.size - 1 for g in groups)
    s_w = math.sqrt(sum(float(((g - g.mean()) ** 2).sum()) for g in groups) / dof)
    half = Z95 * math.sqrt(2) * s_w
    out.update(repeats=int(np.median([g.size for g in groups])), sd_within_log=s_w,
               lower_log=-half, upper_log=half, lower_pct=_pct(-half), upper_pct=_pct(half),
               drift_pct=_pct(float(np.mean([g[-1] - g[0] for g in groups]))))
    return out


def side_by_side(estimated_us: Sequence[float], measured_us: Sequence[float],
                 repeats_us: Sequence[Sequence[float]]) -> dict[str, Any]:
    """The estimate's limits next to the measurement's own, and how many times as wide."""
    est, rep = limits(estimated_us, measured_us), repeatability(repeats_us)
    out = {"estimate": est, "repeatability": rep}
    if "lower_log" in est and "lower_log" in rep and rep["upper_log"] > 0:
        out["width_ratio"] = ((est["upper_log"] - est["lower_log"])
                              / (rep["upper_log"] - rep["lower_log"]))
    return out


def _signed(pct: float) -> str:
    text = f"{pct:+.1f}"
    return "0.0" if text in ("+0.0", "-0.0") else text


def describe(a: dict[str, Any]) -> str:
    """One group's limits in a sentence fragment."""
    e, r = a.get("estimate", {}), a.get("repeatability", {})
    if "lower_pct" not in e:
        return (f"{e.get('n', 0)} networks: too few for limits"
                + (f" (bias {_signed(e['bias_pct'])} %)" if "bias_pct" in e else ""))
    text = (f"estimate vs measured: bias {_signed(e['bias_pct'])} %, 95 % limits "
            f"{_signed(e['lower_pct'])} % to {_signed(e['upper_pct'])} % (n = {e['n']})")
    if "lower_pct" in r:
        text += (f"; measured vs measured again: {_signed(r['lower_pct'])} % to "
                 f"{_signed(r['upper_pct'])} % ({r['repeats']} repeats of {r['n']} networks)")
        if "width_ratio" in a:
            text += f"; the estimate's limits are {a['width_ratio']:.2f}x as wide"
    else:
        text += "; repeatability not measured (one measurement per network)"
    return text
