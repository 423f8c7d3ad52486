"""Is the machine quiet enough to measure? Its load, and its own noise, probed.

The load average and steal time miss what a shared VM's neighbours do to its caches and
memory bandwidth: on a morning with a load of 0.3 and 0.7 % steal, one layer timed back to
back varied by 10 % between 0.2 s windows, where a quiet hour gives 1-3 %. So before each
section ``make bench`` times one layer back to back for a few seconds (``probe``) and
stores the spread of its 0.2 s window means with the section's numbers; with
``--wait-quiet`` it first waits, probing again, until the load and that spread are both
under their limits (or the wait runs out, which the section's results then say).

Neither number sees the L3, which a VM shares with its neighbours: a network whose weights
fill half of it (MobileNetV1 x1.0 at 32 px, 16 MB of a 32 MB L3) ran 515 us one morning and
525-990 us every afternoon, at the same load and one-layer spread. So the probe also times
two fully connected layers back to back, one whose weights fill half the L3 and one an
eighth (``l3_slowdown``): per weight byte, the larger runs as fast as the smaller while
half the L3 is ours, and slower as neighbours take it.

``netadapt doctor`` runs the same probe for a few seconds on this machine (its "quiet"
check), so a user can ask before a sweep what ``make bench`` asks before a section.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.cpu_caches import cache_field, read_host
from bench.machine_state import parse_loadavg, read_text
from lut_db.calibration import weight_mb
from lut_db.spec import LayerSpec

PROBE_LAYER = LayerSpec("conv2d", 7, 7, 960, 576, act="relu6")  # ~0.4 ms, 2 MB of weights
QUIET_LOAD = 0.3  # 1-minute load average
QUIET_NOISE = 0.03  # spread (std / mean) of the probe's 0.2 s window means
WINDOW_S = 0.2
QUIET_L3 = 1.3  # per-byte time of the half-L3 layer over the eighth-L3 layer
QUIET_SPELL = 2  # probes in a row (``every_s`` apart) that must find the machine quiet


def window_noise(samples_ns: list[int], per_s: float, window_s: float = WINDOW_S
                 ) -> float | None:
    """std / mean of the means of consecutive ``window_s`` windows of timed invokes."""
    n = max(1, round(window_s * per_s))
    means = [statistics.fmean(samples_ns[i:i + n])
             for i in range(0, len(samples_ns) - n + 1, n)]
    return statistics.stdev(means) / statistics.fmean(means) if len(means) > 2 else None


def _timed(spec: LayerSpec, seconds: float) -> list[int]:
    """``spec`` invoked back to back for ``seconds`` after 20 warm-ups: each invoke's ns."""
    from bench.runners.host import HostRunner
    from bench.tflite_build import build_layer

    interp = HostRunner()._interpreter(build_layer(spec))
    for _ in range(20):
        interp.invoke()
    samples: list[int] = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter_ns()
        interp.invoke()
        samples.append(time.perf_counter_ns() - t0)
    return samples


def l3_layers(l3_kb: int) -> tuple[LayerSpec, LayerSpec]:
    """Square fully connected layers whose float weights fill half and an eighth of the L3."""
    def fc(weight_bytes: float) -> LayerSpec:
        n = max(64, round(math.sqrt(weight_bytes / 4) / 64) * 64)
        return LayerSpec("fully_connected", 1, 1, n, n)
    return fc(l3_kb * 1024 / 2), fc(l3_kb * 1024 / 8)


def l3_slowdown(l3_kb: int, seconds: float = 1.0) -> dict[str, Any]:
    """Per weight byte, the half-L3 layer's median time over the eighth-L3 layer's."""
    big, small = l3_layers(l3_kb)
    t_big, t_small = (statistics.median(_timed(s, seconds)) for s in (big, small))
    per_byte = [t / weight_mb(s) for t, s in ((t_big, big), (t_small, small))]
    return {"l3_slowdown": round(per_byte[0] / per_byte[1], 3),
            "l3_layers": [big.key, small.key],
            "l3_us": [round(t_big / 1e3, 1), round(t_small / 1e3, 1)]}


def probe(seconds: float = 6.0, windows: tuple[float, ...] = (WINDOW_S,)) -> dict[str, Any]:
    """One layer timed back to back for ``seconds`` on this machine: the spread of its
    window means per window length, and the load average before it (its own run adds
    0.1 to the 1-minute average); then the L3 probe when the machine reports an L3."""
    load = parse_loadavg(read_text("/proc/loadavg"))
    samples = _timed(PROBE_LAYER, seconds)
    per_s = len(samples) / seconds
    noise = {w: window_noise(samples, per_s, w) for w in windows}
    l3_kb = cache_field(read_host(), [0]).get("cache_kb", {}).get("l3")
    return {"layer": PROBE_LAYER.key, "seconds": seconds, "invokes": len(samples),
            "noise": noise.get(WINDOW_S), "by_window_s": noise,
            "load_1m": load, **(l3_slowdown(l3_kb, min(1.0, seconds / 6)) if l3_kb else {})}


def is_quiet(p: dict[str, Any]) -> bool:
    """Load and one layer's spread under their limits, and the L3 ours where it is known."""
    return ((p.get("load_1m") or 0.0) < QUIET_LOAD
            and p.get("noise") is not None and p["noise"] < QUIET_NOISE
            and p.get("l3_slowdown", 0.0) < QUIET_L3)


def describe(p: dict[str, Any], limits: bool = False) -> str:
    """The probe's numbers in words; with ``limits``, each next to the limit ``is_quiet``
    judges it by (the doctor's check and ``wait_quiet`` say them that way)."""
    def under(limit: object, word: str = "") -> str:
        return f" ({word}under {limit})" if limits else ""

    noise = f"{100 * p['noise']:.1f} %" if p.get("noise") is not None else "unknown"
    parts = [f"load {p.get('load_1m') or 0.0:.2f}{under(QUIET_LOAD, 'quiet: ')}",
             f"one layer's {WINDOW_S} s means spread {noise}{under(f'{100 * QUIET_NOISE:.0f} %')}"]
    if "l3_slowdown" in p:
        big, small = ([f"{weight_mb(LayerSpec.parse(k)):.0f} MB" for k in p.get("l3_layers", [])]
                      or ["half-L3", "eighth-L3"])
        parts.append(f"the shared L3: a {big} layer {p['l3_slowdown']:.2f}x slower per byte "
                     f"than a {small} one{under(QUIET_L3)}")
    return "; ".join(parts)


def wait_quiet(limit_s: float, probe_fn: Callable[[], dict[str, Any]] = probe,
               sleep: Callable[[float], None] = time.sleep, every_s: float = 30.0,
               clock: Callable[[], float] = time.monotonic,
               say: Callable[[str], None] = print, spell: int = QUIET_SPELL) -> dict[str, Any]:
    """Probe until ``spell`` probes in a row find the machine quiet, or ``limit_s`` has
    passed: the last probe, with how long it waited and whether it was quiet. A quiet
    spell, not a quiet instant: the L3's neighbours come and go within a minute. Not
    waiting (``limit_s`` 0), one probe says."""
    start, need, run = clock(), (spell if limit_s > 0 else 1), 0
    while True:
        waited = clock() - start  # before this probe
        p = probe_fn()
        run = run + 1 if is_quiet(p) else 0
        if run >= need or clock() - start >= limit_s:
            return {**p, "quiet": run >= need, "waited_s": round(waited, 1)}
        say(f"waiting for a quiet machine ({describe(p, limits=True)}; {run} of {need} probes "
            "in a row)")
        sleep(every_s)
