"""What limits the estimate on the 32-px adapted networks (the calibration section's
``adapted32`` set): the LUT's entries, or the in-network model?

On luts/host.db, calibrated (the calibration section builds and calibrates it), in one
session: the adapted networks timed ``REPEATS`` times at separate moments, and after every
pass each of their keys timed alone again, so every key has ``2 x REPEATS`` times spread
over the session. Then:

- ``keys``: how far a key's times alone spread over the session (max - min over the
  median), for layers whose weights fit in the L2 the device reports and for those that
  do not, and for matrix-vector layers (``bench.sweep_plan.matrix_vector``: the
  classifier and the last 1x1 convs at 32 px, whose time is all weight reads) apart from
  the others;
- ``networks``: each network's error with the stored entries (brought to now by the
  session's drift, as the calibration section does) and with the medians of its keys'
  times now (no stale entry, no drift factor), as Bland–Altman limits beside the
  networks' own repeatability;
- ``biggest``: each network's largest layer inside the network (LiteRT's op profiler,
  the median of ``PROFILES``) against its times alone (median and minimum);
- ``cold``: those largest layers alone again, back to back (as the LUT times them) and
  with a buffer of ``FLUSH_MB`` read between invokes, so their weights come from beyond
  the L2 as inside a network whose working set overflows it.

If the fresh medians left the errors as wide as the stored entries, the LUT's entries are
not what limits this set; if the largest layers' inside/alone ratios scatter as wide, a
per-layer term cannot take that out either.
Run alone: ``python -m benchmarks.adapted_limit_bench [--lut luts/host.db]``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics as st
import time
from pathlib import Path
from typing import Any

from analysis import agreement
from analysis import calibrate as cb
from analysis.features import all_tables
from analysis.profile import fold_free_ops
from analysis.sampling import Space
from bench.devices import open_runners
from bench.sweep_plan import matrix_vector
from bench.tflite_build import build_network
from bench.timing import remeasure, time_networks
from benchmarks.calibration_bench import test_sets
from lut_db.calibration import weight_mb
from lut_db.network import Network
from lut_db.spec import LayerSpec
from lut_db.store import LutStore

REPEATS = 5
PASSES = 2
PROFILES = 3
FLUSH_MB = 4  # eight times a 0.5 MB L2: what a layer left there is gone after reading it
COLD_INVOKES = 200


def spread(xs: list[float]) -> float:
    return (max(xs) - min(xs)) / st.median(xs)


def key_groups(times: dict[str, list[float]], l2_mb: float) -> dict[str, dict[str, float]]:
    """The median and 90th-percentile spread of the keys' times alone, per group."""
    groups: dict[str, list[float]] = {}
    for k, xs in times.items():
        spec = LayerSpec.parse(k)
        where = "fit in the L2" if weight_mb(spec) <= l2_mb else "beyond the L2"
        shape = "matrix-vector" if matrix_vector(k) else "other"
        groups.setdefault(f"{shape}, {where}", []).append(spread(xs))
    return {g: {"keys": len(v), "median_spread_pct": 100 * st.median(v),
                "p90_spread_pct": 100 * sorted(v)[int(0.9 * (len(v) - 1))]}
            for g, v in sorted(groups.items())}


def biggest_layers(runner: Any, nets: list[Network], alone: dict[str, list[float]],
                   overhead: float) -> list[dict[str, Any]]:
    """Each network's largest layer inside (profiled) against alone (less the overhead)."""
    out = []
    for net in nets:
        runs = [fold_free_ops(runner.op_profile(build_network(net)) or [])
                for _ in range(PROFILES)]
        if any(len(r) != len(net.nodes) for r in runs):
            continue
        inside = [st.median(c) for c in zip(*runs)]
        i = max(range(len(net.nodes)), key=lambda j: st.median(alone[net.nodes[j].spec.key]))
        xs = [x - overhead for x in alone[net.nodes[i].spec.key]]
        out.append({"network": net.name, "layer": net.nodes[i].spec.key,
                    "inside_us": inside[i], "alone_median_us": st.median(xs),
                    "alone_min_us": min(xs), "inside_over_median": inside[i] / st.median(xs)})
    return out


def warm_cold(keys: list[str], rounds: int = 6) -> dict[str, dict[str, float]]:
    """Each key's median invoke (us) back to back and with the L2 flushed before each
    invoke, over ``rounds`` alternating rounds (LiteRT in this process, one thread)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from bench.tflite_build import build_layer

    flush = np.ones(FLUSH_MB * 2**20 // 8)

    def timed(interp: Any, cold: bool) -> float:
        times = []
        for _ in range(COLD_INVOKES):
            if cold:
                flush.sum()
            t0 = time.perf_counter_ns()
            interp.invoke()
            times.append(time.perf_counter_ns() - t0)
        return st.median(times) / 1e3

    interps = {}
    for k in keys:
        interps[k] = Interpreter(model_content=build_layer(LayerSpec.parse(k)), num_threads=1)
        interps[k].allocate_tensors()
    got: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in keys}
    for _ in range(rounds):
        for k, interp in interps.items():
            got[k][0].append(timed(interp, False))
            got[k][1].append(timed(interp, True))
    return {k: {"warm_us": st.median(w), "cold_us": st.median(c),
                "cold_over_warm": st.median(c) / st.median(w)} for k, (w, c) in got.items()}


def run(out: dict[str, Any], lut: Path = Path("luts/host.db")) -> None:
    store = LutStore.open(lut)
    version = store.version()
    cal = store.calibration(version)
    if cal is None:
        raise SystemExit(f"{lut} is not calibrated: run the calibration section first")
    space = Space.of(version.space)
    fitted = {n.name for n in cb.calibration_set(space, len(cal.networks))}
    nets = test_sets(space, fitted)["adapted32"]
    tables = all_tables(store, version)
    lut_us = {**tables.table, **tables.extra}
    keys = list(dict.fromkeys(k for n in nets for k in n.keys))
    missing = [k for k in keys if k not in lut_us]
    if missing:
        raise SystemExit(f"{lut} lacks {len(missing)} of the adapted networks' keys: run the "
                         "calibration section first")
    times: dict[str, list[float]] = {k: [] for k in keys}
    with open_runners("host") as runners:
        runner = runners[0]

        def again(p: int) -> None:
            order = keys[:]
            random.Random(p).shuffle(order)
            for k, v in remeasure(runner, order)[0].items():
                times[k].append(v)

        timed = time_networks(runner, {n.name: n for n in nets}, PASSES, repeats=REPEATS,
                              seed=5, between=again)
        overhead = cal.overhead_us
        out["biggest"] = biggest_layers(runner, nets, times, overhead)
    out["cold"] = warm_cold(sorted({b["layer"] for b in out["biggest"]}))
    store.close()
    l2_mb = (version.fingerprint.get("cache_kb") or {}).get("l2", 512) / 1024
    out["keys"] = key_groups(times, l2_mb)
    measured = [timed[n.name].latency_us for n in nets]
    stored, fresh, rows = [], [], []
    for n, m in zip(nets, measured):
        then = sum(lut_us[k] for k in n.keys)
        now = sum(st.median(times[k]) for k in n.keys)
        layers = [(node.spec, lut_us[node.spec.key]) for node in n.nodes]
        stored.append(cal.network_us(layers) * now / then)  # the stored entries, now
        fresh.append(cal.network_us([(s, st.median(times[s.key])) for s, _ in layers]))
        rows.append({"network": n.name, "measured_us": m,
                     "stored_pct": 100 * (stored[-1] / m - 1),
                     "fresh_pct": 100 * (fresh[-1] / m - 1)})
    repeats = [list(timed[n.name].repeats_us) for n in nets]
    out["networks"] = rows
    out["limits"] = {"stored": agreement.side_by_side(stored, measured, repeats),
                     "fresh": agreement.side_by_side(fresh, measured, repeats)}
    out["calibration"] = {"model": cal.model, "cache_source": cal.cache_source}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lut", type=Path, default=Path("luts/host.db"))
    out: dict[str, Any] = {}
    run(out, ap.parse_args().lut)
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
