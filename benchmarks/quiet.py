"""Is the machine quiet enough to measure? Its load, and its own noise, probed.

The load average and steal time miss what a shared VM's neighbours do to its caches and
memory bandwidth: on a morning with a load of 0.3 and 0.7 % steal, one layer timed back to
back varied by 10 % between 0.2 s windows, where a quiet hour gives 1-3 %. So before each
section ``make bench`` times one layer back to back for a few seconds (``probe``) and
stores the spread of its 0.2 s window means with the section's numbers; with
``--wait-quiet`` it first waits, probing again, until the load and that spread are both
under their limits (or the wait runs out, which the section's results then say).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.machine_state import parse_loadavg, read_text
from lut_db.spec import LayerSpec

PROBE_LAYER = LayerSpec("conv2d", 7, 7, 960, 576, act="relu6")  # ~0.4 ms, 2 MB of weights
QUIET_LOAD = 0.3  # 1-minute load average
QUIET_NOISE = 0.03  # spread (std / mean) of the probe's 0.2 s window means
WINDOW_S = 0.2


def window_noise(samples_ns: list[int], per_s: float, window_s: float = WINDOW_S
                 ) -> float | None:
    """std / mean of the means of consecutive ``window_s`` windows of timed invokes."""
    n = max(1, round(window_s * per_s))
    means = [statistics.fmean(samples_ns[i:i + n])
             for i in range(0, len(samples_ns) - n + 1, n)]
    return statistics.stdev(means) / statistics.fmean(means) if len(means) > 2 else None


def probe(seconds: float = 6.0, windows: tuple[float, ...] = (WINDOW_S,)) -> dict[str, Any]:
    """One layer timed back to back for ``seconds`` on this machine: the spread of its
    window means per window length, and the load average before it (its own run adds
    0.1 to the 1-minute average)."""
    from bench.runners.host import HostRunner
    from bench.tflite_build import build_layer

    load = parse_loadavg(read_text("/proc/loadavg"))
    interp = HostRunner()._interpreter(build_layer(PROBE_LAYER))
    for _ in range(20):
        interp.invoke()
    samples: list[int] = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter_ns()
        interp.invoke()
        samples.append(time.perf_counter_ns() - t0)
    per_s = len(samples) / seconds
    noise = {w: window_noise(samples, per_s, w) for w in windows}
    return {"layer": PROBE_LAYER.key, "seconds": seconds, "invokes": len(samples),
            "noise": noise.get(WINDOW_S), "by_window_s": noise,
            "load_1m": load}


def is_quiet(p: dict[str, Any]) -> bool:
    return ((p.get("load_1m") or 0.0) < QUIET_LOAD
            and p.get("noise") is not None and p["noise"] < QUIET_NOISE)


def describe(p: dict[str, Any]) -> str:
    noise = f"{100 * p['noise']:.1f} %" if p.get("noise") is not None else "unknown"
    return f"load {p.get('load_1m')}, one layer's 0.2 s means spread {noise}"


def wait_quiet(limit_s: float, probe_fn: Callable[[], dict[str, Any]] = probe,
               sleep: Callable[[float], None] = time.sleep, every_s: float = 30.0,
               clock: Callable[[], float] = time.monotonic,
               say: Callable[[str], None] = print) -> dict[str, Any]:
    """Probe until the machine is quiet or ``limit_s`` has passed: the last probe, with
    how long it waited and whether it was quiet."""
    start = clock()
    while True:
        waited = clock() - start  # before this probe
        p = probe_fn()
        if is_quiet(p) or clock() - start >= limit_s:
            return {**p, "quiet": is_quiet(p), "waited_s": round(waited, 1)}
        say(f"waiting for a quiet machine ({describe(p)}; limits: load {QUIET_LOAD}, "
            f"{100 * QUIET_NOISE:.0f} %)")
        sleep(every_s)
