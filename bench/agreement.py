"""Do the phones of a farm sweep agree? Read from the replicas table of a version.

Every phone measured the same fixed sample of keys (bench.sweep_plan.replica_sample). For
each key, each phone's latency is divided by the median over phones; per phone the
median and spread of those ratios say whether it runs faster or slower than the rest
(phones of one model do differ: binning, thermal paste, battery age).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from lut_db.store import LutStore
from lut_db.versions import Version


def agreement(store: LutStore, version: Version) -> dict[str, Any]:
    """{"keys": n, "phones": [{"serial", "keys", "median_ratio", "p5", "p95"}, ...]}."""
    by_key: dict[str, dict[str, float]] = defaultdict(dict)
    for row in store.replicas(version):
        if row.get("latency_us"):
            by_key[row["key"]][row["serial"]] = row["latency_us"]
    ratios: dict[str, list[float]] = defaultdict(list)
    for per_phone in by_key.values():
        if len(per_phone) < 2:
            continue
        mid = statistics.median(per_phone.values())
        for serial, value in per_phone.items():
            ratios[serial].append(value / mid)
    phones = [{"serial": s, "keys": len(r), "median_ratio": statistics.median(r),
               "p5": _quantile(r, 0.05), "p95": _quantile(r, 0.95)}
              for s, r in sorted(ratios.items())]
    return {"keys": sum(len(p) >= 2 for p in by_key.values()), "phones": phones}


def _quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]
