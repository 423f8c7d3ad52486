"""Comparing an adapted network with width-multiplier networks: on their accuracy vs
latency curve, and the multiplier of equal estimated latency."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from adapter.search_space import SearchSpace


def equal_latency_multiplier(space: SearchSpace, latency_ms: float) -> tuple[float, dict]:
    """The width multiplier (0.01 steps, widths snapped to the grid) whose estimated latency
    is closest to ``latency_ms``: the paper's layer-by-layer comparison partner."""
    best = None
    for m in np.arange(0.05, 1.0001, 0.01):
        w = space.snap(space.fam.widths(width_mult=float(m)))
        gap = abs(space.resource("latency_ms", w) - latency_ms)
        if best is None or gap < best[0]:
            best = (gap, round(float(m), 2), w)
    return best[1], best[2]


def interpolate_curve(xs: Sequence[float], ys: Sequence[float], x: float) -> float | None:
    """y at x on the piecewise-linear curve through (xs, ys) sorted by x; None outside it."""
    pts = sorted(zip(xs, ys))
    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def speedup_at_equal_accuracy(mult_ms: Sequence[float], mult_acc: Sequence[float],
                              adapted_ms: float, adapted_acc: float) -> float | None:
    """Latency the multiplier curve needs for the adapted accuracy, over the adapted latency.

    The curve is walked from fast to slow to the first network at least as accurate,
    interpolating from the one before it; when the fastest is already as accurate, its
    latency counts (the curve may do even better below it, so the ratio is an upper
    bound). None when no multiplier network reaches the adapted accuracy."""
    pts = sorted(zip(mult_ms, mult_acc))
    for i, (x1, y1) in enumerate(pts):
        if y1 >= adapted_acc:
            if i == 0:
                return x1 / adapted_ms
            x0, y0 = pts[i - 1]
            return (x0 + (x1 - x0) * (adapted_acc - y0) / (y1 - y0)) / adapted_ms
    return None
