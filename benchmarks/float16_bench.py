"""float16 against float32 on this host, side by side: the same layers and networks built
both ways, timed in the same batches (interleaved), as ratios.

On this x86 CPU XNNPACK dequantizes float16 weights once, at load, and computes in
float32, so the ratio says whether a float16 key costs what its float32 twin does here
(where fp16 arithmetic exists, a phone's CPU or GPU, it will not).

Run alone: python -m benchmarks.float16_bench
"""

from __future__ import annotations

import json
import random
import statistics
from dataclasses import replace
from typing import Any

from bench import zoo
from bench.devices import load_config, make_runner
from bench.runners.base import BatchItem, Timing
from bench.tflite_build import build_layer, build_network
from bench.timing import median_ms

NETWORKS = [("mobilenet_v1", 224), ("mobilenet_v2", 224), ("mobilenet_v3_small", 224),
            ("mobilenet_v1", 32)]


def _layers(runner: Any, n: int, seed: int = 0) -> dict[str, Any]:
    """``n`` keys of the MobileNetV1+V2 space at 224 px, each at float32 and float16 in
    one batch: the median and spread of their latency ratios, and the file size ratio."""
    specs = random.Random(seed).sample(zoo.spaces(["mobilenet_v1", "mobilenet_v2"], 224), n)
    ratios, sizes = [], []
    for spec in specs:
        half = replace(spec, dtype="float16")
        models = [build_layer(spec), build_layer(half)]
        a, b = runner.measure([BatchItem(spec.key, m) for m in models])
        if isinstance(a, Timing) and isinstance(b, Timing):
            ratios.append(b.latency_us / a.latency_us)
            sizes.append(len(models[1]) / len(models[0]))
    q = statistics.quantiles(ratios, n=10)
    return {"keys": len(ratios), "median_latency_ratio": statistics.median(ratios),
            "p10_ratio": q[0], "p90_ratio": q[-1], "median_file_ratio": statistics.median(sizes)}


def run(out: dict[str, Any], layers: int = 60, passes: int = 7) -> None:
    runner = make_runner(load_config("host"))
    try:
        nets = {}
        for family, res in NETWORKS:
            net = zoo.family(family).network(resolution=res)
            nets[net.name] = net
            nets[net.name + "-float16"] = net.with_dtype("float16")
        ms = median_ms(runner, nets, passes=passes)
        rows = [{"network": name, "float32_ms": ms[name], "float16_ms": ms[name + "-float16"],
                 "ratio": ms[name + "-float16"] / ms[name],
                 "file_ratio": len(build_network(nets[name + "-float16"]))
                 / len(build_network(nets[name]))}
                for name in nets if not name.endswith("-float16")]
        out["float16"] = {"passes": passes, "networks": rows, "layers": _layers(runner, layers)}
    finally:
        runner.close()


if __name__ == "__main__":
    res: dict[str, Any] = {}
    run(res)
    print(json.dumps(res, indent=1))
