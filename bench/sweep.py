"""Plan -> batches -> runners -> one LUT version, resumable at any moment.

The plan is the set of keys the chosen version does not hold yet. Worker threads
(one per runner, i.e. per phone) pull batches from a shared queue, build the
models and measure them; the main thread commits each batch's results in one
transaction. A process killed at any point loses at most the batch in flight,
which was never stored, so the next run measures exactly the keys still missing.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.runners.base import BatchItem, Failure, Result, Runner, RunnerError
from lut_db.spec import LayerSpec
from lut_db.store import LutStore, Version

ORDER_SEED = 20180908  # keys are measured in a shuffled, repeatable order: drift becomes noise


@dataclass
class Plan:
    """What a sweep would do: which version it writes and which keys it still has to measure."""

    action: str  # "resume", "new", "derive" (new version from a sealed parent) or "up-to-date"
    version: Version | None
    parent: Version | None
    total: int
    missing: list[str]

    @property
    def done(self) -> int:
        return self.total - len(self.missing)


@dataclass
class SweepResult:
    version: Version
    measured: int
    failed: int
    wall_s: float
    timed_s: float
    per_serial: dict[str, int] = field(default_factory=dict)

    @property
    def efficiency(self) -> float | None:
        """Wall time over the sum of timed invokes (1.0 = no overhead at all)."""
        return self.wall_s / self.timed_s if self.timed_s else None


def plan(store: LutStore, device: str, backend: str, fingerprint: dict[str, Any],
         specs: Iterable[LayerSpec]) -> Plan:
    """Decide which version a sweep of these specs writes, and what it still has to measure."""
    keys = sorted({s.key for s in specs})
    building = store.find_building(device, backend, fingerprint)
    if building:
        return Plan("resume", building, None, len(keys), _missing(store, building, keys))
    sealed = store.find_sealed(device, backend, fingerprint)
    if sealed:
        missing = _missing(store, sealed, keys)
        if not missing:
            return Plan("up-to-date", sealed, None, len(keys), [])
        return Plan("derive", None, sealed, len(keys), missing)
    return Plan("new", None, None, len(keys), _shuffled(keys))


def _missing(store: LutStore, version: Version, keys: list[str]) -> list[str]:
    have = store.keys(version.id)
    return _shuffled([k for k in keys if k not in have])


def _shuffled(keys: list[str]) -> list[str]:
    out = list(keys)
    random.Random(ORDER_SEED).shuffle(out)
    return out


def start_version(store: LutStore, p: Plan, device: str, backend: str,
                  fingerprint: dict[str, Any], space: dict[str, Any]) -> Version:
    """The version the plan writes into (created now for a new or derived plan)."""
    if p.version is not None:
        merged = merge_space(p.version.space, space)
        if p.version.status == "building" and merged != p.version.space:
            store.update_space(p.version.id, merged)
        return p.version
    if p.parent is not None:
        space = merge_space(p.parent.space, space)
    parent = p.parent.id if p.parent else None
    note = f"derived from {p.parent.label}: +{len(p.missing)} keys" if p.parent else ""
    return store.create_version(device, backend, fingerprint, parent=parent, note=note,
                                space=space)


def merge_space(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A version's space is the list of sweeps it holds: {"sweeps": [descriptor, ...]}."""
    sweeps = list(old.get("sweeps", []))
    sweeps += [s for s in new.get("sweeps", []) if s not in sweeps]
    return {**old, **new, "sweeps": sweeps}


Builder = Callable[[LayerSpec], bytes]
Progress = Callable[[int, str], None]  # (keys just stored, serial)


def run(store: LutStore, version: Version, keys: Sequence[str], runners: Sequence[Runner],
        build: Builder, batch_size: int = 16, progress: Progress | None = None,
        seal: bool = True) -> SweepResult:
    """Measure ``keys`` into ``version`` with one worker per runner, committing per batch."""
    start = time.perf_counter()
    work: queue.Queue[list[str]] = queue.Queue()
    for i in range(0, len(keys), batch_size):
        work.put(list(keys[i:i + batch_size]))
    done: queue.Queue[tuple[str, list[str], list[Result] | BaseException]] = queue.Queue()
    workers = [threading.Thread(target=_worker, args=(r, work, done, build), daemon=True)
               for r in runners]
    for w in workers:
        w.start()
    result = SweepResult(version, 0, 0, 0.0, 0.0)
    pending, alive = len(keys), len(workers)
    errors: list[BaseException] = []
    while pending and alive:
        serial, batch, outcome = done.get()
        if isinstance(outcome, BaseException):
            alive -= 1  # this runner gave up; its batch is back in the queue
            errors.append(outcome)
            continue
        store.add_results(version.id, zip(batch, outcome), serial=serial)
        pending -= len(batch)
        result.measured += sum(not isinstance(o, Failure) for o in outcome)
        result.failed += sum(isinstance(o, Failure) for o in outcome)
        result.per_serial[serial] = result.per_serial.get(serial, 0) + len(batch)
        if progress:
            progress(len(batch), serial)
    _stop(work, workers)
    result.wall_s = time.perf_counter() - start
    result.timed_s = sum(getattr(r, "timed_ns", 0) for r in runners) / 1e9
    if pending:
        reasons = "; ".join(str(e) for e in errors) or "no runner left"
        raise RunnerError(f"sweep stopped with {pending} keys left (all measured ones are "
                          f"stored; run the same command again to resume): {reasons}")
    if seal:
        measure_overhead(store, version, runners[0], build)
        result.version = store.seal(version.id)
    return result


def _worker(runner: Runner, work: queue.Queue, done: queue.Queue, build: Builder) -> None:
    serial = getattr(runner, "serial", runner.backend)
    while True:
        try:
            batch = work.get_nowait()
        except queue.Empty:
            return
        if batch is None:
            return
        try:
            items = [BatchItem(k, build(LayerSpec.parse(k))) for k in batch]
            results = runner.measure(items)
        except Exception as e:  # noqa: BLE001 - any runner fault: requeue, report, stop worker
            work.put(batch)  # nothing of this batch was stored: it goes back to the queue
            done.put((serial, batch, e))
            return
        done.put((serial, batch, results))


def _stop(work: queue.Queue, workers: list[threading.Thread]) -> None:
    for _ in workers:
        work.put(None)
    for w in workers:
        w.join(timeout=5)


OVERHEAD_SPEC = LayerSpec("add", 1, 1, 1)  # the smallest model: what one invoke costs by itself


def measure_overhead(store: LutStore, version: Version, runner: Runner, build: Builder) -> None:
    """Store the runtime's fixed per-invoke cost with the version (every layer alone pays it
    once; a whole network pays it once in all), unless the version already has it."""
    if "invoke_overhead_us" in store.stats(version.id):
        return
    (res,) = runner.measure([BatchItem(OVERHEAD_SPEC.key, build(OVERHEAD_SPEC))])
    if isinstance(res, Failure):
        raise RunnerError(f"could not measure the per-invoke overhead: {res.error}")
    store.set_stat(version.id, "invoke_overhead_us", res.latency_us,
                   {"model": OVERHEAD_SPEC.key, "std_us": res.std_us, "runs": res.runs})


def measure_missing(store: LutStore, version: Version, keys: Sequence[str],
                    runners: Sequence[Runner], build: Builder) -> Version:
    """Measure keys a sealed version lacks into a new version derived from it (sealed too).

    Measurements of two different setups never share a version, so the device and
    settings must match the version's fingerprint.
    """
    fp = runners[0].fingerprint()
    if fp != version.fingerprint:
        changed = sorted(k for k in fp.keys() | version.fingerprint.keys()
                         if fp.get(k) != version.fingerprint.get(k))
        raise RunnerError(f"{version.label} was measured with another setup (differs in: "
                          f"{', '.join(changed)}); measuring into it would mix two setups. "
                          "Build a LUT for this setup with: netadapt lut")
    new = store.create_version(version.device, version.backend, fp, parent=version.id,
                               note=f"derived from {version.label}: +{len(keys)} keys measured "
                                    "on demand", space=version.space)
    return run(store, new, list(keys), runners, build).version
