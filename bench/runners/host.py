"""The host runner: this machine's LiteRT interpreter, in-process.

Each model gets its own interpreter (XNNPACK, fixed thread count). A batch is timed in
``passes`` rounds over all its models: W warm-up invokes before the first round (one
before each later round, as the other models evicted the caches), then timed invokes
until the round's share of ``runs`` and ``min_time_ms`` is reached. Spreading a model's
runs over rounds matters on a shared machine: its speed wanders with what the
neighbours do, correlated over ~0.2 s (see benchmarks/README.md, "Repeatability"), so 20 ms in one go
measures one moment while 10 x 2 ms spread over a few seconds measures the machine.
With one thread, an invoke whose wall time exceeds its thread CPU time was preempted by
another process; it is dropped and counted, not timed.
While it times (``measure``, ``op_profile``) the calling thread is pinned to the configured
CPUs so the scheduler cannot move it; its own CPUs come back when the timing ends, so
nothing else in the process runs pinned and no caller has to undo it.
``op_profile`` reads LiteRT's own op profiler (``litert_profiler``, its C API).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import platform
import time
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import trim_mean

from bench.cpu_caches import cache_field, read_host
from bench.machine_state import HostProbe, StateProbe
from bench.runners import litert_profiler
from bench.runners.base import BaseRunner, BatchItem, Failure, Result, Runner, RunnerError, Timing
from bench.runners.checks import Check, require
from lut_db.linux import require_linux

PREEMPTED = 0.02  # an invoke whose wall time exceeds its CPU time by this share was preempted
PREEMPTED_NS = 20_000  # ... and by at least this much (timer and syscall jitter)
GIVE_UP_NS = 50_000_000  # a pass never gives up sooner: one scheduler slice lost between
# two invokes of a tiny layer must not end its pass with a single sample


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def read_sys(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def default_cpus() -> list[int]:
    """The last CPU we may run on: away from CPU 0, where most interrupts land."""
    return [max(os.sched_getaffinity(0))]


class HostRunner(BaseRunner):
    """Times models with the LiteRT interpreter in this process."""

    backend = "tflite-cpu"
    op_profiler = "LiteRT's op profiler (its C API; XNNPACK's own ops)"
    serial = "host"

    def __init__(self, threads: int = 1, cpus: Sequence[int] | None = None, warmup: int = 3,
                 runs: int = 15, min_time_ms: float = 20.0, passes: int = 1,
                 batch_size: int = 16):
        require_linux()  # pinning: os.sched_setaffinity
        self.threads = threads
        self.cpus = sorted(cpus) if cpus else default_cpus()
        self.warmup = warmup
        self.runs = runs
        self.min_time_ms = min_time_ms
        self.passes = passes
        self.batch_size = batch_size  # what a sweep hands us at once: one pass spans them all
        self.timed_ns = 0  # sum of the timed invokes, for sweep efficiency
        require(affinity_check(self.cpus))  # refuse bad cpus now, not at the first batch

    @contextlib.contextmanager
    def _pinned(self) -> Iterator[None]:
        """The calling thread on ``cpus`` for the block, then on the CPUs it had."""
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, set(self.cpus))
        try:
            yield
        finally:
            os.sched_setaffinity(0, before)

    def for_networks(self) -> Runner:
        """One pass per call: whole networks are spread over passes by their caller
        (bench.timing interleaves rounds through the whole set)."""
        if self.passes == 1:
            return self
        single = copy.copy(self)
        single.passes = 1
        return single

    def state_probe(self) -> StateProbe:
        return HostProbe()

    @property
    def filters_preemption(self) -> bool:
        """Only a single-threaded invoke runs wholly in our thread, where CPU time can tell."""
        return self.threads == 1

    def fingerprint(self) -> dict[str, Any]:
        cpu = self.cpus[0]
        return {
            "device": "host",
            "model": cpu_model(),
            "machine": platform.machine(),
            "cores": os.cpu_count(),
            "os": f"{platform.system()} {platform.release()}",
            "runtime": f"ai-edge-litert {metadata.version('ai-edge-litert')}",
            "delegate": "xnnpack (default op resolver)",
            "governor": read_sys(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"),
            "max_freq_khz": read_sys(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/cpuinfo_max_freq"),
            **cache_field(read_host(), self.cpus),  # the measuring core's, as sysfs lists them
            "threads": self.threads,
            "cpus": self.cpus,
            "warmup": self.warmup,
            "runs": self.runs,
            "min_time_ms": self.min_time_ms,
            "passes": self.passes,
            # what a layer ran beside changes its time (bench.sweep_plan.batches)
            "batches": f"{self.batch_size} keys, matrix-vector layers apart",
            "preempted_invokes": (f"dropped (wall - thread CPU time > max({PREEMPTED:.0%}, "
                                  f"{PREEMPTED_NS // 1000} us))"
                                  if self.filters_preemption else "kept (threads > 1)"),
        }

    def measure(self, batch: Sequence[BatchItem]) -> list[Result]:
        # Loading is pinned too: threads an interpreter starts inherit the pinning.
        with self._pinned():
            return self._measure(batch)

    def _measure(self, batch: Sequence[BatchItem]) -> list[Result]:
        loaded = [self._load(item.model) for item in batch]
        samples: list[list[int]] = [[] for _ in batch]
        dropped = [0] * len(batch)
        for p in range(self.passes):
            for i, interp in enumerate(loaded):
                if isinstance(interp, Failure):
                    continue
                try:
                    got, lost = self._run(interp, self.warmup if p == 0 else 1)
                except (ValueError, RuntimeError) as e:
                    loaded[i] = Failure(f"LiteRT failed to run the model: {e}")
                    continue
                samples[i] += got
                dropped[i] += lost
        return [x if isinstance(x, Failure) else self._timing(s, d)
                for x, s, d in zip(loaded, samples, dropped)]

    def measure_one(self, model: bytes) -> Result:
        return self.measure([BatchItem("model", model)])[0]

    def _load(self, model: bytes) -> Any:
        try:
            return self._interpreter(model)
        except (ValueError, RuntimeError) as e:
            return Failure(f"LiteRT could not load the model: {e}")

    def _interpreter(self, model: bytes) -> Any:
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_content=model, num_threads=self.threads)
        interp.allocate_tensors()
        rng = np.random.default_rng(0)
        for d in interp.get_input_details():
            interp.set_tensor(d["index"], rng.standard_normal(d["shape"]).astype(d["dtype"]))
        return interp

    def _run(self, interp: Any, warmup: int) -> tuple[list[int], int]:
        """One pass of one model: its timed invokes (ns) and how many were preempted."""
        invoke, wall = interp.invoke, time.perf_counter_ns
        cpu = time.thread_time_ns if self.filters_preemption else wall
        runs = math.ceil(self.runs / self.passes)
        budget = self.min_time_ms * 1e6 / self.passes
        for _ in range(warmup):
            invoke()
        clean: list[int] = []
        dropped, fastest = 0, None
        start = wall()
        while True:
            c0, t0 = cpu(), wall()
            invoke()
            t = wall() - t0
            c = t if cpu is wall else cpu() - c0
            fastest = t if fastest is None else min(fastest, t)
            if preempted(t, c):
                dropped += 1
            else:
                clean.append(t)
            elapsed = wall() - start
            if len(clean) >= runs and elapsed >= budget:
                break
            if elapsed > max(15 * max(budget, runs * fastest), GIVE_UP_NS):
                break  # the core is rarely ours: keep what there is, counted in "preempted"
        self.timed_ns += sum(clean)
        return clean or [t], dropped

    def op_profile(self, model: bytes) -> list[tuple[str, float]] | None:
        """Each op's time inside ``model`` from LiteRT's op profiler (its C API; XNNPACK's
        ops by XNNPACK's names): the trimmed mean over ``runs`` (at least 20) invokes,
        preempted ones dropped."""
        with self._pinned():  # the profiler's process inherits the pinning
            invokes = litert_profiler.profile(model, self.threads, self.warmup,
                                              max(self.runs, 20))
        clean = [i for i in invokes if not (self.filters_preemption
                                             and preempted(i.wall_ns, i.cpu_ns))] or invokes
        if len({len(i.ops) for i in clean}) != 1:
            raise RunnerError("LiteRT's profiler listed a different number of ops per invoke")
        columns = zip(*(i.ops for i in clean))
        return [(col[0][0], float(trim_mean([us for _, us in col], 0.1))) for col in columns]

    def _timing(self, samples_ns: list[int], dropped: int) -> Timing:
        return Timing.from_samples([s / 1000 for s in samples_ns],
                                   self.warmup + self.passes - 1, preempted=dropped)


def affinity_check(cpus: Sequence[int]) -> Check:
    """This process can be pinned to ``cpus`` (Linux's sched_setaffinity)."""
    if not hasattr(os, "sched_getaffinity"):
        return Check("CPU affinity", False, f"not available on {platform.system()}",
                     "run on Linux (a VM or container will do): pinning needs "
                     "os.sched_setaffinity")
    allowed = os.sched_getaffinity(0)
    bad = [c for c in cpus if c not in allowed]
    if bad:
        return Check("CPU affinity", False, f"cannot pin to CPU(s) {bad}: this process may "
                     f"use {sorted(allowed)}", "fix cpus in the host device config, or let "
                     "it default to the last CPU")
    return Check("CPU affinity", True, f"can pin to CPU {', '.join(map(str, cpus))} "
                 f"(allowed: {', '.join(map(str, sorted(allowed)))})")


def litert_check() -> Check:
    """The LiteRT interpreter (ai-edge-litert) imports."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401
    except ImportError as e:
        return Check("LiteRT", False, f"ai_edge_litert does not import ({e})",
                     "run `make setup` (or pip install ai-edge-litert) in this virtualenv")
    return Check("LiteRT", True, f"ai-edge-litert {metadata.version('ai-edge-litert')}")


def preempted(wall_ns: int, cpu_ns: int) -> bool:
    """An invoke whose wall time exceeds its thread CPU time was partly not ours."""
    return wall_ns - cpu_ns > max(PREEMPTED * wall_ns, PREEMPTED_NS)
