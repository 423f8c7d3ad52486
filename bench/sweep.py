"""Plan -> batches -> runners -> one LUT version, resumable at any moment: ``build_lut``,
the `netadapt lut` verb, and ``measure_missing``, which measures keys a sealed version lacks.

Made of the modules named for each step: ``sweep_space`` (what a sweep covers),
``sweep_plan`` (resume a building version, derive from a sealed one, or start anew; the
keys still missing), ``sweep_run`` (batches over runners, committed per batch) and
``sweep_seal`` (the per-invoke overhead and machine state kept with the version, the seal).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.runners.base import BatchItem, Runner, RunnerError
from bench.sweep_plan import Plan, plan, replica_sample, start_version
from bench.sweep_run import Event, Progress, SweepResult, run
from bench.sweep_seal import Builder
from bench.sweep_space import SweepSpace
from lut_db.spec import LayerSpec
from lut_db.store import LutStore
from lut_db.versions import Version

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
