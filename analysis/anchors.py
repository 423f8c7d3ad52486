"""Anchors: the calibration's own networks, measured again beside the others, bring the
stored calibration to the device as it runs now.

A calibration describes the device when it was calibrated. The drift sample
(``analysis.validate.SessionDrift``) re-times layers alone to follow the device since, but
a layer alone keeps its data in cache and is timed in a tight loop: on this host, 15
minutes after `make lut`, it read the device 0.6 % slower while whole 224-px networks ran
5.7 % slower, and 32-px networks with the same weights not at all. Networks of similar
size drift alike, and unlike layers alone.

So wherever calibration networks are measured in the same session as the networks being
scored (the report's width multipliers are; the calibration benchmark measures all of
them), each network's estimate is re-levelled by the ``K`` anchors nearest to it in
estimated latency (log scale): times the median of their measured / estimated. The
model stays the stored one; only its level moves, locally.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from bench.runners.base import Runner
from lut_db.network import Network
from lut_db.store import LutStore
from lut_db.versions import Version

K = 8  # anchors per network: the nearest in estimated latency
MIN_ANCHORS = 3  # fewer than this measured in a session: no anchored estimate


def anchored(estimates_us: Sequence[float], anchors: Sequence[tuple[float, float]],
             k: int = K) -> list[float] | None:
    """Each estimate re-levelled by the ``k`` anchors ((estimated us, measured us) of
    calibration networks measured now) nearest to it in log latency; None with fewer than
    MIN_ANCHORS anchors."""
    points = [(math.log(e), m / e) for e, m in anchors if e > 0 and m > 0]
    if len(points) < MIN_ANCHORS:
        return None
    out = []
    for e in estimates_us:
        x = math.log(max(e, 1e-9))
        near = sorted(points, key=lambda p: (abs(p[0] - x), p[0]))[:k]
        out.append(e * statistics.median(r for _, r in near))
    return out


def level(anchors: Sequence[tuple[float, float]]) -> float | None:
    """The anchors' median measured / estimated: how far the device as a whole has moved
    from its calibration (None with fewer than MIN_ANCHORS)."""
    ratios = [m / e for e, m in anchors if e > 0 and m > 0]
    return statistics.median(ratios) if len(ratios) >= MIN_ANCHORS else None


def calibration_networks(store: LutStore, version: Version, n: int) -> list[Network]:
    """Up to ``n`` of the version's calibration networks that its own keys describe, spread
    over their latency (smallest first): the anchors to time beside other networks."""
    from analysis.calibrate import calibration_set
    from analysis.sampling import Space

    cal = store.calibration(version)
    if cal is None or n <= 0:
        return []
    table = store.table(version)
    nets = [net for net in calibration_set(Space.of(version.space), len(cal.networks))
            if net.name in cal.networks and all(k in table for k in net.keys)]
    nets.sort(key=lambda net: sum(table[k] for k in net.keys))
    return nets[::max(1, len(nets) // n)][:n]


def time_now(store: LutStore, version: Version, runner: Runner, n: int = K,
             passes: int = 3) -> list[tuple[float, float]]:
    """(calibrated estimate, measured) us of up to ``n`` calibration networks timed whole
    on ``runner`` now (refused on another device or setup than the version's)."""
    from bench.timing import time_networks

    nets = calibration_networks(store, version, n)
    cal = store.calibration(version)
    if not nets or cal is None:
        return []
    version.require_same_setup(runner.fingerprint(), "anchors must be timed on the device and "
                               "settings the LUT was built with")
    table = store.table(version)
    timed = time_networks(runner, {net.name: net for net in nets}, passes)
    return [(cal.network_us([(spec, table[spec.key]) for spec in net.specs]),
             timed[net.name].latency_us) for net in nets]
