"""Numbers of the host slice (layer builds, sweep, estimates), measured side by side in one run.

- build: model build time per layer (target < 2 ms for a conv layer)
- sweep efficiency: sweep wall time / sum of timed invokes (target <= 1.5)
- estimation throughput: MobileNetV1 width configs per second once the table is loaded
  (target >= 50,000/s)
- repeatability: the same 50 keys measured in three fresh processes (target: median
  spread <= 2% for layers over 100 us), side by side (taking turns) and one after the
  other; and the noise floor that explains the difference

- fidelity: 20 random MobileNetV1/V2 width configs, estimated vs measured whole on host

Run alone: python -m benchmarks.foundation_bench --lut luts/host.db
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import quiet, sweep_plan, sweep_run, zoo
from bench.devices import load_config, make_runner
from bench.tflite_build import build_layer, build_network
from lut_db.estimate import SlotEstimator, estimate
from lut_db.spec import LayerSpec
from lut_db.store import LutStore


def bench_build(out: dict[str, Any]) -> None:
    specs = {
        "conv2d 3x3 56x56x128->128": LayerSpec("conv2d", 56, 56, 128, 128, kernel=(3, 3)),
        "conv2d 1x1 56x56x128->128": LayerSpec("conv2d", 56, 56, 128, 128),
        "depthwise 3x3 112x112x64": LayerSpec("depthwise_conv2d", 112, 112, 64, kernel=(3, 3)),
        "conv2d 1x1 7x7x1024->1024 (4 MB weights)": LayerSpec("conv2d", 7, 7, 1024, 1024),
    }
    res = {}
    for name, spec in specs.items():
        times = []
        for i in range(50):
            t0 = time.perf_counter()
            build_layer(spec, seed=i)
            times.append(time.perf_counter() - t0)
        res[name] = statistics.median(times) * 1000
    net = zoo.MOBILENET_V1.network()
    t0 = time.perf_counter()
    build_network(net)
    res["whole MobileNetV1 1.0 224"] = (time.perf_counter() - t0) * 1000
    out["build_ms"] = res


def bench_sweep_efficiency(out: dict[str, Any]) -> None:
    """A fresh sweep of MobileNetV1's space on a coarse grid, with the default settings."""
    specs = zoo.shape_space(zoo.MOBILENET_V1, 224, 128)
    with tempfile.TemporaryDirectory() as d:
        store = LutStore.open(Path(d) / "bench.db", create=True)
        runner = make_runner(load_config("host"))
        p = sweep_plan.plan(store, "host", runner.backend, runner.fingerprint(), specs)
        v = sweep_plan.start_version(store, p, "host", runner.backend, runner.fingerprint(), {})
        r = sweep_run.run(store, v, p.missing, [runner], build_layer)
        out["sweep"] = {"keys": len(specs), "wall_s": r.wall_s, "timed_s": r.timed_s,
                        "efficiency": r.efficiency}


def bench_estimate_throughput(out: dict[str, Any], table: dict[str, float],
                              resolution: int = 224, calibration: Any = None) -> None:
    """Width configs per second through SlotEstimator (the adapter's hot path), plain and
    with the version's calibration side by side, and through Network objects."""
    fam = zoo.MOBILENET_V1
    est = SlotEstimator(fam.slot_layers(resolution), table, missing="error")
    choices = zoo.slot_choices(fam, 32)
    rng = random.Random(0)
    configs = [{s: rng.choice(choices[s]) for s in fam.slots} for _ in range(2000)]
    configs = [c for c in configs if _covered(est, c)]
    rates = {"slot_estimator_per_s": _rate(est, configs)}
    if calibration is not None:
        cal = SlotEstimator(fam.slot_layers(resolution), table, calibration=calibration)
        rates["slot_estimator_calibrated_per_s"] = _rate(cal, configs)
    net = fam.network(configs[0], resolution=resolution)
    t0 = time.perf_counter()
    for _ in range(200):
        estimate(net, table)
    out["estimate"] = {**rates,
                       "estimate_network_object_per_s": 200 / (time.perf_counter() - t0),
                       "configs": len(configs)}


def _rate(est: SlotEstimator, configs: list[dict[str, int]]) -> float:
    for c in configs:  # first pass fills the per-position caches, as in an adapter run
        est(c)
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < 1.0:
        for c in configs:
            est(c)
        n += len(configs)
    return n / (time.perf_counter() - t0)


def _covered(est: SlotEstimator, width: dict[str, int]) -> bool:
    try:
        est(width)
        return True
    except Exception:  # noqa: BLE001 - a config outside the table's space
        return False


# A fresh process measuring the keys as a sweep does (the host config's runner, one
# batch). With TURNS it hands the CPU over after each pass through the batch and waits
# for "go" before the next, so three processes can take turns side by side.
REPEAT_CODE = """
import json, sys
from bench.devices import load_config, make_runner
from bench.runners.base import BatchItem
from bench.tflite_build import build_layer
from lut_db.spec import LayerSpec
turns = sys.argv[1] == "turns"
keys = json.loads(sys.stdin.readline())
items = [BatchItem(k, build_layer(LayerSpec.parse(k))) for k in keys]
r = make_runner(load_config("host"), **json.loads(sys.argv[2]))
run, calls = r._run, [0]
def taking_turns(interp, warmup):
    if calls[0] % len(items) == 0 and calls[0]:
        sys.stdin.readline()
    out = run(interp, warmup)
    calls[0] += 1
    if calls[0] % len(items) == 0 and calls[0] < len(items) * r.passes:
        print("done", flush=True)
    return out
if turns:
    r._run = taking_turns
    print(json.dumps({"passes": r.passes}), flush=True)
    sys.stdin.readline()
res = r.measure(items)
print(json.dumps({k: t.latency_us for k, t in zip(keys, res)}), flush=True)
"""


def _fresh(mode: str, **settings: Any) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", REPEAT_CODE, mode, json.dumps(settings)],
                            stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def _ask(p: subprocess.Popen, line: str) -> str:
    p.stdin.write(line + "\n")
    p.stdin.flush()
    return p.stdout.readline()


def repeat_sequential(keys: list[str]) -> list[dict[str, float]]:
    """Three fresh processes one after the other: the machine's drift between them counts."""
    runs = []
    for _ in range(3):
        p = _fresh("alone")
        runs.append(json.loads(_ask(p, json.dumps(keys))))
        p.stdin.close()
        p.wait()
    return runs


def repeat_side_by_side(keys: list[str], **settings: Any) -> list[dict[str, float]]:
    """Three fresh processes taking turns, one pass through the keys each, so whatever the
    machine's neighbours do meets all three alike (DESIGN.md: compare side by side)."""
    procs = [_fresh("turns", **settings) for _ in range(3)]
    passes = {json.loads(_ask(p, json.dumps(keys)))["passes"] for p in procs}.pop()
    results: list[dict[str, float]] = [{} for _ in procs]
    for n in range(passes):
        for i, p in enumerate(procs):
            reply = _ask(p, "go")
            if n == passes - 1:
                results[i] = json.loads(reply)
    for p in procs:
        p.stdin.close()
        p.wait()
    return results


def _spreads(keys: list[str], runs: list[dict[str, float]]) -> dict[str, Any]:
    spreads, big = [], []
    for k in keys:
        vals = [r[k] for r in runs]
        s = (max(vals) - min(vals)) / statistics.median(vals)
        spreads.append(s)
        if statistics.median(vals) > 100:
            big.append(s)
    scale = [statistics.median(r[k] / statistics.median(x[k] for x in runs) for k in keys)
             for r in runs]
    return {"median_spread_over_100us": statistics.median(big) if big else None,
            "p90_spread_over_100us": _p90(big), "keys_over_100us": len(big),
            "median_spread_all": statistics.median(spreads),
            "process_scale": [round(x, 4) for x in scale]}


def bench_repeatability(out: dict[str, Any], keys: list[str], rounds: int = 3) -> None:
    """The same keys in three fresh processes; spread = (max - min) / median per key.
    Side by side, the host config (10 passes) alternates with one pass per key (the
    runner before passes), ``rounds`` times; then three processes one after the other."""
    one_pass = {"passes": 1, "batch_size": 16}
    res: dict[str, Any] = {"keys": len(keys), "side_by_side": [], "side_by_side_one_pass": []}
    for _ in range(rounds):
        res["side_by_side"].append(_spreads(keys, repeat_side_by_side(keys)))
        res["side_by_side_one_pass"].append(_spreads(keys, repeat_side_by_side(keys, **one_pass)))
    res["sequential"] = _spreads(keys, repeat_sequential(keys))
    out["repeatability"] = res


def bench_noise_floor(out: dict[str, Any], seconds: float = 12.0) -> None:
    """How this machine's speed wanders: one layer timed back to back for ``seconds``,
    the spread (std / mean) of its mean over windows of growing length."""
    p = quiet.probe(seconds, windows=(0.002, 0.02, 0.2, 2.0))
    rows = [{"window_ms": round(1000 * w), "cv_of_window_means": cv}
            for w, cv in p["by_window_s"].items() if cv is not None]
    out["noise_floor"] = {"layer": p["layer"], "seconds": seconds, "invokes": p["invokes"],
                          "windows": rows}


def _p90(v: list[float]) -> float | None:
    return statistics.quantiles(v, n=10)[-1] if len(v) > 1 else None


def bench_fidelity(out: dict[str, Any], table: dict[str, float], n: int = 20) -> None:
    """Random grid width configs of both families: estimated vs measured whole, interleaved."""
    rng = random.Random(1)
    runner = make_runner(load_config("host")).for_networks()
    rows = []
    for i in range(n):
        fam = zoo.MOBILENET_V1 if i % 2 == 0 else zoo.MOBILENET_V2
        choices = zoo.slot_choices(fam, 32)
        width = {s: rng.choice(choices[s]) for s in fam.slots}
        net = fam.network(width, name=f"{fam.name}_rand{i}")
        est = estimate(net, table).total_us
        meas = runner.measure_one(build_network(net)).latency_us
        rows.append({"network": net.name, "estimated_ms": est / 1000,
                     "measured_ms": meas / 1000, "error_pct": 100 * (est - meas) / meas})
    errs = [abs(r["error_pct"]) for r in rows]
    out["fidelity"] = {"networks": n, "mape_pct": statistics.fmean(errs),
                       "max_abs_error_pct": max(errs),
                       "mean_signed_error_pct": statistics.fmean(r["error_pct"] for r in rows),
                       "rows": rows}


def run(out: dict[str, Any], lut: Path) -> None:
    store = LutStore.open(lut)
    version = store.version()
    table = store.table(version)
    bench_build(out)
    bench_estimate_throughput(out, table, calibration=store.calibration(version))
    keys = random.Random(2).sample(sorted(table), 50)
    bench_noise_floor(out)
    bench_repeatability(out, keys)
    bench_sweep_efficiency(out)
    bench_fidelity(out, table)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lut", type=Path, default=Path("luts/host.db"))
    args = ap.parse_args()
    out: dict[str, Any] = {}
    run(out, args.lut)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
