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
Where the runtime has an op profiler, each network's layers are profiled too, and the
model is also fitted on those per-layer times (``analysis.calibration_fit``): the
candidate that predicts networks it was not fitted on best is kept.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from analysis.calibration_fit import Form, Net, errors, fit_form
from analysis.features import all_tables
from analysis.profile import fold_free_ops
from analysis.sampling import Space, at_dtypes, make_network, random_widths, sample_networks
from analysis.validate import SessionDrift
from bench.machine_state import MachineState
from bench.missing import ensure_keys
from bench.runners.base import Runner, RunnerError
from bench.tflite_build import build_network
from bench.timing import Progress, session_state, time_networks
from bench.zoo import family
from lut_db.calibration import (
    MODEL,
    PER_LAYER,
    V3,
    V4,
    Calibration,
    CalibrationError,
    weight_mb,
    working_mb,
)
from lut_db.network import Network
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
# Where the device reports its L2 (the cache a layer alone keeps its weights in), one
# window is pinned to it: eviction starts when a network's working set (weights and
# activations) reaches this share of the L2 and is complete at that one (a real cache
# loses lines before it is full). On a 2 MB L2: 1.5-3 MB, where the cross-validated
# windows of quiet fits fell; on 1 MB it gave the quiet numbers of benchmarks/README.md.
L2_WINDOW = (0.75, 1.5)
# Where it reports an L3 as well, a window set by the L3 is a candidate too, and
# cross-validation keeps one of the two: the L3 is shared by every core (on a cloud host,
# with the neighbours' too), so whether a network's weights stay in it between invokes is
# the device's to say. Eviction starts at 1/32 of the L3 (or the L2, if larger) and is
# complete at 1/4 of it. On a VM with 0.5 MB of L2 and 32 MB of L3 the L2's window left
# every network cold; the L3's 1-8 MB explained three runs' networks out of fold to 2.2,
# 3.2 and 5.7 % (the L2's: 3.1, 4.8, 6.5 %), and of nine shares of the L3 tried it was
# the one chosen in every run (benchmarks/README.md). Fitted freely over the whole grid,
# the window moved between 0.5 and 8 MB from one session to the next.
L3_WINDOW = (1 / 32, 1 / 4)
# The candidates, in order of preference on a tie: the roofline fitted on totals alone,
# the same fitted on per-layer times too, with a factor per layer kind, and with a cost
# per MB of weights that compute does not hide as well (profiles show 1x1 convs with 0.5-4
# MB of weights 30-70 % slower inside than alone, small ones not).
TOTALS = Form("roofline, fitted on whole-network totals", per_layer=False, kinds=False)
LAYERS = Form("roofline, fitted on per-layer times too", per_layer=True, kinds=False)
KINDS = Form("roofline + a factor per layer kind, fitted on per-layer times", per_layer=True,
             kinds=True)
EXPOSED = Form("roofline + kinds + streaming compute does not hide, on per-layer times",
               per_layer=True, kinds=True, exposed=True)


@dataclass
class Sample:
    """One calibration network: its layers and its measured latency (LUT-time speed)."""

    name: str
    layers: list[tuple[Any, float]]  # (LayerSpec, LUT entry us)
    measured_us: float  # the median of its repeats
    repeats_us: list[float] = field(default_factory=list)  # each repeat's median, in order
    state: MachineState | None = None  # the machine over the session that measured it
    profile_us: list[float] | None = None  # each layer's time inside it (op profiler)


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


def cache_windows(cache_kb: dict[str, int] | None, grid: Sequence[float] = CACHE_GRID_MB
                  ) -> tuple[list[tuple[float, float]], str]:
    """The cache windows the fit may choose from, and in words how they were set: from the
    L2 (and L3) the device reports, or every pair of the grid when it reports none."""
    l2_kb, l3_kb = ((cache_kb or {}).get(level) for level in ("l2", "l3"))
    if not l2_kb:
        return ([(lo, hi) for lo in grid for hi in grid if hi >= lo],
                "cross-validated (the device reports no cache sizes)")
    l2 = l2_kb / 1024
    lo, hi = (round(f * l2, 3) for f in L2_WINDOW)
    windows = [(lo, hi)]
    l3 = (l3_kb or 0) / 1024
    lo3, hi3 = max(round(L3_WINDOW[0] * l3, 3), l2), round(L3_WINDOW[1] * l3, 3)
    if hi3 <= hi:  # an L3 no larger than the L2's window says nothing more
        return windows, f"pinned to the L2 the device reports ({l2:g} MB)"
    return windows + [(lo3, hi3)], (f"chosen out of fold between the L2 ({l2:g} MB) and "
                                    f"the L3 ({l3:g} MB) the device reports")


def window_source(phrase: str, window: tuple[float, float], l2_window: tuple[float, float]
                  ) -> str:
    """``phrase`` from ``cache_windows`` with the window the fit kept, and whose it is."""
    if phrase.startswith("cross-validated"):
        return phrase
    lo, hi = window
    whose = "" if phrase.startswith("pinned") else (
        " (the L2's)" if window == l2_window else " (the L3's)")
    return f"{phrase}: {lo:g}-{hi:g} MB{whose}"


# What fills the cache, each with its models' names: the working set (weights and the
# activations the layers move: v5) and weights alone (v3, v4). Both are fitted and compared
# out of fold: weights alone still wins where activations stay small next to the L2.
RULES = {"working set": (working_mb, MODEL, PER_LAYER), "weights only": (weight_mb, V3, V4)}


def fit_candidates(samples: Sequence[Sample], overhead_us: float, fingerprint: dict[str, Any],
                   cache_grid: Sequence[float] = CACHE_GRID_MB,
                   us_per_mb_grid: Sequence[float] = US_PER_MB_GRID,
                   cache_kb: dict[str, int] | None = None,
                   weights_only: bool | None = None) -> list[Calibration]:
    """Every candidate (totals alone; with per-layer profiles of at least MIN_NETWORKS
    networks, the per-layer fits too), under each eviction rule (``weights_only``: one rule
    alone), each with its streaming cost and cache window chosen by cross-validation (from
    windows set by the L2 and L3 of ``cache_kb``, else of the fingerprint, where there are)
    and its terms fitted on all the samples."""
    if len(samples) < MIN_NETWORKS:
        raise CalibrationError(f"a calibration needs at least {MIN_NETWORKS} networks to fit "
                               f"and cross-validate its parameters; got {len(samples)}")
    rules = list(RULES) if weights_only is None else [
        "weights only" if weights_only else "working set"]
    return [c for rule in rules for c in _fit_rule(samples, overhead_us, fingerprint,
                                                   cache_grid, us_per_mb_grid, cache_kb, rule)]


def _fit_rule(samples: Sequence[Sample], overhead_us: float, fingerprint: dict[str, Any],
              cache_grid: Sequence[float], us_per_mb_grid: Sequence[float],
              cache_kb: dict[str, int] | None, rule: str) -> list[Calibration]:
    footprint, totals, per_layer = RULES[rule]
    nets = [Net(s.layers, s.measured_us, overhead_us, s.profile_us, footprint) for s in samples]
    windows, phrase = cache_windows(cache_kb or fingerprint.get("cache_kb"), cache_grid)
    profiled = sum(n.profile is not None for n in nets)
    forms = [TOTALS, LAYERS, KINDS, EXPOSED] if profiled >= MIN_NETWORKS else [TOTALS]
    out = []
    for f in (fit_form(nets, form, windows, us_per_mb_grid) for form in forms):
        lo, hi = f.window
        name = f.form.name if rule == "working set" else f"{f.form.name}, {rule}"
        out.append(Calibration(overhead_us, lo, hi, f.us_per_weight_mb, f.us_per_act_mb,
                               f.us_per_layer, fingerprint=dict(fingerprint),
                               networks=[s.name for s in samples], cv=errors(f.oof),
                               model=per_layer if f.form.kinds else totals,
                               kind_factor=f.kind_factor,
                               cache_source=window_source(phrase, f.window, windows[0]),
                               us_per_weight_mb_exposed=f.us_per_weight_mb_exposed,
                               candidates={name: {**errors(f.oof), "profiled": profiled}}))
    return out


def fit(samples: Sequence[Sample], overhead_us: float, fingerprint: dict[str, Any],
        cache_grid: Sequence[float] = CACHE_GRID_MB,
        us_per_mb_grid: Sequence[float] = US_PER_MB_GRID,
        cache_kb: dict[str, int] | None = None, weights_only: bool | None = None
        ) -> Calibration:
    """The simplest candidate (``fit_candidates``; fewest fitted terms) whose out-of-fold
    error is within one standard error of the best one's, and of those the one with the
    smallest; every candidate's errors kept with it.

    Why not simply the best: 40 networks cannot tell apart errors closer than their
    standard error, and the candidates with a factor per layer kind won by less than that
    on networks at the LUT's resolution, then read 32-px networks 4-6 % high in every
    calibration benchmark of 2026-12-07 (benchmarks/README.md). The one-standard-error rule
    of cross-validation keeps the simpler model where the data cannot choose."""
    fitted = fit_candidates(samples, overhead_us, fingerprint, cache_grid, us_per_mb_grid,
                            cache_kb, weights_only)
    kept = simplest_within_one_se(fitted)
    every = {name: {**cv, "kept": c is kept}
             for c in fitted for name, cv in c.candidates.items()}
    return replace(kept, candidates=every)


def simplest_within_one_se(fitted: Sequence[Calibration]) -> Calibration:
    """Of the candidates whose out-of-fold error is within one standard error of the
    best's, the one with the fewest terms (then the smaller error; then the first)."""
    best = min(fitted, key=lambda c: round(c.cv["mape_pct"], 7))
    bar = best.cv["mape_pct"] + best.cv.get("se_pct", 0.0)
    return min((c for c in fitted if c.cv["mape_pct"] <= bar + 1e-9),
               key=lambda c: (terms(c), round(c.cv["mape_pct"], 7)))


def terms(cal: Calibration) -> int:
    """How many terms a candidate fitted besides its window and streaming cost: the cost
    per MB of activations, per layer, per layer kind, per MB of exposed weights."""
    return 2 + len(cal.kind_factor) + (cal.us_per_weight_mb_exposed > 0)


def profile_layers(runner: Runner, nets: Sequence[Network],
                   progress: Progress | None = None) -> dict[str, list[float]]:
    """Each network's per-layer times from the runtime's op profiler, where it has one and
    its ops map one to one onto the network's layers (free ops folded in)."""
    out: dict[str, list[float]] = {}
    if not runner.op_profiler:
        return out
    for i, net in enumerate(nets):
        if progress:
            progress(0, f"per-layer profiles {i + 1}/{len(nets)}")
        try:
            ops = runner.op_profile(build_network(net))
        except RunnerError:
            continue  # this network is fitted on its total alone
        times = fold_free_ops(ops) if ops else []
        if len(times) == len(net.nodes):
            out[net.name] = times
    return out


def measure_samples(store: LutStore, version: Version, runner: Runner, nets: Sequence[Network],
                    passes: int = PASSES, drift_keys: int | None = None,
                    progress: Progress | None = None, repeats: int = 1,
                    profile: Sequence[Network] = ()) -> list[Sample]:
    """Time ``nets`` whole (``repeats`` x ``passes`` interleaved passes) with a drift sample
    of their keys between passes; each latency is brought back to the time its entries
    were measured at by the drift factors (``SessionDrift.network_factor``). The networks
    of ``profile`` have their layers profiled first."""
    tables = all_tables(store, version)
    absent = sorted({k for n in nets for k in n.keys} - tables.table.keys() - tables.extra.keys())
    if absent:
        ensure_keys(store, version, absent, runner=runner)
        tables = all_tables(store, version)
    lookup = {**tables.table, **tables.extra}
    profiles = profile_layers(runner, profile, progress)
    drift_keys = min(100, 4 * len(nets)) if drift_keys is None else drift_keys
    drift = SessionDrift(runner, nets, tables, drift_keys, SEED)
    rounds = passes * repeats
    timed = time_networks(runner, {n.name: n for n in nets}, passes, repeats=repeats, seed=SEED,
                          progress=progress, between=lambda p: drift.measure_slice(p, rounds))
    lut_factor = drift.factors()["lut"] or 1.0
    # each network brought to its own entries' time: keys measured on demand (other
    # resolutions, held-out shapes) were measured at other times than the LUT
    factor = {n.name: drift.network_factor(n, lut_factor) for n in nets}
    state = session_state(timed)
    return [Sample(n.name, [(node.spec, lookup[node.spec.key]) for node in n.nodes],
                   timed[n.name].latency_us / factor[n.name],
                   [x / factor[n.name] for x in timed[n.name].repeats_us], state,
                   profiles.get(n.name)) for n in nets]


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
    samples = measure_samples(store, version, runner, nets, passes, progress=progress,
                              profile=nets)
    overhead = store.stats(version).get("invoke_overhead_us", 0.0)
    state = samples[0].state if samples else None
    # a LUT from before caches were recorded: what the same device reports now
    caches = version.fingerprint.get("cache_kb") or runner.fingerprint().get("cache_kb")
    cal = replace(fit(samples, overhead, version.fingerprint, cache_kb=caches),
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
