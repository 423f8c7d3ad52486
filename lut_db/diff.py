"""Two versions compared key by key: which keys each holds alone, and per common key the
ratio of their latencies (``netadapt db diff``)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from lut_db.versions import Version


@dataclass
class Diff:
    a: int
    b: int
    common: int
    only_a: list[str]
    only_b: list[str]
    ratios: dict[str, float]  # key -> b / a

    def summary(self) -> dict[str, Any]:
        r = sorted(self.ratios.values())
        out: dict[str, Any] = {"a": self.a, "b": self.b, "common": self.common,
                               "only_a": len(self.only_a), "only_b": len(self.only_b)}
        if r:
            q = statistics.quantiles(r, n=20) if len(r) > 1 else [r[0]] * 19
            out.update(median_ratio=statistics.median(r), p5=q[0], p95=q[-1],
                       min=r[0], max=r[-1],
                       within_5pct=sum(abs(x - 1) <= 0.05 for x in r) / len(r))
        return out


class DiffMixin:
    """LutStore's diff (uses its ``table``)."""

    def diff(self, a: Version, b: Version) -> Diff:
        ta, tb = self.table(a), self.table(b)
        common = ta.keys() & tb.keys()
        return Diff(a.id, b.id, len(common), sorted(ta.keys() - tb.keys()),
                    sorted(tb.keys() - ta.keys()),
                    {k: tb[k] / ta[k] for k in sorted(common) if ta[k] > 0})
