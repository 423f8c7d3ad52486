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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import nnls

from analysis.features import all_tables
from analysis.sampling import Space, at_dtypes, make_network, random_widths, sample_networks
from analysis.stats import FOLDS, out_of_fold
from analysis.validate import SessionDrift
from bench.machine_state import MachineState
from bench.missing import ensure_keys
from bench.runners.base import Runner
from bench.timing import Progress, session_state, time_networks
from bench.zoo import family
from lut_db.calibration import Calibration, CalibrationError, act_mb, evicted_share, weight_mb
from lut_db.spec import Network
from lut_db.store import LutStore
from lut_db.versions import Version

SEED = 1_000_003  # the calibration set's seed: never the validation's (0)
NETWORKS = 40
PASSES = 3
MIN_NETWORKS = 8  # fewer than this cannot pin five parameters down and cross-validate them
# Candidate cache sizes (MB) where a network's weights start to be evicted, and where all
# are: the pair that explains the networks best is kept. Phones and desktop cores have
# 0.25-4 MB of L2 per core; larger sizes stand for big shared caches.
CACHE_GRID_MB = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0)


@dataclass
class Sample:
    """One calibration network: its layers and its measured latency (LUT-time speed)."""

    name: str
    layers: list[tuple[Any, float]]  # (LayerSpec, LUT entry us)
    measured_us: float  # the median of its repeats
    repeats_us: list[float] = field(default_factory=list)  # each repeat's median, in order
    state: MachineState | None = None  # the machine over the session that measured it


OTHER_RESOLUTIONS = (32, 56, 112, 224)  # a quarter of the set at two of these: weights
# cost the same at any resolution, compute does not; two resolutions tell the two apart
OTHER_SHARE = 0.25
SMALL_SHARE = 0.15  # narrow networks at the lowest resolution: whether a network's weights
# stay in cache shows only in networks small enough to fit (NetAdapt's results often are)
SMALL_WIDTHS = (0.08, 0.45)
MIN_OTHER = 16  # smaller sets stay at the LUT's resolutions (no keys measured on demand)
# The weight-streaming cost (us/MB) is chosen by cross-validation from this grid, with the
# cache sizes: 0 (never waits for weights), then 10 % steps from 2 us/MB (500 GB/s) to
# 2,000 us/MB (0.5 GB/s); phones and desktops stream 5-50 GB/s from beyond their L2.
US_PER_MB_GRID = (0.0, *(round(2.0 * 1.1**i, 2) for i in range(73)))


def calibration_set(space: Space, n: int = NETWORKS, seed: int = SEED) -> list[Network]:
    """``n`` networks of the space's families: most at its resolutions, on its grid (keys
    it holds), a quarter at other resolutions and some narrow ones at the lowest
    resolution (their keys are measured on demand)."""
    others = [r for r in OTHER_RESOLUTIONS if r not in space.resolutions][:2]
    k = round(OTHER_SHARE * n) if others and n >= MIN_OTHER else 0
    k_small = round(SMALL_SHARE * n) if others and n >= MIN_OTHER else 0
    main = sample_networks(space, n - k - k_small, seed, held_out=(), off_grid=False)
    rng = random.Random(seed)
    extra = []
    for i in range(k):
        fam = family(space.families[i % len(space.families)])
        widths = random_widths(fam, rng, space.grid)
        extra.append(make_network(fam, "resolution", widths, others[i % len(others)],
                                  space.classes))
    low = min([*space.resolutions, *others])
    for i in range(k_small):
        fam = family(space.families[i % len(space.families)])
        widths = random_widths(fam, rng, space.grid, SMALL_WIDTHS)
        extra.append(make_network(fam, "small", widths, low, space.classes))
    return main + at_dtypes(extra, space.dtypes)


@dataclass
class _Rows:
    """The calibration networks as arrays, for fitting: per network the sum of its layers'
    entries less the overhead, its weight and activation MB, its layer count, its
    measured latency, and per layer its weight MB and entry less the overhead."""

    inside: np.ndarray
    weights: np.ndarray
    acts: np.ndarray
    layers: np.ndarray
    measured: np.ndarray
    overhead_us: float
    _layer_w: list[np.ndarray]
    _layer_e: list[np.ndarray]

    @classmethod
    def of(cls, samples: Sequence[Sample], overhead_us: float) -> _Rows:
        e = [np.array([x - overhead_us for _, x in s.layers]) for s in samples]
        w = [np.array([weight_mb(spec) for spec, _ in s.layers]) for s in samples]
        return cls(np.array([x.sum() for x in e]), np.array([x.sum() for x in w]),
                   np.array([sum(act_mb(spec) for spec, _ in s.layers) for s in samples]),
                   np.array([len(s.layers) for s in samples], float),
                   np.array([s.measured_us for s in samples]), overhead_us, w, e)

    def streaming(self, us_per_mb: float) -> np.ndarray:
        """Per network: what its layers wait for their weights beyond their compute."""
        return np.array([np.maximum(0.0, us_per_mb * w - e).sum()
                         for w, e in zip(self._layer_w, self._layer_e)])

    def evicted(self, cache_mb: float, evicted_mb: float) -> np.ndarray:
        return np.array([evicted_share(w, cache_mb, evicted_mb) for w in self.weights])

    def design(self, stream: np.ndarray, evicted: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """Each network's latency before the fitted linear terms, and what they multiply."""
        base = self.inside + self.overhead_us + evicted * stream
        return base, np.column_stack([evicted * self.acts, self.layers])


def _solve(x: np.ndarray, gap: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Coefficients on relative errors, all >= 0: inside a network a layer costs at least
    its entry less the overhead (a negative per-layer term, free to fit noise at 224 px,
    made small networks cost less than nothing)."""
    coef, _ = nnls(x / scale[:, None], gap / scale)
    return coef


def _out_of_fold(base: np.ndarray, x: np.ndarray, measured: np.ndarray,
                 folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """Each network's out-of-fold relative error (predicted / measured - 1)."""

    def fit_predict(train: np.ndarray, test: np.ndarray) -> np.ndarray:
        coef = _solve(x[train], measured[train] - base[train], measured[train])
        return base[test] + x[test] @ coef

    return out_of_fold(len(measured), fit_predict, folds, seed) / measured - 1


def errors(rel: np.ndarray) -> dict[str, Any]:
    pct = 100 * np.abs(rel)
    return {"n": len(rel), "mape_pct": float(pct.mean()), "max_pct": float(pct.max()),
            "within_5": int((pct <= 5).sum()), "within_10": int((pct <= 10).sum())}


def fit(samples: Sequence[Sample], overhead_us: float, fingerprint: dict[str, Any],
        cache_grid: Sequence[float] = CACHE_GRID_MB,
        us_per_mb_grid: Sequence[float] = US_PER_MB_GRID) -> Calibration:
    """The model that explains ``samples`` best: its cache sizes and weight-streaming cost
    chosen by cross-validation, its linear terms fitted on all the samples."""
    if len(samples) < MIN_NETWORKS:
        raise CalibrationError(f"a calibration needs at least {MIN_NETWORKS} networks to fit "
                               f"and cross-validate its parameters; got {len(samples)}")
    rows = _Rows.of(samples, overhead_us)
    sizes = [(lo, hi) for lo in cache_grid for hi in cache_grid if hi >= lo]
    evicted = {c: rows.evicted(*c) for c in sizes}
    scored: dict[tuple[float, float, float], np.ndarray] = {}
    for k in us_per_mb_grid:
        stream = rows.streaming(k)
        for c in sizes:
            scored[(k, *c)] = _out_of_fold(*rows.design(stream, evicted[c]), rows.measured)
    # ties (e.g. no network near a cutoff) go to the smaller cost and caches
    best = min(scored, key=lambda c: (round(float(np.mean(np.abs(scored[c]))), 9), c))
    k, lo, hi = best
    base, x = rows.design(rows.streaming(k), evicted[lo, hi])
    a_act, a_layer = map(float, _solve(x, rows.measured - base, rows.measured))
    return Calibration(overhead_us, lo, hi, k, a_act, a_layer, fingerprint=dict(fingerprint),
                       networks=[s.name for s in samples], cv=errors(scored[best]))


def measure_samples(store: LutStore, version: Version, runner: Runner, nets: Sequence[Network],
                    passes: int = PASSES, drift_keys: int | None = None,
                    progress: Progress | None = None, repeats: int = 1) -> list[Sample]:
    """Time ``nets`` whole (``repeats`` x ``passes`` interleaved passes) with a drift sample
    of their keys between passes; each latency is brought back to the LUT's time by the
    drift factor."""
    tables = all_tables(store, version)
    absent = sorted({k for n in nets for k in n.keys} - tables.table.keys() - tables.extra.keys())
    if absent:
        ensure_keys(store, version, absent, runner=runner)
        tables = all_tables(store, version)
    lookup = {**tables.table, **tables.extra}
    drift_keys = min(100, 4 * len(nets)) if drift_keys is None else drift_keys
    drift = SessionDrift(runner, nets, tables, drift_keys, SEED)
    rounds = passes * repeats
    timed = time_networks(runner, {n.name: n for n in nets}, passes, repeats=repeats, seed=SEED,
                          progress=progress, between=lambda p: drift.measure_slice(p, rounds))
    factor = drift.factors()["lut"] or 1.0
    state = session_state(timed)
    return [Sample(n.name, [(node.spec, lookup[node.spec.key]) for node in n.nodes],
                   timed[n.name].latency_us / factor,
                   [x / factor for x in timed[n.name].repeats_us], state) for n in nets]


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
    overhead = store.stats(version).get("invoke_overhead_us", 0.0)
    state = samples[0].state if samples else None
    cal = replace(fit(samples, overhead, version.fingerprint),
                  machine_state=state.to_dict() if state else {})
    store.set_calibration(version, cal)
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
