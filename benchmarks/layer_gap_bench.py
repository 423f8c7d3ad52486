"""Where the raw LUT sum loses time at low resolution: each layer of MobileNetV1 at
32 px measured alone (as the LUT does) and inside the whole network (prefix
differencing, as the report's per-layer profile), with its weight size.

Alone, a layer's weights stay in the core's L2 between invokes when they fit; inside
the network the other layers' weights evict them. The section sums the gap of the
layers whose weights fit in L2 alone and what it costs per MB of those weights.

Run alone: python -m benchmarks.layer_gap_bench
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from analysis.profile import prefix_costs
from bench import zoo
from bench.devices import load_config, make_runner
from bench.runners.base import BatchItem, Timing
from bench.tflite_build import build_layer


def l2_bytes(cpu: int) -> int | None:
    """The unified level-2 cache of ``cpu`` as Linux reports it (e.g. "2048K")."""
    for index in Path(f"/sys/devices/system/cpu/cpu{cpu}/cache").glob("index*"):
        if (index / "level").read_text().strip() == "2":
            size = (index / "size").read_text().strip()
            mult = {"K": 1024, "M": 1024**2}.get(size[-1], 1)
            return int(size.rstrip("KM")) * mult
    return None


def run(out: dict[str, Any], resolution: int = 32, passes: int = 5) -> None:
    runner = make_runner(load_config("host"))
    net = zoo.MOBILENET_V1.network(resolution=resolution, classes=10)
    specs = list(dict.fromkeys(net.specs))
    alone = dict(zip((s.key for s in specs),
                     runner.measure([BatchItem(s.key, build_layer(s)) for s in specs])))
    inside = prefix_costs(runner.for_networks(), net, passes)
    l2 = l2_bytes(runner.cpus[0])
    rows, fits = [], []
    for node, cost in zip(net.nodes, inside):
        t = alone[node.spec.key]
        assert isinstance(t, Timing), t
        w = 4 * node.spec.params
        row = {"layer": node.name, "op": node.spec.op, "weight_mb": w / 1e6,
               "alone_us": t.latency_us, "in_network_us": cost, "gap_us": cost - t.latency_us}
        rows.append(row)
        if l2 and 0.25 * l2 <= w <= 1.5 * l2:  # big enough to matter, small enough to stay
            fits.append(row)
    gap = sum(r["gap_us"] for r in rows)
    out["layer_gap"] = {
        "network": net.name, "l2_bytes": l2, "passes": passes,
        "sum_alone_us": sum(r["alone_us"] for r in rows),
        "sum_in_network_us": sum(inside), "gap_us": gap,
        "layers_fitting_l2": [r["layer"] for r in fits],
        "gap_of_those_us": sum(r["gap_us"] for r in fits),
        "their_us_per_weight_mb": statistics.median(r["gap_us"] / r["weight_mb"] for r in fits)
        if fits else None,
        "rows": rows}


if __name__ == "__main__":
    res: dict[str, Any] = {}
    run(res)
    print(json.dumps(res, indent=1))
