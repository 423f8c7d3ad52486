"""The host runner: this machine's LiteRT interpreter, in-process.

Each model gets its own interpreter (XNNPACK, fixed thread count), W warm-up
invokes, then timed invokes until both ``runs`` and ``min_time_ms`` are reached;
a wide spread buys one more round (pyperf's advice: more runs, not a mean of noise).
The process is pinned to the configured CPUs so the scheduler cannot move it.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from bench.runners.base import BatchItem, Failure, Result, RunnerError, Timing

UNSTABLE_SPREAD = 0.10  # std / mean above which another round of runs is taken


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


class HostRunner:
    """Times models with the LiteRT interpreter in this process."""

    backend = "tflite-cpu"
    serial = "host"

    def __init__(self, threads: int = 1, cpus: Sequence[int] | None = None, warmup: int = 3,
                 runs: int = 15, min_time_ms: float = 20.0, max_rounds: int = 3):
        self.threads = threads
        self.cpus = sorted(cpus) if cpus else default_cpus()
        self.warmup = warmup
        self.runs = runs
        self.min_time_ms = min_time_ms
        self.max_rounds = max_rounds
        self.timed_ns = 0  # sum of the timed invokes, for sweep efficiency
        self._pin()

    def _pin(self) -> None:
        allowed = os.sched_getaffinity(0)
        bad = [c for c in self.cpus if c not in allowed]
        if bad:
            raise RunnerError(f"cannot pin to CPU(s) {bad}: this process may use {sorted(allowed)}")
        os.sched_setaffinity(0, set(self.cpus))

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
            "threads": self.threads,
            "cpus": self.cpus,
            "warmup": self.warmup,
            "runs": self.runs,
            "min_time_ms": self.min_time_ms,
        }

    def measure(self, batch: Sequence[BatchItem]) -> list[Result]:
        return [self.measure_one(item.model) for item in batch]

    def measure_one(self, model: bytes) -> Result:
        try:
            interp = self._interpreter(model)
        except (ValueError, RuntimeError) as e:
            return Failure(f"LiteRT could not load the model: {e}")
        try:
            return self._time(interp)
        except (ValueError, RuntimeError) as e:
            return Failure(f"LiteRT failed to run the model: {e}")

    def _interpreter(self, model: bytes) -> Any:
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_content=model, num_threads=self.threads)
        interp.allocate_tensors()
        rng = np.random.default_rng(0)
        for d in interp.get_input_details():
            interp.set_tensor(d["index"], rng.standard_normal(d["shape"]).astype(d["dtype"]))
        return interp

    def _time(self, interp: Any) -> Timing:
        invoke = interp.invoke
        for _ in range(self.warmup):
            invoke()
        samples: list[int] = []
        clock = time.perf_counter_ns
        for _ in range(self.max_rounds):
            start_round = clock()
            done = 0
            while done < self.runs or (clock() - start_round) < self.min_time_ms * 1e6:
                t0 = clock()
                invoke()
                samples.append(clock() - t0)
                done += 1
            timing = Timing.from_samples([s / 1000 for s in samples], self.warmup)
            if timing.spread <= UNSTABLE_SPREAD:
                break
        self.timed_ns += sum(samples)
        return timing

    def close(self) -> None:
        pass
