"""The host's per-layer profile, two ways, side by side: LiteRT's op profiler (its C API)
and prefix differencing.

For each network: how much of the profiled invoke its ops account for; the profiled
invoke against the interpreter's (the LUT's runtime), timed back to back; how far two
profiles taken a minute apart differ per layer (the noise floor), and how far prefix
differencing is from the profile (median |ratio - 1| over the layers of 20 us or more);
each method's wall time. Ratios within one run: the machine's speed drifts.

Run alone: python -m benchmarks.op_profile_bench
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

from analysis.profile import fold_free_ops, prefix_costs
from bench import zoo
from bench.devices import load_config, make_runner
from bench.runners import litert_profiler
from bench.runners.base import BatchItem, Runner, Timing
from bench.tflite_build import build_network
from lut_db.network import Network

NETWORKS = [  # (family, width, resolution, dtype)
    ("mobilenet_v1", 1.0, 32, "float32"),
    ("mobilenet_v1", 1.0, 224, "float32"),
    ("mobilenet_v2", 1.0, 224, "float32"),
    ("mobilenet_v3_small", 1.0, 224, "float32"),
    ("mobilenet_v2", 1.0, 224, "int8"),
]


def _gap(a: list[float], b: list[float]) -> float | None:
    """Median |a/b - 1| over the layers of 20 us or more (in b)."""
    pairs = [(x, y) for x, y in zip(a, b) if y >= 20]
    return statistics.median(abs(x / y - 1) for x, y in pairs) if pairs else None


def _one(runner: Runner, net: Network, passes: int) -> dict[str, Any]:
    model = build_network(net)
    t0 = time.perf_counter()
    first = fold_free_ops(runner.op_profile(model) or [])
    t1 = time.perf_counter()
    # The profiler's own invokes against the interpreter's, back to back (what the LUT
    # and the whole-network timings use).
    invokes = litert_profiler.profile(model, runner.threads, runs=20)
    (interp,) = runner.for_networks().measure([BatchItem(net.name, model)])
    second = fold_free_ops(runner.op_profile(model) or [])
    t2 = time.perf_counter()
    prefixes = prefix_costs(runner.for_networks(), net, passes)
    t3 = time.perf_counter()
    wall_us = statistics.median(i.wall_ns for i in invokes) / 1000
    ops_us = statistics.median(sum(us for _, us in i.ops) for i in invokes)
    assert isinstance(interp, Timing), interp
    return {
        "network": net.name, "dtype": net.nodes[0].spec.dtype, "layers": len(net.nodes),
        "profiled_ops": len(first),
        "ops_over_invoke": ops_us / wall_us,
        "profiled_invoke_over_interpreter": wall_us / interp.latency_us,
        "gap_profile_vs_profile": _gap(second, first),
        "gap_prefix_vs_profile": _gap(prefixes, first),
        "layers_ge_20us": sum(v >= 20 for v in first),
        "profiler_s": t1 - t0, "prefix_s": t3 - t2,
    }


def run(out: dict[str, Any], passes: int = 3) -> None:
    runner = make_runner(load_config("host"))
    try:
        rows = []
        for family, width, res, dtype in NETWORKS:
            net = zoo.family(family).network(width_mult=width, resolution=res).with_dtype(dtype)
            rows.append(_one(runner, net, passes))
    finally:
        runner.close()
    out["op_profile"] = {"method": runner.op_profiler, "prefix_passes": passes, "rows": rows}


if __name__ == "__main__":
    res: dict[str, Any] = {}
    run(res)
    print(json.dumps(res, indent=1))
