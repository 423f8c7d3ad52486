"""Whole networks timed in interleaved passes: one place for every caller.

Calibration, validation, adapt's verification and `netadapt measure` all time whole
networks here, and a sample of their layers again beside them (``remeasure``,
``sum_ratio``): the device's drift since its LUT was measured. Each network is timed
once per pass; passes are rounds over the whole set, each in its own shuffled order, so
slow drift of the device spreads over the set as noise instead of biasing whichever
networks ran during a slow spell. The runner times one pass per call
(``Runner.for_networks``), and every pass is kept with the moment it was measured, so
the spread and the run count travel with the number.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from bench.runners.base import BatchItem, Failure, Runner, RunnerError, Timing
from lut_db.spec import LayerSpec, Network

Progress = Callable[[int, str], None]  # (networks just timed, what is being timed)
Model = Network | bytes  # a network to build, or a .tflite file's own bytes


class NetworkFailed(RunnerError):
    """A whole network the device could not run."""


def time_networks(runner: Runner, models: Mapping[str, Model], passes: int = 3, *,
                  seed: int = 0, chunk: int = 4, progress: Progress | None = None,
                  between: Callable[[int], None] | None = None) -> dict[str, list[Timing]]:
    """Each model timed once per pass, passes interleaved over the set (see the module).
    ``between(p)`` runs after pass p (e.g. a drift sample, measured interleaved too)."""
    from bench.tflite_build import build_network

    one = runner.for_networks()
    out: dict[str, list[Timing]] = {name: [] for name in models}
    rng = random.Random(seed)
    start = time.monotonic()
    for p in range(passes):
        order = list(models)
        rng.shuffle(order)
        for names in _chunks(order, chunk):
            items = [BatchItem(n, m if isinstance(m, bytes) else build_network(m))
                     for n in names for m in (models[n],)]
            results = one.measure(items)
            at = time.monotonic() - start  # when (s into the session): for drift analysis
            for name, res in zip(names, results):
                if isinstance(res, Failure):
                    raise NetworkFailed(f"{name} failed on the device: {res.error}")
                out[name].append(replace(res, extra={**res.extra, "at_s": round(at, 2)}))
            if progress:
                progress(len(names), f"pass {p + 1}/{passes}")
        if between:
            between(p)
    return out


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def summary(timings: Sequence[Timing]) -> dict[str, Any]:
    """One network's passes -> its latency (median over passes, us) and the spread."""
    lat = [t.latency_us for t in timings]
    return {"latency_us": statistics.median(lat), "passes_us": lat,
            "passes_at_s": [t.extra.get("at_s") for t in timings],
            "pass_spread": (max(lat) - min(lat)) / statistics.median(lat),
            "runs": sum(t.runs for t in timings),
            "min_us": min(t.min_us for t in timings),
            "max_us": max(t.max_us for t in timings),
            "preempted": sum(int(t.extra.get("preempted", 0)) for t in timings)}


def median_ms(runner: Runner, models: Mapping[str, Model], passes: int = 3,
              seed: int = 0, between: Callable[[int], None] | None = None) -> dict[str, float]:
    """Each model's latency in ms: the median over interleaved passes (``between``: as in
    ``time_networks``)."""
    timed = time_networks(runner, models, passes, seed=seed, between=between)
    return {n: summary(t)["latency_us"] / 1000 for n, t in timed.items()}


# -- layers timed again beside networks: the device's drift since its LUT --------------------


def remeasure(runner: Runner, keys: Sequence[str],
              progress: Callable[[int], None] | None = None) -> tuple[dict[str, float], list[str]]:
    """Latency of each key measured alone now (us), and the keys that failed."""
    from bench.tflite_build import build_layer

    now: dict[str, float] = {}
    failed: list[str] = []
    size = runner.batch_size  # as the sweep measured them
    for i in range(0, len(keys), size):
        batch = keys[i:i + size]
        results = runner.measure([BatchItem(k, build_layer(LayerSpec.parse(k))) for k in batch])
        for k, res in zip(batch, results):
            if isinstance(res, Failure):
                failed.append(k)
            else:
                now[k] = res.latency_us
        if progress:
            progress(len(batch))
    return now, failed


class DriftSample:
    """Layer keys timed alone again, one slice after each pass of whole networks, so the
    sample spans the session as the networks do; ``sum_ratio(table, sample.now)`` is how
    much slower the device runs now than when ``table`` was measured."""

    def __init__(self, runner: Runner, plan: Sequence[str]) -> None:
        self.runner, self.plan = runner, list(plan)
        self.now: dict[str, float] = {}

    def measure_slice(self, p: int, passes: int) -> None:
        """After pass ``p`` of ``passes``: time the plan's p-th slice."""
        size = -(-len(self.plan) // max(passes, 1))
        self.now.update(remeasure(self.runner, self.plan[p * size:(p + 1) * size])[0])


def sum_ratio(table: Mapping[str, float], now: Mapping[str, float]) -> float:
    """How much slower the device runs these keys now than in ``table`` (sum / sum)."""
    keys = [k for k in now if k in table]
    return sum(now[k] for k in keys) / sum(table[k] for k in keys) if keys else 1.0
