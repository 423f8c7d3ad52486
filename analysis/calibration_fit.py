"""Fitting the in-network model (``lut_db.calibration``) to measured networks.

Two sources of truth: each network's measured latency (one number), and, where the
runtime has an op profiler, each layer's time inside the network (29 to 107 numbers per
network, repeatable to 2-8 %). A profile is taken at another moment than the network's
timing, and the profiler's own bookkeeping adds to its ops, so a profile is used for how
a network's time splits over its layers, not for its level: its layer times are scaled
to sum to the measured latency less the per-invoke overhead. The level comes from the
totals.

Every candidate is linear in its fitted terms once its weight-streaming cost and cache
window are fixed; those come from grids, chosen by cross-validation (networks split into
folds: the error of each network predicted by a fit without it). One row per network
(its relative error) and, per-layer, one per layer (its error relative to its network's
latency, so a 10 ms network does not outvote ten 1 ms ones). Each network's rows are
reduced to their normal equations once per grid point, so a fold's fit is a small solve.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import nnls
from sklearn.model_selection import KFold

from analysis.stats import FOLDS
from lut_db.calibration import act_mb, evicted_share, layer_kind, weight_mb, working_mb

# A kind gets a factor of its own when it holds at least this share of the profiled
# layers' entries, in at least MIN_KIND_LAYERS layers of two networks: a smaller one would
# fit the profiler's 1-us resolution, not the device (MobileNetV2's residual adds hold
# 0.3 % at 224 px; global pools under 0.1 %).
MIN_KIND_SHARE = 0.002
MIN_KIND_LAYERS = 8
MIN_FACTOR = -0.5  # inside a network a layer costs at least half its time alone


@dataclass(frozen=True)
class Form:
    """One candidate: whether it fits per-layer times, and whether it has a factor per
    layer kind and a cost per MB of weights that compute does not hide (``exposed``)."""

    name: str
    per_layer: bool
    kinds: bool
    exposed: bool = False


@dataclass
class Fitted:
    """A candidate fitted on all the networks, and its cross-validated errors."""

    form: Form
    us_per_weight_mb: float
    window: tuple[float, float]
    us_per_act_mb: float
    us_per_layer: float
    us_per_weight_mb_exposed: float
    kind_factor: dict[str, float]
    oof: np.ndarray  # each network's out-of-fold relative error

    @property
    def mape(self) -> float:
        return float(np.mean(np.abs(self.oof)))


class Net:
    """One measured network as arrays: per layer its entry less the overhead, weight and
    activation MB and kind; its working set (``footprint``: what decides eviction, the
    model's rule); its measured latency; its profile scaled to that latency."""

    def __init__(self, layers: Sequence[tuple[Any, float]], measured_us: float,
                 overhead_us: float, profile_us: Sequence[float] | None = None,
                 footprint: Callable[[Any], float] = working_mb):
        self.e = np.array([x - overhead_us for _, x in layers])
        self.w = np.array([weight_mb(spec) for spec, _ in layers])
        self.act = np.array([act_mb(spec) for spec, _ in layers])
        self.kinds = [layer_kind(spec) for spec, _ in layers]
        self.working_mb = float(sum(footprint(spec) for spec, _ in layers))
        self.measured = measured_us
        self.overhead = overhead_us
        p = np.asarray(profile_us, float) if profile_us is not None else None
        ok = p is not None and len(p) == len(self.e) and p.sum() > 0
        self.profile = p * (measured_us - overhead_us) / p.sum() if ok else None


def fitted_kinds(nets: Sequence[Net]) -> list[str]:
    """The kinds the profiles show enough of to give a factor."""
    share: dict[str, float] = {}
    layers: dict[str, int] = {}
    nets_of: dict[str, int] = {}
    for n in nets:
        if n.profile is None:
            continue
        for k in set(n.kinds):
            nets_of[k] = nets_of.get(k, 0) + 1
        for k, e in zip(n.kinds, n.e):
            share[k] = share.get(k, 0.0) + max(e, 0.0)
            layers[k] = layers.get(k, 0) + 1
    whole = sum(share.values()) or 1.0
    return sorted(k for k, v in share.items() if v / whole >= MIN_KIND_SHARE
                  and layers[k] >= MIN_KIND_LAYERS and nets_of[k] >= 2)


def columns(n: Net, kinds: Sequence[str], exposed: bool) -> np.ndarray:
    """What the fitted terms multiply, per layer, before eviction scales all but the
    second: activation MB, 1 (per layer), with ``exposed`` weight MB, and per fitted kind
    its entry less the overhead."""
    cols = [n.act, np.ones_like(n.e)] + [n.w] * exposed
    cols += [np.where([k == kind for k in n.kinds], n.e, 0.0) for kind in kinds]
    return np.column_stack(cols)


# How a layer's error is weighed: relative to its network's latency (0) or to its own
# time (1). At 0 a kind of small layers (residual adds: 0.3 % of the time) is pinned by
# nothing and its factor fits differences between networks (x6 for adds, seen on this
# host); at 1 the profiler's jitter on 2-us layers weighs as much as a 500-us conv.
LAYER_POWER = 0.5


def layer_weights(n: Net) -> np.ndarray:
    """Each layer row's weight (see LAYER_POWER; own times floored at a tenth of the
    network's mean layer), scaled by sqrt(layers) so that a network's layer rows weigh
    about as much as its total's row."""
    own = np.maximum(n.profile, max(1.0, 0.1 * n.measured / len(n.e)))
    return np.sqrt(len(n.e)) * (n.measured / (len(n.e) * own)) ** LAYER_POWER / n.measured


class _Stacked:
    """The networks' rows reduced to what a grid point needs, for all networks at once.

    A layer costs ``e + E x stream_k`` before the fitted terms, ``d + E x (act x c + f_kind
    x e)`` after (``E``: the network's evicted share, ``stream_k = max(0, k x w - e)``). Its
    rows are ``x0 D`` (``D = diag(E, 1, E, ...)``), so each network's normal equations are
    ``D (A + t t') D`` and ``D (c - E s_k + t (y - E sigma_k))``, with A, c, t, y fixed and
    s_k, sigma_k per streaming cost: a grid point is a few array operations."""

    def __init__(self, nets: Sequence[Net], kinds: Sequence[str], form: Form,
                 us_per_mb_grid: Sequence[float]):
        xs = [columns(n, kinds, form.exposed) for n in nets]
        per_layer = form.per_layer
        # the columns eviction scales: all but the per-layer term
        self.cold = np.array([True, False] + [True] * (form.exposed + len(kinds)))
        m = np.array([n.measured for n in nets])
        self.measured = m
        self.t = np.array([x.sum(axis=0) for x in xs]) / m[:, None]
        self.y = np.array([n.measured - n.overhead - n.e.sum() for n in nets]) / m
        self.base = np.array([n.e.sum() + n.overhead for n in nets])
        use = [per_layer and n.profile is not None for n in nets]
        # each layer's row weight, squared
        ws = [layer_weights(n) ** 2 if u else np.zeros(len(n.e)) for n, u in zip(nets, use)]
        self.a = np.array([(x * w[:, None]).T @ x for x, w in zip(xs, ws)])
        self.c = np.array([(x * w[:, None]).T @ (n.profile - n.e) if u else np.zeros(x.shape[1])
                           for x, w, n, u in zip(xs, ws, nets, use)])
        self.s: dict[float, np.ndarray] = {}
        self.stream: dict[float, np.ndarray] = {}
        for k in us_per_mb_grid:
            st = [np.maximum(0.0, k * n.w - n.e) for n in nets]
            self.s[k] = np.array([(x * w[:, None]).T @ v for x, v, w in zip(xs, st, ws)])
            self.stream[k] = np.array([v.sum() for v in st])

    def normal(self, k: float, evicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every network's G (..., n, p, p) and b (..., n, p) at streaming cost ``k``;
        ``evicted`` is (n,) or one row per cache window (w, n)."""
        d = self._scale(evicted)
        sigma = self.stream[k] / self.measured
        g = (self.a + self.t[:, :, None] * self.t[:, None, :]) * d[..., None] * d[..., None, :]
        b = d * (self.c - evicted[..., None] * self.s[k]
                 + self.t * (self.y - evicted * sigma)[..., None])
        return g, b

    def _scale(self, evicted: np.ndarray) -> np.ndarray:
        """D's diagonal per network: the evicted share on the columns eviction scales."""
        d = np.ones(evicted.shape + self.t.shape[1:])
        d[..., self.cold] = evicted[..., None]
        return d

    def predict(self, k: float, evicted: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """Each network's relative error under its own coefficients ``theta`` (..., n, p)."""
        x = self._scale(evicted) * self.t * self.measured[:, None]
        total = (self.base + evicted * self.stream[k]
                 + (x[..., None, :] @ theta[..., :, None])[..., 0, 0])
        return total / self.measured - 1


def solve(g: np.ndarray, b: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """argmin of the quadratic with each coefficient >= ``lower``: non-negative least
    squares on its Cholesky factor, shifted by the bounds."""
    ridge = 1e-10 * max(1.0, float(np.trace(g))) * np.eye(len(b))
    low = np.linalg.cholesky(g + ridge)  # g = low low': |low' x - z|^2 = x'gx - 2b'x + ...
    z = np.linalg.solve(low, b)
    phi, _ = nnls(low.T, z - low.T @ lower)
    return phi + lower


def solve_many(g: np.ndarray, b: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """``solve`` over a stack (..., p, p), (..., p) at once. A strictly convex quadratic has
    one minimum over the bounds, the point that meets them where each coefficient is
    either free (its gradient 0) or at its bound (its gradient pushing it below): found by
    moving coefficients between the two sets, all of the stack at once; what is left
    after a few rounds goes through ``solve`` one by one."""
    n = b.shape[-1]
    ridge = 1e-10 * np.maximum(1.0, np.trace(g, axis1=-2, axis2=-1))
    ridged = g + ridge[..., None, None] * np.eye(n)  # as solve: the ridged one's argmin
    free = np.ones(b.shape, bool)
    theta = np.empty_like(b)
    todo = np.ones(b.shape[:-1], bool)
    try:
        np.linalg.cholesky(ridged)
        rounds = 2 * n + 2
    except np.linalg.LinAlgError:  # one is not positive definite: solve raises for the first
        rounds = 0
    for _ in range(rounds):
        gi, bi, fi = ridged[todo], b[todo], free[todo]
        both = fi[..., :, None] & fi[..., None, :]
        fixed = np.where(fi, 0.0, lower)
        # the free coefficients' minimum, the others held at their bounds
        x = np.linalg.solve(np.where(both, gi, np.eye(n)),
                            np.where(fi, bi - (gi @ fixed[..., None])[..., 0], lower)
                            [..., None])[..., 0]
        grad = (gi @ x[..., None])[..., 0] - bi  # >= 0 where a bound holds a coefficient
        tol = 1e-12 * (np.abs(gi) @ np.abs(x)[..., None])[..., 0].max(axis=-1) + 1e-300
        below = fi & ~(x >= lower)  # NaN too
        pushed = ~fi & (grad < -tol[..., None])
        done = ~(below | pushed).any(axis=-1)
        idx = tuple(i[done] for i in np.nonzero(todo))
        theta[idx] = x[done]
        # below a bound: held at it; when none is, the bound pushing hardest is let go
        release = pushed & (grad == np.where(pushed, grad, np.inf).min(axis=-1, keepdims=True))
        fi = np.where(below.any(axis=-1, keepdims=True), fi & ~below, fi | release)
        free[todo] = fi
        todo[todo] = ~done
        if not todo.any():
            return theta
    for i in zip(*np.nonzero(todo)):
        theta[i] = solve(g[i], b[i], lower)
    return theta


def fit_form(nets: Sequence[Net], form: Form, windows: Sequence[tuple[float, float]],
             us_per_mb_grid: Sequence[float], folds: int = FOLDS, seed: int = 0) -> Fitted:
    """``form`` with its streaming cost and cache window chosen by cross-validation (each
    network predicted by a fit without its fold; ties go to the smaller cost and caches),
    its terms fitted on all ``nets``."""
    kinds = fitted_kinds(nets) if form.kinds else []
    lower = np.array([0.0, 0.0] + [0.0] * form.exposed + [MIN_FACTOR] * len(kinds))
    rows = _Stacked(nets, kinds, form, us_per_mb_grid)
    split = list(KFold(min(folds, len(nets)), shuffle=True, random_state=seed)
                 .split(np.arange(len(nets))))
    evicted = {c: np.array([evicted_share(n.working_mb, *c) for n in nets]) for c in windows}
    fold = np.empty(len(nets), int)  # each network's fold
    for i, (_, test) in enumerate(split):
        fold[test] = i
    member = np.arange(len(split))[:, None] == fold  # (folds, n)
    ev = np.array([evicted[c] for c in windows])  # (windows, n)
    scored: dict[tuple[float, float, float], np.ndarray] = {}
    for k in us_per_mb_grid:  # every window and fold of one streaming cost at once
        g, b = rows.normal(k, ev)
        g_out = np.stack([g[:, f].sum(axis=1) for f in member], axis=1)  # each fold's own
        b_out = np.stack([b[:, f].sum(axis=1) for f in member], axis=1)
        theta = solve_many(g.sum(axis=1)[:, None] - g_out, b.sum(axis=1)[:, None] - b_out,
                           lower)  # (windows, folds, p): each fit without its fold
        rel = rows.predict(k, ev, theta[:, fold])
        for c, r in zip(windows, rel):
            scored[(k, *c)] = r
    best = min(scored, key=lambda key: (round(float(np.mean(np.abs(scored[key]))), 9), key))
    k, lo, hi = best
    g, b = rows.normal(k, evicted[lo, hi])
    theta = list(map(float, solve(g.sum(axis=0), b.sum(axis=0), lower)))
    exposed = theta.pop(2) if form.exposed else 0.0
    return Fitted(form, k, (lo, hi), theta[0], theta[1], exposed,
                  dict(zip(kinds, theta[2:])), scored[best])


def errors(rel: np.ndarray) -> dict[str, Any]:
    """Relative errors in percent: mean absolute (and its standard error), max, counts."""
    pct = 100 * np.abs(rel)
    se = float(pct.std(ddof=1) / np.sqrt(len(pct))) if len(pct) > 1 else 0.0
    return {"n": len(rel), "mape_pct": float(pct.mean()), "se_pct": se,
            "max_pct": float(pct.max()), "within_5": int((pct <= 5).sum()),
            "within_10": int((pct <= 10).sum())}

