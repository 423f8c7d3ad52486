"""Plan -> batches -> runners -> one LUT version, resumable at any moment.

The plan is the set of keys the chosen version does not hold yet. Worker threads
(one per runner, i.e. per phone) pull batches from a shared queue, build the
models and measure them; the main thread commits each batch's results in one
transaction. A process killed at any point loses at most the batch in flight,
which was never stored, so the next run measures exactly the keys still missing.
A resumed building version also retries its failed keys. When one device's tool
fails on many models in a row with the same error, the tool is broken, not the
models: the sweep stops early (``BrokenTool``) instead of failing every key.
"""

from __future__ import annotations

import queue
import random
import re
import shlex
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.machine_state import MachineState
from bench.runners.base import BatchItem, DeviceLost, Failure, Result, Runner, RunnerError, Timing
from lut_db.spec import DTYPES, LayerSpec
from lut_db.store import LutStore
from lut_db.versions import Version

ORDER_SEED = 20180908  # keys are measured in a shuffled, repeatable order: drift becomes noise
# This many models failing in a row on one device with the same error: a broken tool. Large
# enough that a tool failing on a whole op kind (shuffled order) does not trip it by chance.
SAME_FAILURES_STOP = 20
OUTPUT_TAIL = 3000  # characters of the tool's output shown when the sweep stops early


class BrokenTool(RunnerError):
    """Models fail one after another with the same error: fix the tool, then resume."""


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
    """Keys to measure: a building version retries its failed keys, a sealed one keeps them."""
    have = store.keys(version, status="ok" if version.status == "building" else None)
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
            store.update_space(p.version, merged)
        return p.version
    if p.parent is not None:
        space = merge_space(p.parent.space, space)
    note = f"derived from {p.parent.label}: +{len(p.missing)} keys" if p.parent else ""
    return store.create_version(device, backend, fingerprint, parent=p.parent, note=note,
                                space=space)


def merge_space(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A version's space is the list of sweeps it holds: {"sweeps": [descriptor, ...]}."""
    sweeps = list(old.get("sweeps", []))
    have = [_with_dtype(s) for s in sweeps]
    sweeps += [s for s in new.get("sweeps", []) if _with_dtype(s) not in have]
    return {**old, **new, "sweeps": sweeps}


def _with_dtype(sweep: Any) -> Any:
    """A sweep descriptor with its dtype spelt out (older versions recorded float32 alone)."""
    return {"dtype": "float32", **sweep} if isinstance(sweep, dict) else sweep


Builder = Callable[[LayerSpec], bytes]
Progress = Callable[[int, str], None]  # (keys just stored, serial)
Event = Callable[[str, str, str], None]  # (kind: lost/back/gone, serial, message)
REPLICA_SAMPLE = 20  # keys measured on every phone of a farm sweep


def replica_sample(keys: Iterable[str], n: int = REPLICA_SAMPLE) -> list[str]:
    """A fixed sample of a sweep's keys (the same for every run of the same space)."""
    ordered = sorted(set(keys))
    return sorted(random.Random(ORDER_SEED).sample(ordered, min(n, len(ordered))))


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
    for i in range(0, len(keys), batch_size):
        work.put(list(keys[i:i + batch_size]))
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
        measure_overhead(store, version, (usable or list(runners))[0], build)
        result.version = store.seal(version)
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


OVERHEAD_SPEC = LayerSpec("add", 1, 1, 1)  # the smallest model: what one invoke costs by itself


def measure_overhead(store: LutStore, version: Version, runner: Runner, build: Builder) -> None:
    """Store the runtime's fixed per-invoke cost with the version (every layer alone pays it
    once; a whole network pays it once in all), unless the version already has it."""
    if "invoke_overhead_us" in store.stats(version):
        return
    (res,) = runner.measure([BatchItem(OVERHEAD_SPEC.key, build(OVERHEAD_SPEC))])
    if isinstance(res, Failure):
        raise RunnerError(f"could not measure the per-invoke overhead: {res.error}")
    store.set_stat(version, "invoke_overhead_us", res.latency_us,
                   {"model": OVERHEAD_SPEC.key, "std_us": res.std_us, "runs": res.runs})


def record_states(store: LutStore, version: Version, states: Sequence[MachineState]) -> None:
    """The devices' state over one sweep session, kept with the version beside the earlier
    sessions' (``machine_busy``: how many of them were busy; the states in its detail)."""
    if not states:
        return
    every = (store.stat_detail(version, "machine_busy") or []) + [s.to_dict() for s in states]
    store.set_stat(version, "machine_busy", float(sum(bool(s["busy"]) for s in every)),
                   every)


def measure_missing(store: LutStore, version: Version, keys: Sequence[str],
                    runners: Sequence[Runner], build: Builder,
                    progress: Progress | None = None) -> Version:
    """Measure keys a sealed version lacks into a new version derived from it (sealed too).

    Measurements of two different setups never share a version, so the device and
    settings must match the version's fingerprint.
    """
    fp = runners[0].fingerprint()
    version.require_same_setup(fp, "measuring into it would mix two setups. Build a LUT for "
                                   "this setup with: netadapt lut")
    new = store.create_version(version.device, version.backend, fp, parent=version,
                               note=f"derived from {version.label}: +{len(keys)} keys measured "
                                    "on demand", space=version.space)
    return run(store, new, list(keys), runners, build, progress=progress).version


# -- the `netadapt lut` pipeline ----------------------------------------------------------------


@dataclass(frozen=True)
class SweepSpace:
    """What a sweep covers: every layer shape of these families' width configs."""

    families: tuple[str, ...]
    resolutions: tuple[int, ...] = (224,)
    grid: int = 32
    classes: int = 1000
    dtype: str = "float32"  # every key's dt: an int8 sweep holds int8 keys only

    def specs(self) -> set[LayerSpec]:
        from bench import zoo

        if not self.families:
            raise RunnerError(f"the space names no family (known: {', '.join(zoo.FAMILIES)})")
        if min(self.grid, self.classes, *self.resolutions) <= 0:
            raise RunnerError("grid, classes and resolutions must be positive")
        if self.dtype not in DTYPES:
            raise RunnerError(f"dtype {self.dtype!r}: expected one of {', '.join(DTYPES)}")
        out: set[LayerSpec] = set()
        for r in self.resolutions:
            for f in self.families:
                out |= zoo.shape_space(zoo.family(f), r, self.grid, self.classes)
        return {replace(s, dtype=self.dtype) for s in out}

    def descriptor(self) -> dict[str, Any]:
        """How the version records it (``space["sweeps"]``)."""
        return {"families": list(self.families), "resolutions": list(self.resolutions),
                "grid": self.grid, "classes": self.classes, "dtype": self.dtype}

    def describe(self) -> str:
        dtype = "" if self.dtype == "float32" else f", {self.dtype}"  # float32: as before
        return f"{', '.join(self.families)} at {list(self.resolutions)} px, grid {self.grid}{dtype}"

    def command(self, device: str, lut: Path | str, backend: str | None = None) -> str:
        """The `netadapt lut` call that sweeps this space on ``device`` into ``lut``."""
        words = ["netadapt", "lut", "--device", device, *(["--backend", backend] if backend
                                                          else []),
                 "--lut", str(lut), "--space", ",".join(self.families)]
        for r in self.resolutions:
            words += ["--resolution", str(r)]
        words += ["--grid", str(self.grid), "--classes", str(self.classes)]
        if self.dtype != "float32":
            words += ["--dtype", self.dtype]
        return shlex.join(words)


PlanHook = Callable[[Plan], None]


def build_lut(db: Path, device: str, runners: Sequence[Runner], space: SweepSpace, *,
              batch_size: int | None = None, dry_run: bool = False,
              on_plan: PlanHook | None = None, progress: Progress | None = None,
              on_event: Event | None = None) -> SweepResult:
    """Sweep ``space`` on ``runners`` into the LUT file ``db`` and seal the version.

    Resumes a building version of the same setup, derives a new version from a sealed one
    when the space grew, or starts a new one; ``on_plan`` hears which before any work.
    A dry run plans and calibrates the ETA (``result.eta_s``) but stores nothing.
    """
    from bench.tflite_build import build_layer

    specs = space.specs()
    lead = runners[0]
    fingerprint = farm_fingerprint(runners)
    store = LutStore.memory() if dry_run and not db.exists() else LutStore.open(db, create=True)
    try:
        if not dry_run:
            store.lock()
        p = plan(store, device, lead.backend, fingerprint, specs)
        if on_plan:
            on_plan(p)
        if p.action == "up-to-date" or dry_run:
            eta = calibrate_eta(lead, p.missing, build_layer) / len(runners) if dry_run else 0.0
            return SweepResult(p.version, 0, 0, 0.0, 0.0, plan=p, eta_s=eta)
        version = start_version(store, p, device, lead.backend, fingerprint,
                                {"sweeps": [space.descriptor()]})
        sample = replica_sample(s.key for s in specs) if len(runners) > 1 else []
        res = run(store, version, p.missing, runners, build_layer, batch_size, progress,
                  replica_keys=sample, failure_dir=failure_dir(db), on_event=on_event)
        res.plan = p
        if len(runners) > 1:
            from bench.agreement import agreement

            res.agreement = agreement(store, version)["phones"]
        return res
    finally:
        store.close()  # and its writer lock: the process may go on (tests, notebooks)


def failure_dir(db: Path) -> Path:
    """Where a sweep writes each failed key's tool output."""
    return db.parent / f"{db.stem}.failures"


def farm_fingerprint(runners: Sequence[Runner]) -> dict[str, Any]:
    """The one fingerprint every phone of a sweep shares; phones that differ cannot share
    a version (their numbers would be mixed), so they are refused with the differences."""
    fingerprints = [r.fingerprint() for r in runners]
    lead = fingerprints[0]
    for r, fp in zip(runners[1:], fingerprints[1:]):
        if fp != lead:
            keys = sorted(k for k in fp.keys() | lead.keys() if fp.get(k) != lead.get(k))
            what = ", ".join(f"{k}: {lead.get(k)!r} vs {fp.get(k)!r}" for k in keys)
            raise RunnerError(f"phones {runners[0].serial} and {r.serial} differ ({what}); "
                              "their numbers cannot share one LUT version: choose one with "
                              "--serial")
    return lead


def calibrate_eta(runner: Runner, keys: Sequence[str], build: Builder,
                  sample: int = 6) -> float:
    """Seconds to measure ``keys``: time a few of them, fit wall ~ a + b * MACs, sum."""
    import numpy as np

    if not keys:
        return 0.0
    picks = random.Random(0).sample(list(keys), min(sample, len(keys)))
    macs, wall = [], []
    for k in picks:
        spec = LayerSpec.parse(k)
        t0 = time.perf_counter()
        runner.measure([BatchItem(k, build(spec))])
        wall.append(time.perf_counter() - t0)
        macs.append(spec.macs)
    if len(set(macs)) > 1:
        b, a = np.polyfit(macs, wall, 1)
        b, a = max(b, 0.0), max(a, min(wall))
    else:
        a, b = float(np.mean(wall)), 0.0
    return float(sum(a + b * LayerSpec.parse(k).macs for k in keys))
