"""Numbers of the phone farm, on a loopback ADB device of this machine.

The whole ADB stack is real (adbutils -> a private adb server -> the loopback device
of loopback/adb/), and the device's benchmark tool is ai-edge-litert's
``litert-benchmark`` (one Python process per model, 0.01 ms resolution).

- round trips: ADB round trips (shell calls + sync sessions) per 100 shapes swept,
  counted by the transport; the fixed per-sweep costs listed apart
- efficiency: sweep wall time / sum of timed runs, ADB and host runner on the same keys
- agreement: ADB / host latency on the same 50 keys, measured alternately in batches
  of 10 on the same pinned core (median ratio and spread)

Run alone: python -m benchmarks.adb_bench
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

from bench import sweep_plan, sweep_run, sweep_seal, zoo
from bench.devices import make_runners, parse_config
from bench.runners.base import BatchItem, Timing
from bench.runners.host import HostRunner
from bench.tflite_build import build_layer
from lut_db.spec import LayerSpec
from lut_db.store import LutStore

RUNS, WARMUP = 15, 3
AGREEMENT_KEYS = 50


def _phone_config(tmp: Path, port: int, cpu: int) -> Any:
    litert = Path(sys.executable).parent / "litert-benchmark"
    tool = tmp / "litert-benchmark.sh"
    tool.write_text(f'#!/bin/sh\nexec "{litert}" "$@"\n')
    tool.chmod(0o755)
    toml = f"""
name = "loopback"
kind = "android"
[match]
"ro.product.model" = "Loopback"
[adb]
servers = ["127.0.0.1:{port}"]
[backends.tflite-cpu]
runner = "adb-tflite"
tool = "litert-benchmark"
binary = {json.dumps(str(tool))}
work_dir = {json.dumps(str(tmp / "phone" / "netadapt"))}
cpus = [{cpu}]
threads = 1
warmup = {WARMUP}
runs = {RUNS}
"""
    return parse_config(tomllib.loads(toml), tmp / "loopback.toml")


def _sweep(runner: Any, specs: set[LayerSpec], tmp: Path, name: str) -> tuple[Any, int, int]:
    """(SweepResult, round trips of the batches, round trips of the overhead model)."""
    store = LutStore.open(tmp / f"{name}.db", create=True)
    fp = runner.fingerprint()
    p = sweep_plan.plan(store, name, runner.backend, fp, specs)
    v = sweep_plan.start_version(store, p, name, runner.backend, fp, {})
    rt0 = getattr(runner, "round_trips", 0)
    res = sweep_run.run(store, v, p.missing, [runner], build_layer,
                        getattr(runner, "batch_size", 16), seal=False)
    rt1 = getattr(runner, "round_trips", 0)
    sweep_seal.measure_overhead(store, v, runner, build_layer)
    rt2 = getattr(runner, "round_trips", 0)
    return res, rt1 - rt0, rt2 - rt1


def _agreement(adb: Any, host: HostRunner, keys: list[str]) -> dict[str, Any]:
    rows = []
    for i in range(0, len(keys), 10):  # alternate: drift between them becomes noise
        items = [BatchItem(k, build_layer(LayerSpec.parse(k))) for k in keys[i:i + 10]]
        a_res = adb.measure(items)
        h_res = host.measure(items)
        for item, a, h in zip(items, a_res, h_res):
            if isinstance(a, Timing) and isinstance(h, Timing):
                rows.append((item.key, a.latency_us, h.latency_us))
    ratios = [a / h for _, a, h in rows if a > 0]
    big = [a / h for _, a, h in rows if h >= 500 and a > 0]
    return {"keys": len(rows), "median_ratio": statistics.median(ratios),
            "p5": _q(ratios, 0.05), "p95": _q(ratios, 0.95),
            "keys_over_0.5ms": len(big),
            "median_ratio_over_0.5ms": statistics.median(big) if big else None,
            "p5_over_0.5ms": _q(big, 0.05) if big else None,
            "p95_over_0.5ms": _q(big, 0.95) if big else None,
            "zero_readings": sum(a == 0 for _, a, _ in rows)}


def _big_keys(host: HostRunner, n: int, min_us: float = 500.0) -> list[str]:
    """n keys of the MobileNetV1 spaces (224 and 320 px, grid 32) taking >= min_us on host."""
    pool = sorted({s.key for r in (224, 320) for s in zoo.shape_space(zoo.MOBILENET_V1, r, 32)})
    picked = []
    for key in random.Random(1).sample(pool, len(pool)):
        if host.measure_one(build_layer(LayerSpec.parse(key))).latency_us >= min_us:
            picked.append(key)
        if len(picked) == n:
            break
    return picked


def _tool_start_s(tmp: Path) -> float:
    """Wall time of one litert-benchmark process on the smallest model, 1 run."""
    model = tmp / "tiny.tflite"
    model.write_bytes(build_layer(sweep_seal.OVERHEAD_SPEC))
    tool = Path(sys.executable).parent / "litert-benchmark"
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([str(tool), f"--model={model}", "--num_runs=1", "--warmup_runs=0"],
                       capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _q(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def run(out: dict[str, Any]) -> None:
    from loopback.adb.device import LoopbackDevice
    from loopback.adb.server import AdbServer

    specs = zoo.shape_space(zoo.MOBILENET_V1, 224, 256)
    cpu = max(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="adb-bench-") as d:
        tmp = Path(d)
        (tmp / "home").mkdir()
        with AdbServer(home=tmp / "home") as server, LoopbackDevice(tmp / "root") as device:
            os.environ["ANDROID_ADB_SERVER_PORT"] = str(server.port)  # never port 5037
            server.connect(device.serial)
            (adb,) = make_runners(_phone_config(tmp, server.port, cpu))
            setup_rt = adb.round_trips
            res, batch_rt, overhead_rt = _sweep(adb, specs, tmp, "adb")
            host = HostRunner(threads=1, cpus=[cpu], warmup=WARMUP, runs=RUNS, min_time_ms=0)
            hres, _, _ = _sweep(host, specs, tmp, "host")
            out["agreement"] = _agreement(adb, host, _big_keys(host, AGREEMENT_KEYS))
            small = random.Random(0).sample(sorted(s.key for s in specs), AGREEMENT_KEYS)
            out["agreement_random_keys"] = _agreement(adb, host, small)
            tool_s = _tool_start_s(tmp)
            adb.close()
    n = len(specs)
    out["round_trips"] = {
        "shapes": n, "batch_size": adb.batch_size, "batches_round_trips": batch_rt,
        "per_100_shapes": 100 * batch_rt / n,
        "fixed_setup (probe + binary push)": setup_rt,
        "fixed_overhead_model (per version)": overhead_rt}
    out["efficiency"] = {
        "keys": n, "runs": RUNS, "warmup": WARMUP,
        "adb_wall_s": res.wall_s, "adb_timed_s": res.timed_s, "adb_efficiency": res.efficiency,
        "host_wall_s": hres.wall_s, "host_timed_s": hres.timed_s,
        "host_efficiency": hres.efficiency,
        "adb_wall_per_model_s": res.wall_s / n,
        "litert_benchmark_process_start_s": tool_s,
        "adb_rest_per_model_s (wall - timed - process start)":
            (res.wall_s - res.timed_s) / n - tool_s}


if __name__ == "__main__":
    results: dict[str, Any] = {}
    run(results)
    print(json.dumps(results, indent=1))
