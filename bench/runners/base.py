"""What every runner returns, and the registry that finds runners by backend name.

A runner takes a batch of models (key, .tflite bytes) and returns one result per
model: a Timing (median of N timed runs after W warm-ups, plus the spread and the
raw samples where the tool gives them) or a Failure (the error and the tool's output,
so a crashing model is recorded instead of stopping the sweep).
"""

from __future__ import annotations

import importlib
import statistics
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

from bench.machine_state import NullProbe, StateProbe
from lut_db.errors import UserError


class RunnerError(UserError, RuntimeError):
    """The runner as a whole cannot measure (no device, no SDK, lost connection)."""


class DeviceLost(RunnerError):
    """The device went away mid-batch; the batch should go back to the queue.

    ``partial`` maps batch positions to results the device finished before it went
    away: they are stored, and only the rest of the batch goes back to the queue.
    """

    def __init__(self, message: str, partial: dict[int, Result] | None = None):
        super().__init__(message)
        self.partial: dict[int, Result] = dict(partial or {})


@dataclass(frozen=True)
class Timing:
    """One model's latency in microseconds."""

    median_us: float | None
    mean_us: float
    std_us: float
    min_us: float
    max_us: float
    runs: int
    samples_us: tuple[float, ...] = ()
    warmup_runs: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def latency_us(self) -> float:
        """The number the LUT uses: the median where the tool reports one, else the mean."""
        return self.median_us if self.median_us is not None else self.mean_us

    @property
    def spread(self) -> float:
        """Relative standard deviation (std / mean)."""
        return self.std_us / self.mean_us if self.mean_us else 0.0

    @classmethod
    def from_samples(cls, samples_us: Sequence[float], warmup_runs: int = 0,
                     **extra: Any) -> Timing:
        s = [float(v) for v in samples_us]
        return cls(
            median_us=statistics.median(s),
            mean_us=statistics.fmean(s),
            std_us=statistics.stdev(s) if len(s) > 1 else 0.0,
            min_us=min(s),
            max_us=max(s),
            runs=len(s),
            samples_us=tuple(s),
            warmup_runs=warmup_runs,
            extra=dict(extra),
        )


@dataclass(frozen=True)
class Failure:
    """A model the runner could not measure: recorded, and the sweep goes on."""

    error: str
    output: str = ""


Result = Timing | Failure


@dataclass(frozen=True)
class BatchItem:
    key: str
    model: bytes


class Runner(Protocol):
    """Measures batches of models on one device with one backend's settings.

    Everything a sweep, a validation or a drift check reads is declared here; the
    optional abilities (rejoin, op profiles) are methods whose defaults in
    ``BaseRunner`` say "cannot", so callers never probe with getattr.
    """

    backend: str
    op_profiler: str  # where op_profile's times come from ("" when nowhere)
    serial: str  # the device's name in logs and per-phone counts ("host" on this machine)
    batch_size: int  # keys a sweep hands over at once
    timed_ns: int  # sum of the timed invokes so far, for sweep efficiency

    def fingerprint(self) -> dict[str, Any]:
        """Everything that explains the numbers: device, runtime, threads, cores, runs."""
        ...

    def measure(self, batch: Sequence[BatchItem]) -> list[Result]:
        """One result per item, in order."""
        ...

    def rejoin(self, stop: threading.Event, timeout_s: float | None = None) -> bool:
        """After DeviceLost: wait for the device to come back; False if it cannot."""
        ...

    def op_profile(self, model: bytes) -> list[tuple[str, float]] | None:
        """Each op inside ``model`` as (the runtime's op name, us), in execution order,
        from the runtime's own profiler; None when the runtime offers none."""
        ...

    def for_networks(self) -> Runner:
        """The runner whole networks are timed with (callers interleave the passes)."""
        ...

    def state_probe(self) -> StateProbe:
        """What reads the device's state (load, other work, steal, heat) around a run."""
        ...

    def close(self) -> None:
        """Give back what the runner took: files on the phone."""
        ...


class BaseRunner:
    """The defaults of the optional abilities; runners inherit and override."""

    serial = "host"
    op_profiler = ""
    batch_size = 16
    timed_ns = 0

    def rejoin(self, stop: threading.Event, timeout_s: float | None = None) -> bool:
        return False

    def op_profile(self, model: bytes) -> list[tuple[str, float]] | None:
        return None

    def for_networks(self) -> Runner:
        return self  # type: ignore[return-value]

    def state_probe(self) -> StateProbe:
        return NullProbe()  # knows nothing of its machine

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# backend kind -> "module:Class"; imported lazily so `host` needs no adb and vice versa.
RUNNERS: dict[str, str] = {
    "host": "bench.runners.host:HostRunner",
    "adb-tflite": "bench.runners.adb_tflite:AdbTfliteRunner",
    "snpe": "bench.runners.snpe:SnpeRunner",
}


def runner_class(kind: str) -> type:
    """The runner class registered for a backend kind."""
    try:
        target = RUNNERS[kind]
    except KeyError:
        raise RunnerError(f"unknown runner {kind!r}; known: {', '.join(sorted(RUNNERS))}") from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
