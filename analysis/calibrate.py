"""Calibrating a LUT version: whole networks measured on its device, the in-network model
(``lut_db.calibration``) fitted to them, and the result stored with the version.

The calibration set is drawn from the version's own sweep space with a seed of its
own (width multipliers, random and NetAdapt-like width configs, every swept
resolution), all on the LUT's grid, so calibrating needs no key the LUT lacks. The
validation (`netadapt report`) samples with another seed, plus held-out families and
off-grid widths, so it scores the calibration on networks it never saw.

While the networks are timed, a sample of their keys is measured alone again,
interleaved: the machine's speed now against the LUT's time is taken out before the
fit, so a calibration made days after the sweep still describes the LUT's numbers.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import nnls

from analysis.features import all_tables
from analysis.sampling import Space, at_dtypes, make_network, random_widths, sample_networks
from analysis.validate import SessionDrift
from bench.missing import ensure_keys
from bench.runners.base import Runner
from bench.timing import Progress, summary, time_networks
from bench.zoo import family
from lut_db.calibration import Calibration, CalibrationError, features
from lut_db.spec import Network
from lut_db.store import LutStore, Version

SEED = 1_000_003  # the calibration set's seed: never the validation's (0)
NETWORKS = 40
PASSES = 3
MIN_NETWORKS = 8  # fewer than this cannot pin four parameters down and cross-validate them
FOLDS = 5
# Candidate L2 sizes (MB): the one that explains the networks best is kept. Phones and
# desktop cores span 0.25-4 MB of L2 per core; larger "L2s" stand for big shared caches.
L2_GRID_MB = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0)


@dataclass
class Sample:
    """One calibration network: its layers and its measured latency (LUT-time speed)."""

    name: str
    layers: list[tuple[Any, float]]  # (LayerSpec, LUT entry us)
    measured_us: float


OTHER_RESOLUTIONS = (56, 112, 224)  # a quarter of the set: weights cost the same at any
# resolution, compute does not; networks at two resolutions tell the two apart
OTHER_SHARE = 0.25
MIN_OTHER = 16  # smaller sets stay at the LUT's resolutions (no keys measured on demand)


def calibration_set(space: Space, n: int = NETWORKS, seed: int = SEED) -> list[Network]:
    """``n`` networks of the space's families: most at its resolutions, on its grid (keys
    it holds), a quarter at other resolutions (their keys are measured on demand)."""
    others = [r for r in OTHER_RESOLUTIONS if r not in space.resolutions][:2]
    k = round(OTHER_SHARE * n) if others and n >= MIN_OTHER else 0
    main = sample_networks(space, n - k, seed, held_out=(), off_grid=False)
    rng = random.Random(seed)
    extra = []
    for i in range(k):
        fam = family(space.families[i % len(space.families)])
        widths = random_widths(fam, rng, space.grid)
        extra.append(make_network(fam, "resolution", widths, others[i % len(others)],
                                  space.classes))
    return main + at_dtypes(extra, space.dtypes)


def _design(samples: Sequence[Sample], overhead_us: float, l2_mb: float
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of summed layer features, the gaps they must explain, and the scales."""
    x = np.array([np.sum([features(spec, l2_mb) for spec, _ in s.layers], axis=0)
                  for s in samples])
    base = np.array([sum(e - overhead_us for _, e in s.layers) + overhead_us
                     for s in samples])
    measured = np.array([s.measured_us for s in samples])
    return x, measured - base, measured


def _solve(x: np.ndarray, gap: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Coefficients on relative errors, all >= 0: inside a network a layer costs at least
    its entry less the overhead (a negative per-layer term, free to fit noise at 224 px,
    made small networks cost less than nothing)."""
    coef, _ = nnls(x / scale[:, None], gap / scale)
    return coef


def _predict(x: np.ndarray, gap_base: np.ndarray, coef: np.ndarray) -> np.ndarray:
    return gap_base + x @ coef


def cross_validate(samples: Sequence[Sample], overhead_us: float, l2_mb: float,
                   folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """Each network's out-of-fold relative error (predicted / measured - 1)."""
    x, gap, measured = _design(samples, overhead_us, l2_mb)
    base = measured - gap
    fold = np.random.default_rng(seed).permutation(len(samples)) % min(folds, len(samples))
    pred = np.zeros(len(samples))
    for f in range(fold.max() + 1):
        train, test = fold != f, fold == f
        coef = _solve(x[train], gap[train], measured[train])
        pred[test] = _predict(x[test], base[test], coef)
    return pred / measured - 1


def errors(rel: np.ndarray) -> dict[str, Any]:
    pct = 100 * np.abs(rel)
    return {"n": len(rel), "mape_pct": float(pct.mean()), "max_pct": float(pct.max()),
            "within_5": int((pct <= 5).sum()), "within_10": int((pct <= 10).sum())}


def fit(samples: Sequence[Sample], overhead_us: float, fingerprint: dict[str, Any],
        l2_grid: Sequence[float] = L2_GRID_MB) -> Calibration:
    """The model that explains ``samples`` best, its L2 cutoff chosen by cross-validation."""
    if len(samples) < MIN_NETWORKS:
        raise CalibrationError(f"a calibration needs at least {MIN_NETWORKS} networks to fit "
                               f"and cross-validate its parameters; got {len(samples)}")
    scored = {l2: cross_validate(samples, overhead_us, l2) for l2 in l2_grid}
    l2 = min(scored, key=lambda c: float(np.mean(np.abs(scored[c]))))
    x, gap, measured = _design(samples, overhead_us, l2)
    a_fits, a_act, a_layer = map(float, _solve(x, gap, measured))
    return Calibration(overhead_us, l2, a_fits, a_act, a_layer,
                       fingerprint=dict(fingerprint), networks=[s.name for s in samples],
                       cv=errors(scored[l2]))


def measure_samples(store: LutStore, version: Version, runner: Runner, nets: Sequence[Network],
                    passes: int = PASSES, drift_keys: int | None = None,
                    progress: Progress | None = None) -> list[Sample]:
    """Time ``nets`` whole (interleaved passes) with a drift sample of their keys between
    passes; each latency is brought back to the LUT's time by the drift factor."""
    tables = all_tables(store, version)
    absent = sorted({k for n in nets for k in n.keys} - tables.table.keys() - tables.extra.keys())
    if absent:
        ensure_keys(store, version, absent, runner=runner)
        tables = all_tables(store, version)
    lookup = {**tables.table, **tables.extra}
    drift_keys = min(100, 4 * len(nets)) if drift_keys is None else drift_keys
    drift = SessionDrift(runner, nets, tables, drift_keys, SEED)
    timed = time_networks(runner, {n.name: n for n in nets}, passes, seed=SEED,
                          progress=progress, between=lambda p: drift.measure_slice(p, passes))
    factor = drift.factors()["lut"] or 1.0
    return [Sample(n.name, [(node.spec, lookup[node.spec.key]) for node in n.nodes],
                   summary(timed[n.name])["latency_us"] / factor) for n in nets]


def calibrate(store: LutStore, version: Version, runner: Runner, n: int = NETWORKS,
              passes: int = PASSES, progress: Progress | None = None) -> Calibration:
    """Measure the calibration set on ``runner``, fit, and store the calibration with the
    version (refused if the runner's setup is not the version's)."""
    version.require_same_setup(runner.fingerprint(), "a calibration must be measured on the "
                               "device and settings the LUT was built with")
    if store.calibration(version) is not None:
        raise CalibrationError(f"{version.label} is calibrated already (it or the version it "
                               "was derived from), and a calibration never changes")
    nets = calibration_set(Space.of(version.space), n)
    samples = measure_samples(store, version, runner, nets, passes, progress=progress)
    overhead = store.stats(version.id).get("invoke_overhead_us", 0.0)
    cal = fit(samples, overhead, version.fingerprint)
    store.set_calibration(version.id, cal)
    return cal


def ensure_calibrated(db: Path | str, version_id: int, runner: Runner, n: int = NETWORKS,
                      passes: int = PASSES, progress: Progress | None = None
                      ) -> tuple[Calibration, bool]:
    """The calibration that holds for ``db@version_id``, made now if there is none yet
    (after a sweep seals). Returns it and whether it was made now."""
    with LutStore.open(db) as store:
        version = store.version(version_id)
        cal = store.calibration(version)
        if cal is not None:
            return cal, False
        store.lock()
        return calibrate(store, version, runner, n, passes, progress), True
