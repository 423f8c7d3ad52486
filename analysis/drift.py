"""Drift check: is a sealed LUT version still true on the device now?

A new OS build, a runtime update, a thermal state or a busier machine changes every
entry at once. ``check`` re-measures a random sample of a version's keys with the
version's own settings and compares: the median ratio now / LUT says how far the
device has moved as a whole, and outliers are keys that moved against the crowd.

Layers timed alone keep their data in cache, so a device whose memory got slower can look
fresh to them. Where the version is calibrated, some of its calibration networks are
timed whole as well (``analysis.anchors``): their median measured / calibrated estimate
says how far whole networks have moved, and either moving past the tolerance is stale.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from analysis.anchors import level, time_now
from bench.machine_state import MachineState
from bench.runners.base import Runner
from bench.timing import remeasure
from lut_db.errors import UserError
from lut_db.store import LutStore
from lut_db.versions import Version

TOLERANCE = 0.05  # a median ratio further than this from 1 means the LUT has gone stale


class DriftError(UserError):
    """A drift check that cannot run as asked."""


@dataclass
class Drift:
    """The outcome of one drift check (latencies in microseconds)."""

    version: str
    seed: int
    tolerance: float
    ratios: dict[str, float]  # key -> now / LUT
    lut_us: dict[str, float]
    now_us: dict[str, float]
    failed: list[str] = field(default_factory=list)
    state: MachineState | None = None  # the machine while the keys were re-measured
    networks: int = 0  # calibration networks timed whole
    network_ratio: float | None = None  # their median measured / calibrated estimate

    @property
    def median_ratio(self) -> float:
        return statistics.median(self.ratios.values())

    @property
    def stale(self) -> bool:
        moved = [self.median_ratio, self.network_ratio]
        return any(r is not None and abs(r - 1) > self.tolerance for r in moved)

    @property
    def outliers(self) -> list[str]:
        """Keys that moved against the crowd: off the median by > 4 robust sd and > 15 %."""
        med = self.median_ratio
        dev = [abs(r / med - 1) for r in self.ratios.values()]
        sd = 1.4826 * statistics.median(dev) if dev else 0.0
        limit = max(0.15, 4 * sd)
        return sorted((k for k, r in self.ratios.items() if abs(r / med - 1) > limit),
                      key=lambda k: -abs(self.ratios[k] / med - 1))

    def summary(self) -> dict[str, Any]:
        r = sorted(self.ratios.values())
        q = statistics.quantiles(r, n=10) if len(r) > 1 else [r[0]] * 9
        return {"version": self.version, "seed": self.seed, "keys": len(r),
                "median_ratio": self.median_ratio, "p10": q[0], "p90": q[-1],
                "within_5pct": sum(abs(x - 1) <= 0.05 for x in r) / len(r),
                "tolerance": self.tolerance, "stale": self.stale,
                "outliers": [{"key": k, "lut_us": self.lut_us[k], "now_us": self.now_us[k],
                              "ratio": self.ratios[k]} for k in self.outliers],
                "failed": self.failed, "networks": self.networks,
                "network_ratio": self.network_ratio,
                "machine_state": self.state.to_dict() if self.state else None}


def sample_keys(table: dict[str, float], n: int, seed: int) -> list[str]:
    keys = sorted(table)
    return random.Random(seed).sample(keys, min(n, len(keys)))


NETWORKS = 8  # calibration networks timed whole beside the keys
PASSES = 3


def check(store: LutStore, version: Version, runner: Runner, sample: int = 40,
          seed: int | None = None, tolerance: float = TOLERANCE,
          progress: Callable[[int], None] | None = None, networks: int = NETWORKS) -> Drift:
    """Re-measure ``sample`` random keys of ``version`` on ``runner`` and compare; time
    ``networks`` of its calibration networks whole too, where it is calibrated."""
    if sample <= 0:
        raise DriftError("the sample must hold at least one key")
    version.require_same_setup(runner.fingerprint(),
                               "a drift check needs the same device and settings")
    table = store.table(version)
    if not table:
        raise DriftError(f"{version.label} has no measured entries to check")
    seed = random.randrange(2**31) if seed is None else seed
    keys = sample_keys(table, sample, seed)
    probe = runner.state_probe()
    probe.start()
    now, failed = remeasure(runner, keys, progress)
    anchors = time_now(store, version, runner, networks, PASSES)  # none when networks <= 0
    state = probe.stop()
    if not now:
        raise DriftError(f"every sampled key failed on the device now (e.g. {failed[0]})")
    return Drift(version.label, seed, tolerance, {k: now[k] / table[k] for k in now},
                 {k: table[k] for k in now}, now, failed, state, len(anchors),
                 level(anchors))
