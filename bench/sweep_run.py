"""One sweep session: batches of keys over runners, each batch committed as it comes back.

Worker threads (one per runner, i.e. per phone) pull batches from a shared queue, build
the models and measure them; the main thread commits each batch's results in one
transaction. A process killed at any point loses at most the batch in flight, which was
never stored, so the next run measures exactly the keys still missing. When one device's
tool fails on many models in a row with the same error, the tool is broken, not the
models: the sweep stops early (``BrokenTool``) instead of failing every key.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.machine_state import MachineState
from bench.runners.base import BatchItem, DeviceLost, Failure, Result, Runner, RunnerError, Timing
from bench.sweep_plan import Plan, batches
from bench.sweep_seal import Builder, record_states, seal_sweep
from lut_db.spec import LayerSpec
from lut_db.store import LutStore
from lut_db.versions import Version

# This many models failing in a row on one device with the same error: a broken tool. Large
# enough that a tool failing on a whole op kind (shuffled order) does not trip it by chance.
SAME_FAILURES_STOP = 20
OUTPUT_TAIL = 3000  # characters of the tool's output shown when the sweep stops early
Progress = Callable[[int, str], None]  # (keys just stored, serial)
Event = Callable[[str, str, str], None]  # (kind: lost/back/gone, serial, message)


class BrokenTool(RunnerError):
    """Models fail one after another with the same error: fix the tool, then resume."""


@dataclass
class SweepResult:
    version: Version | None  # None: a dry run of a new version
    measured: int
    failed: int
    wall_s: float
    timed_s: float
    per_serial: dict[str, int] = field(default_factory=dict)
    plan: Plan | None = None
    eta_s: float | None = None  # a dry run's calibrated estimate of the sweep's time
    agreement: list[dict[str, Any]] = field(default_factory=list)  # per phone, farm sweeps
    states: list[MachineState] = field(default_factory=list)  # each device over this run

    @property
    def efficiency(self) -> float | None:
        """Wall time over the sum of timed invokes (1.0 = no overhead at all)."""
        return self.wall_s / self.timed_s if self.timed_s else None


@dataclass
class _Msg:
    kind: str  # results, replicas, lost (partial results, worker waits), back, gone
    serial: str
    keys: list[str] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    error: BaseException | None = None


@dataclass
class _Streak:
    """Consecutive failures with one error on one device (the first one kept to show)."""

    count: int = 0
    key: str = ""
    failure: Failure | None = None

    def add(self, results: Iterable[tuple[str, Result]], limit: int) -> bool:
        """Count a batch's results in order; True (and the streak kept) at ``limit``."""
        for key, res in results:
            if not isinstance(res, Failure):
                self.count = 0
            elif self.count and self.failure is not None and res.error == self.failure.error:
                self.count += 1
            else:
                self.count, self.key, self.failure = 1, key, res
            if self.count >= limit:
                return True
        return False


def run(store: LutStore, version: Version, keys: Sequence[str], runners: Sequence[Runner],
        build: Builder, batch_size: int | None = None, progress: Progress | None = None,
        seal: bool = True, *, replica_keys: Sequence[str] = (),
        failure_dir: Path | None = None, on_event: Event | None = None,
        stop_after: int = SAME_FAILURES_STOP) -> SweepResult:
    """Measure ``keys`` into ``version`` with one worker per runner, committing per batch.

    Runners pull batches from one queue. A runner that loses its device (DeviceLost)
    hands back what it did not finish and, if it can ``rejoin``, waits for the device
    while the others go on; any other runner error ends that worker (its batch goes back).
    ``replica_keys`` are measured once on every runner, into the replicas table.
    ``failure_dir``: where the output of each failed key is written for inspection.
    ``stop_after`` models failing in a row on one device with the same error stop the
    sweep with BrokenTool (what was measured is stored; a resume retries the failures).
    """
    start = time.perf_counter()
    timed_before = sum(r.timed_ns for r in runners)  # a runner may have timed other work
    probes = [r.state_probe() for r in runners]
    for probe in probes:
        probe.start()
    batch_size = batch_size or runners[0].batch_size
    work: queue.Queue[list[str] | None] = queue.Queue()
    for batch in batches(keys, batch_size):
        work.put(batch)
    done: queue.Queue[_Msg] = queue.Queue()
    stop = threading.Event()
    workers = [threading.Thread(target=_worker, args=(r, work, done, build, stop, replica_keys),
                                daemon=True) for r in runners]
    for w in workers:
        w.start()
    result = SweepResult(version, 0, 0, 0.0, 0.0)
    serials = [r.serial for r in runners]
    owe = set(serials) if replica_keys else set()  # runners whose replicas are not in yet
    away: set[str] = set()
    gone: set[str] = set()
    pending = len(keys)
    errors: list[BaseException] = []
    streaks = {s: _Streak() for s in serials}
    broken: str | None = None
    while (pending or owe - away) and len(gone) < len(workers) and not broken:
        msg = done.get()
        if msg.kind in ("results", "lost") and msg.keys:
            _commit(store, version, msg, result, failure_dir)
            pending -= len(msg.keys)
            if progress:
                progress(len(msg.keys), msg.serial)
            if streaks.setdefault(msg.serial, _Streak()).add(zip(msg.keys, msg.results),
                                                              stop_after):
                broken = msg.serial
        if msg.kind == "replicas":
            owe.discard(msg.serial)
            good = [(k, r) for k, r in zip(msg.keys, msg.results) if isinstance(r, Timing)]
            if good:
                store.add_replicas(version, good, msg.serial)
        elif msg.kind == "lost":
            away.add(msg.serial)
        elif msg.kind == "back":
            away.discard(msg.serial)
        elif msg.kind == "gone":
            gone.add(msg.serial)
            owe.discard(msg.serial)
            errors.append(msg.error or RunnerError(f"{msg.serial} stopped"))
        if on_event and msg.kind in ("lost", "back", "gone"):
            on_event(msg.kind, msg.serial, str(msg.error or ""))
    stop.set()
    _stop(work, workers)
    result.states = [st for st in (p.stop() for p in probes) if st is not None]
    record_states(store, version, result.states)  # this session's, resumed or not
    if broken:
        _drain(store, version, done, result, failure_dir)
        raise BrokenTool(_broken_message(broken, streaks[broken], result))
    result.wall_s = time.perf_counter() - start
    result.timed_s = (sum(r.timed_ns for r in runners) - timed_before) / 1e9
    if pending:
        reasons = "; ".join(str(e) for e in errors) or "no runner left"
        raise RunnerError(f"sweep stopped with {pending} keys left (all measured ones are "
                          f"stored; run the same command again to resume): {reasons}")
    if seal:
        usable = [r for r, s in zip(runners, serials) if s not in gone and s not in away]
        result.version = seal_sweep(store, version, (usable or list(runners))[0], build)
    return result


def _drain(store: LutStore, version: Version, done: queue.Queue, result: SweepResult,
           failure_dir: Path | None) -> None:
    """Store what workers finished after the stop: every measured key is kept."""
    while True:
        try:
            msg = done.get_nowait()
        except queue.Empty:
            return
        if msg.kind in ("results", "lost") and msg.keys:
            _commit(store, version, msg, result, failure_dir)


def _broken_message(serial: str, streak: _Streak, result: SweepResult) -> str:
    f = streak.failure
    assert f is not None
    which = (f"the first {streak.count} models" if not result.measured
             else f"{streak.count} models in a row")
    output = f.output.strip()[-OUTPUT_TAIL:] or "(no output)"
    return (f"stopped early: {which} on {serial} failed with the same error, so the tool or "
            f"its setup is broken, not the models:\n  {f.error}\n"
            f"tool output for {streak.key}:\n{output}\n"
            f"{result.measured} keys measured so far are stored, and the {result.failed} "
            "failed ones are retried on resume. Fix the tool (for a phone: the binary's path, "
            "permissions and ABI under [backends] in the device config; `netadapt devices` "
            "shows the phone), then run the same command again.")


def _commit(store: LutStore, version: Version, msg: _Msg, result: SweepResult,
            failure_dir: Path | None) -> None:
    store.add_results(version, zip(msg.keys, msg.results), serial=msg.serial)
    failed = [(k, r) for k, r in zip(msg.keys, msg.results) if isinstance(r, Failure)]
    result.measured += len(msg.keys) - len(failed)
    result.failed += len(failed)
    result.per_serial[msg.serial] = result.per_serial.get(msg.serial, 0) + len(msg.keys)
    if failure_dir is not None and failed:
        save_failures(failure_dir, version, msg.serial, failed)


def save_failures(folder: Path, version: Version, serial: str,
                  failed: Sequence[tuple[str, Failure]]) -> list[Path]:
    """Each failed key's error and raw tool output as a text file, for the user to inspect."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, f in failed:
        name = re.sub(r"[^A-Za-z0-9=.,_-]+", "_", key)[:150]
        path = folder / f"v{version.id}-{name}.txt"
        path.write_text(f"key: {key}\nserial: {serial}\nerror: {f.error}\n\n{f.output}")
        paths.append(path)
    return paths


def _worker(runner: Runner, work: queue.Queue, done: queue.Queue, build: Builder,
            stop: threading.Event, replica_keys: Sequence[str]) -> None:
    serial = runner.serial
    if replica_keys and not _replicas(runner, serial, replica_keys, done, build, stop):
        return
    while not stop.is_set():
        try:
            batch = work.get(timeout=0.05)
        except queue.Empty:
            continue  # a batch may still come back from a phone that went away
        if batch is None:
            return
        try:
            results = runner.measure([BatchItem(k, build(LayerSpec.parse(k))) for k in batch])
        except DeviceLost as e:
            rest = [k for i, k in enumerate(batch) if i not in e.partial]
            if rest:
                work.put(rest)  # nothing of these was stored: back to the queue
            kept = sorted(i for i in e.partial if i < len(batch))
            done.put(_Msg("lost", serial, [batch[i] for i in kept],
                          [e.partial[i] for i in kept], e))
            if not _rejoin(runner, serial, done, stop, e):
                return
            continue
        except Exception as e:  # noqa: BLE001 - any other runner fault: requeue, stop worker
            work.put(batch)
            done.put(_Msg("gone", serial, error=e))
            return
        done.put(_Msg("results", serial, list(batch), list(results)))


def _replicas(runner: Runner, serial: str, keys: Sequence[str], done: queue.Queue,
              build: Builder, stop: threading.Event) -> bool:
    """Measure the agreement sample on this runner; False if the worker must stop."""
    try:
        results = runner.measure([BatchItem(k, build(LayerSpec.parse(k))) for k in keys])
    except DeviceLost as e:
        done.put(_Msg("replicas", serial))
        done.put(_Msg("lost", serial, error=e))
        return _rejoin(runner, serial, done, stop, e)
    except Exception as e:  # noqa: BLE001 - same as a batch: report, stop worker
        done.put(_Msg("replicas", serial))
        done.put(_Msg("gone", serial, error=e))
        return False
    done.put(_Msg("replicas", serial, list(keys), list(results)))
    return True


def _rejoin(runner: Runner, serial: str, done: queue.Queue, stop: threading.Event,
            error: BaseException) -> bool:
    """Wait for a lost device to come back (runners that can); report back or gone."""
    if runner.rejoin(stop):
        done.put(_Msg("back", serial))
        return True
    done.put(_Msg("gone", serial, error=error))
    return False


def _stop(work: queue.Queue, workers: list[threading.Thread]) -> None:
    for _ in workers:
        work.put(None)
    for w in workers:
        w.join(timeout=5)
