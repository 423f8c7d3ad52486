"""The in-network model: fitted from whole networks, stored once with a version, used by
estimate, the adapter's fast path and the report."""

from __future__ import annotations

import random
import sqlite3
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from analysis import anchors
from analysis import calibrate as cb
from analysis.features import Tables
from analysis.report_build import build
from analysis.report_words import verdict_sentences
from analysis.sampling import Space
from analysis.validate import SessionDrift, validate
from bench import zoo
from bench.missing import estimate_network
from lut_db.calibration import (
    MODEL,
    PER_LAYER,
    V2,
    V3,
    V4,
    Calibration,
    CalibrationError,
    act_mb,
    weight_mb,
    working_mb,
)
from lut_db.errors import SetupMismatch
from lut_db.estimate import SlotEstimator, estimate
from lut_db.store import LutStore
from tests.fakes import BUSY, SPACE, FakeRunner, make_lut

STREAM = min(cb.US_PER_MB_GRID, key=lambda k: abs(k - 60))  # ~17 GB/s, on the fit's grid
TRUE = Calibration(overhead_us=5.0, cache_mb=1.5, evicted_mb=3.0, us_per_weight_mb=STREAM,
                   us_per_act_mb=0.5, us_per_layer=1.5)


def synthetic(n: int, seed: int = 0, truth: Calibration = TRUE) -> list[cb.Sample]:
    """Networks whose measured latency follows the model exactly (entries made up: a 5 us
    invoke plus compute; the truth's cache and streaming cost decide the rest)."""
    rng = random.Random(seed)
    space = Space.of(SPACE)
    out = []
    for net in cb.calibration_set(space, n, seed):
        layers = [(node.spec, 5.0 + node.spec.macs / 2e4 * rng.uniform(0.8, 1.2))
                  for node in net.nodes]
        out.append(cb.Sample(net.name, layers, truth.network_us(layers)))
    return out


def test_the_calibration_set_has_warm_and_cold_networks() -> None:
    """Whether a network's weights stay in cache can only be fitted from both kinds, and
    streaming only from networks where it outlasts compute."""
    samples = synthetic(30)
    share = [TRUE.evicted(sum(working_mb(spec) for spec, _ in s.layers)) for s in samples]
    assert sum(x == 0 for x in share) >= 3 and sum(x == 1 for x in share) >= 3
    streaming = [TRUE.us_per_weight_mb * weight_mb(spec) > e - TRUE.overhead_us
                 for s in samples for spec, e in s.layers]
    assert 0 < sum(streaming) < len(streaming)


def test_fit_recovers_the_physics_and_its_cache_size() -> None:
    cal = cb.fit(synthetic(30), TRUE.overhead_us, {"device": "fake"})
    assert (cal.cache_mb, cal.evicted_mb, cal.us_per_weight_mb) == (
        TRUE.cache_mb, TRUE.evicted_mb, TRUE.us_per_weight_mb)
    assert (cal.us_per_act_mb, cal.us_per_layer) == pytest.approx(
        (TRUE.us_per_act_mb, TRUE.us_per_layer), rel=1e-3, abs=1e-3)
    assert cal.cv["n"] == 30 and cal.cv["max_pct"] < 0.1 and cal.cv["within_5"] == 30
    assert Calibration.from_json(cal.to_json()) == cal


def test_a_device_reporting_l2_and_l3_chooses_between_their_windows() -> None:
    """With an L3 reported, a window set by it (1/32 to 1/4 of it) is a candidate beside
    the L2's, and cross-validation keeps the one the networks follow."""
    windows, phrase = cb.cache_windows({"l2": 512, "l3": 32 * 1024})
    assert windows == [(0.375, 0.75), (1.0, 8.0)] and "L3 (32 MB)" in phrase
    truth = replace(TRUE, cache_mb=1.0, evicted_mb=8.0)
    cal = cb.fit(synthetic(30, truth=truth), TRUE.overhead_us, {"device": "fake"},
                 cache_kb={"l2": 512, "l3": 32 * 1024})
    assert (cal.cache_mb, cal.evicted_mb) == (1.0, 8.0) and cal.cv["max_pct"] < 0.1
    assert cal.cache_source == f"{phrase}: 1-8 MB (the L3's)"
    # TRUE's window is a 2 MB L2's: kept, with the L3's (2-8 MB) beside it
    cal = cb.fit(synthetic(30), TRUE.overhead_us, {"device": "fake"},
                 cache_kb={"l2": 2048, "l3": 32 * 1024})
    assert (cal.cache_mb, cal.evicted_mb) == (1.5, 3.0)
    assert cal.cache_source.endswith("the L3 (32 MB) the device reports: 1.5-3 MB (the L2's)")
    # an L3 no larger than the L2's window adds nothing
    assert cb.cache_windows({"l2": 2048, "l3": 4096}) == (
        [(1.5, 3.0)], "pinned to the L2 the device reports (2 MB)")


def test_the_simplest_candidate_within_one_standard_error_is_kept() -> None:
    """A factor per layer kind that wins by less than the best error's standard error does
    not earn its terms; one that wins by more does."""
    def cand(mape: float, se: float, kinds: int) -> Calibration:
        return replace(TRUE, kind_factor={f"k{i}": 0.1 for i in range(kinds)},
                       cv={"mape_pct": mape, "se_pct": se})

    kinds, totals, worse = cand(1.53, 0.2, 5), cand(1.56, 0.2, 0), cand(2.3, 0.3, 0)
    assert cb.simplest_within_one_se([kinds, totals, worse]) is totals
    kinds = cand(1.0, 0.2, 5)
    assert cb.simplest_within_one_se([kinds, totals, worse]) is kinds
    # among as many terms, the smaller error; a calibration without se_pct: the best
    assert cb.simplest_within_one_se([worse, totals]) is totals
    old = replace(TRUE, kind_factor={"k": 0.1}, cv={"mape_pct": 1.5})  # stored before se_pct
    assert cb.simplest_within_one_se([old, totals]) is old


# once evicted, 1x1 convs run 20 % slower than alone, depthwise 10 % faster, residual adds
# 40 % slower, and 20 us per MB of weights are not hidden by compute; a 1 MB L2 pins the
# window to 0.75-1.5 MB
KINDS = {"conv 1x1": 0.2, "depthwise_conv2d": -0.1, "add": 0.4, "conv on the image": 0.0,
         "fully_connected": 0.0, "global_avg_pool": 0.0}
TRUE_LAYERS = replace(TRUE, model=PER_LAYER, cache_mb=0.75, evicted_mb=1.5, kind_factor=KINDS,
                      us_per_weight_mb_exposed=20.0)


def profiled(n: int, seed: int = 0) -> list[cb.Sample]:
    """Networks that follow TRUE_LAYERS exactly, with each layer's time inside as a profiler
    reports it: at another level than the whole (its own bookkeeping, another moment)."""
    rng = random.Random(seed)
    out = []
    for net in cb.calibration_set(Space.of(SPACE), n, seed):
        # made-up entries: an invoke, compute, and moving activations (what adds cost)
        layers = [(spec, 5.0 + spec.macs / 2e4 * rng.uniform(0.8, 1.2) + 100 * act_mb(spec))
                  for spec in net.specs]
        level = rng.uniform(0.9, 1.2)
        inside = [level * x for x in TRUE_LAYERS.layers_us(layers)]
        out.append(cb.Sample(net.name, layers, TRUE_LAYERS.network_us(layers),
                             profile_us=inside))
    return out


def test_per_layer_times_recover_each_kinds_cost() -> None:
    """With every layer's time inside, each kind's factor comes out; the totals alone
    cannot tell 1x1 convs from depthwise ones, so a per-layer candidate is kept: the one
    with exposed streaming."""
    cal = cb.fit(profiled(30), TRUE.overhead_us, {"device": "fake", "cache_kb": {"l2": 1024}})
    assert cal.model == PER_LAYER and cal.cache_source.startswith("pinned to the L2")
    assert (cal.cache_mb, cal.evicted_mb, cal.us_per_weight_mb) == (0.75, 1.5, STREAM)
    # the kinds with enough time in the profiles (not the classifier: 0.1 % of it here)
    assert cal.kind_factor == pytest.approx({k: f for k, f in KINDS.items()
                                             if k != "fully_connected"}, abs=1e-3)
    assert (cal.us_per_act_mb, cal.us_per_layer, cal.us_per_weight_mb_exposed) == pytest.approx(
        (0.5, 1.5, 20.0), abs=1e-3)
    kept = [name for name, c in cal.candidates.items() if c["kept"]]
    assert kept == [cb.EXPOSED.name] and cal.cv["max_pct"] < 0.1
    assert cal.candidates[cb.KINDS.name]["mape_pct"] > 0.1
    assert cal.candidates[cb.TOTALS.name]["mape_pct"] > 1.0
    assert Calibration.from_json(cal.to_json()) == cal
    net = profiled(1, seed=3)[0]
    assert cal.network_us(net.layers) == pytest.approx(net.measured_us, rel=1e-3)


def test_without_profiles_or_cache_sizes_the_fit_is_as_before() -> None:
    """No profiler: the totals alone; no L2 reported: the window cross-validated."""
    cal = cb.fit([replace(s, profile_us=None) for s in profiled(12)], 5.0, {})
    assert cal.model == MODEL
    assert list(cal.candidates) == [cb.TOTALS.name, f"{cb.TOTALS.name}, weights only"]
    assert cal.cache_source == "cross-validated (the device reports no cache sizes)"
    assert cal.kind_factor == {}


def test_a_network_whose_working_set_fits_keeps_its_weights_warm() -> None:
    """Same layers, warm or cold by the network's working set: cold ones cost at least
    their weights' streaming time, warm ones what they cost alone (less the invoke
    overhead), and a network between the two cache sizes is between the two."""
    small = zoo.MOBILENET_V1.network(width_mult=0.25, resolution=32, classes=10)
    layers = [(spec, 6.0) for spec in small.specs]
    w = sum(working_mb(spec) for spec in small.specs)
    warm = Calibration(5.0, w + 0.1, w + 1, 60.0, 0.0, 0.0)
    cold = Calibration(5.0, w - 1, w - 0.1, 60.0, 0.0, 0.0)
    half = Calibration(5.0, w - 0.5, w + 0.5, 60.0, 0.0, 0.0)
    assert warm.layers_us(layers) == [1.0] * len(layers)
    assert cold.layers_us(layers) == [max(1.0, 60.0 * weight_mb(s)) for s in small.specs]
    assert cold.network_us(layers) > warm.network_us(layers) == 5.0 + len(layers)
    assert half.evicted(w) == pytest.approx(0.5)
    assert half.network_us(layers) == pytest.approx(
        (cold.network_us(layers) + warm.network_us(layers)) / 2)


def int8_mobilenet() -> tuple[list, float, float]:
    """MobileNetV1 x0.25 at 224 px in int8, entries made up: its layers and its weight and
    activation MB (under 0.5 MB of weights, 2.5 MB of activations moved per invoke)."""
    net = zoo.MOBILENET_V1.network(width_mult=0.25, resolution=224).with_dtype("int8")
    layers = [(spec, 6.0 + spec.macs / 1e5) for spec in net.specs]
    return (layers, sum(weight_mb(s) for s in net.specs), sum(act_mb(s) for s in net.specs))


def test_activations_count_in_the_working_set() -> None:
    """An int8 MobileNet at 224 px keeps under 0.5 MB of weights, but its layers move 2.5 MB
    of activations through a 2 MB L2 each invoke: its weights do not stay warm. Weights
    alone (v3, v4) read it as warm, at its plain sum; v5 counts both and evicts them."""
    layers, weights, acts = int8_mobilenet()
    assert weights < 0.5 and acts > 2.5
    v5 = replace(TRUE_LAYERS, cache_mb=1.5, evicted_mb=3.0)  # a 2 MB L2's window
    v4 = replace(v5, model=V4)
    warm = sum(e - v5.overhead_us + v5.us_per_layer for _, e in layers) + v5.overhead_us
    assert v4.network_us(layers) == pytest.approx(warm)
    assert v5.network_us(layers) > warm * 1.02
    assert v5.evicted(sum(v5.footprint_mb(s) for s, _ in layers)) == pytest.approx(1, abs=0.01)


def test_calibrations_before_v5_keep_their_meaning() -> None:
    """A version calibrated with v3 or v4 keeps its estimates: weights alone decide its
    eviction, in the estimate and in the adapter's fast path."""
    layers, weights, _ = int8_mobilenet()
    for model in (V3, V4):
        stored = replace(TRUE_LAYERS, model=model, cache_mb=1.5, evicted_mb=3.0).to_json()
        cal = Calibration.from_json(stored)
        assert cal.model == model and cal.footprint_mb(layers[5][0]) == weight_mb(layers[5][0])
        assert cal.evicted(weights) == 0.0
    net = zoo.MOBILENET_V1.network(width_mult=0.25, resolution=224).with_dtype("int8")
    table = {spec.key: e for spec, e in layers}
    int8 = [(slots, lambda w, make=make: replace(make(w), dtype="int8"))
            for slots, make in zoo.MOBILENET_V1.slot_layers(224, 1000)]
    for cal in (Calibration.from_json(stored), replace(TRUE_LAYERS, cache_mb=1.5, evicted_mb=3.0)):
        slots = SlotEstimator(int8, table, calibration=cal)
        assert slots(zoo.MOBILENET_V1.widths(width_mult=0.25)) == pytest.approx(
            estimate(net, table, calibration=cal).total_us)


def test_the_fit_finds_a_working_set_the_weights_miss() -> None:
    """int8 networks that follow v5 (their activations evict their weights): the v5 fit
    recovers the model; the weights-only fit (v3/v4, for comparison) cannot."""
    true = replace(TRUE, us_per_act_mb=2.0)
    space = Space.of({"sweeps": [{"families": ["mobilenet_v1", "mobilenet_v2"],
                                  "resolutions": [224], "grid": 32, "classes": 1000,
                                  "dtype": "int8"}]})
    rng = random.Random(0)
    samples = []
    for net in cb.calibration_set(space, 24):
        layers = [(spec, 5.0 + spec.macs / 2e5 * rng.uniform(0.8, 1.2)) for spec in net.specs]
        samples.append(cb.Sample(net.name, layers, true.network_us(layers)))
    fp = {"device": "fake", "cache_kb": {"l2": 2048}}
    new = cb.fit(samples, true.overhead_us, fp)
    old = cb.fit(samples, true.overhead_us, fp, weights_only=True)
    assert new.model == MODEL and old.model == V3
    assert new.cv["max_pct"] < 0.1 and old.cv["mape_pct"] > 1.0
    assert new.us_per_weight_mb == true.us_per_weight_mb


def test_the_fit_keeps_whichever_rule_predicts_best() -> None:
    """Both eviction rules are fitted and compared out of fold: networks that follow the
    working-set rule keep v5; a device whose weights alone decide keeps v3, by the same fit."""
    space = Space.of({"sweeps": [{"families": ["mobilenet_v1", "mobilenet_v2"],
                                  "resolutions": [224], "grid": 32, "classes": 1000,
                                  "dtype": "int8"}]})
    fp = {"device": "fake", "cache_kb": {"l2": 2048}}
    for true, kept in ((replace(TRUE, us_per_act_mb=2.0), MODEL),
                       (replace(TRUE, us_per_act_mb=2.0, model=V3), V3)):
        rng = random.Random(0)
        samples = []
        for net in cb.calibration_set(space, 24):
            layers = [(spec, 5.0 + spec.macs / 2e5 * rng.uniform(0.8, 1.2)) for spec in net.specs]
            samples.append(cb.Sample(net.name, layers, true.network_us(layers)))
        cal = cb.fit(samples, true.overhead_us, fp)
        assert cal.model == kept
        assert {cb.TOTALS.name, f"{cb.TOTALS.name}, weights only"} <= set(cal.candidates)
        assert sum(c["kept"] for c in cal.candidates.values()) == 1


def test_a_v2_calibration_keeps_its_formula() -> None:
    """Versions calibrated before v3 keep what they were calibrated with."""
    old = ('{"cv": {}, "fingerprint": {}, "l2_mb": 2.0, "model": "cache-l2-v2", '
           '"networks": [], "overhead_us": 1.0, "us_per_act_mb": 0.0, "us_per_layer": 0.5, '
           '"us_per_mb_fits": 10.0}')
    cal = Calibration.from_json(old)
    assert cal.model == V2 and cal.us_per_weight_mb == 10.0
    spec = zoo.MOBILENET_V1.network(resolution=32, classes=10).specs[-2]  # pw13: 4 MB
    fits = zoo.MOBILENET_V1.network(resolution=32, classes=10).specs[-6]  # pw11: 1 MB
    assert cal.layer_us(spec, 100.0) == 99.5  # beyond L2: no extra
    assert cal.layer_us(fits, 20.0) == pytest.approx(19.5 + 10.0 * weight_mb(fits))


def test_the_stacked_solver_finds_each_bounded_minimum_as_the_single_one_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The grid search solves every window and fold of a streaming cost at once: each
    answer is the one the single solver (non-negative least squares) gives, whether the
    bounds hold no coefficient, some or all of them, and none is left over to it."""
    from analysis import calibration_fit as cf

    single = cf.solve
    rng = np.random.default_rng(0)
    for p in (2, 5, 9):
        a = rng.normal(size=(40, 3 * p, p))
        g = a.transpose(0, 2, 1) @ a
        b = rng.normal(size=(40, p)) * rng.choice([0.1, 1.0, 10.0], size=(40, 1))
        lower = np.array([0.0, 0.0] + [-0.5] * (p - 2))
        with monkeypatch.context() as m:
            m.setattr(cf, "solve", None)  # left over: a TypeError
            got = cf.solve_many(g.reshape(8, 5, p, p), b.reshape(8, 5, p), lower)
        want = np.array([single(gi, bi, lower) for gi, bi in zip(g, b)])
        bound = np.isclose(want, lower, atol=1e-9)
        assert bound.any(axis=1).sum() > 5 and (~bound).all(axis=1).sum() > 0
        np.testing.assert_allclose(got.reshape(40, p), want, rtol=1e-8, atol=1e-10)


def test_too_few_networks_are_refused() -> None:
    with pytest.raises(CalibrationError, match="at least 8 networks"):
        cb.fit(synthetic(30)[:5], 5.0, {})


def test_an_unknown_model_is_refused() -> None:
    cal = cb.fit(synthetic(12), 5.0, {})
    with pytest.raises(CalibrationError, match="another netadapt-farm"):
        Calibration.from_json(cal.to_json().replace(MODEL, "cache-l3-v9"))


@pytest.fixture(scope="module")
def calibrated_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Calibration]:
    """A FakeRunner LUT calibrated by the FakeRunner (whole networks 1.1 x their layers),
    on a machine other processes kept busy, and the calibration ``calibrate`` returned."""
    store, version = make_lut(tmp_path_factory.mktemp("calibrated") / "fake.db")
    cal = cb.calibrate(store, version, FakeRunner(state=BUSY), n=16, passes=1)
    store.close()
    return store.path, cal


@pytest.fixture
def calibrated(calibrated_file: tuple[Path, Calibration], tmp_path: Path):
    """A private copy of ``calibrated_file``: (store, its version, what calibrate returned)."""
    import shutil

    path, cal = calibrated_file
    store = LutStore.open(shutil.copy(path, tmp_path / "fake.db"))
    return store, store.version(1), cal


def test_calibrate_stores_once_and_estimates_use_it(calibrated) -> None:
    store, version, cal = calibrated
    assert store.calibration(version) == cal and len(cal.networks) == 16
    with pytest.raises(CalibrationError, match="calibrated already"):
        store.set_calibration(version, cal)
    with pytest.raises(sqlite3.IntegrityError, match="never changes"):
        store.db.execute("DELETE FROM calibrations")
    net = zoo.MOBILENET_V1.network(width_mult=0.5, resolution=32, classes=10)
    est = estimate_network(store, version, net)
    raw = estimate_network(store, version, net, raw=True)
    assert est.calibration == cal and raw.calibration is None
    assert est.raw_total_us == raw.total_us != est.total_us
    assert est.total_us == pytest.approx(
        cal.overhead_us + sum(x.in_network_us for x in est.layers))
    # the fake device reports no caches and has no op profiler: fitted as before, and says so
    assert cal.model == MODEL and "cross-validated (the device reports no cache sizes)" in (
        cal.describe())
    # fitted while the machine was busy: stored with that state, and estimate says so
    assert cal.machine_state["busy"] and cal.machine_state["other_cpu_cores"] == 1.2
    said: list[str] = []
    estimate_network(store, version, net, log=said.append)
    assert said == [("warning: this LUT's calibration was fitted from networks measured while "
                    "the machine was busy (other processes used 1.20 of 2 cores; load average "
                    "2.40), so calibrated estimates may be off; calibrate a new LUT version "
                    "on a quiet machine")]
    assert est.to_dict()["calibration"]["warning"] == said[0]
    # the adapter's fast path gives the same number from cached look-ups
    table = store.table(version)
    slots = SlotEstimator(zoo.MOBILENET_V1.slot_layers(32, 10), table, calibration=cal)
    widths = zoo.MOBILENET_V1.widths(width_mult=0.5)
    assert slots(widths) == pytest.approx(estimate(net, table, calibration=cal).total_us)


def test_a_device_reporting_its_l2_pins_the_window(tmp_path: Path) -> None:
    runner = FakeRunner(fp={"device": "fake", "runs": 3, "cache_kb": {"l1d": 32, "l2": 512}})
    store, version = make_lut(tmp_path / "fake.db", runner)
    cal = cb.calibrate(store, version, runner, n=16, passes=1)
    assert (cal.cache_mb, cal.evicted_mb) == (0.375, 0.75)
    assert "pinned to the L2 the device reports (0.5 MB): 0.375-0.75 MB" in cal.describe()


def test_the_fast_path_prices_each_kind_as_the_estimate_does() -> None:
    """A per-layer calibration's kind factors reach the adapter's cached look-ups."""
    net = zoo.MOBILENET_V2.network(width_mult=0.5, resolution=32, classes=10)
    table = {spec.key: 5.0 + spec.macs / 2e4 for spec in net.specs}
    slots = SlotEstimator(zoo.MOBILENET_V2.slot_layers(32, 10), table,
                          calibration=TRUE_LAYERS)
    plain = replace(TRUE_LAYERS, model=MODEL, kind_factor={})
    whole = estimate(net, table, calibration=TRUE_LAYERS).total_us
    assert slots(zoo.MOBILENET_V2.widths(width_mult=0.5)) == pytest.approx(whole)
    assert whole != pytest.approx(estimate(net, table, calibration=plain).total_us)


def test_keys_measured_on_demand_keep_their_own_time() -> None:
    """A network's measured latency is brought to its own entries' time: the LUT's keys by
    the sampled factor, keys measured on demand (another session) by their own re-timing."""
    net = zoo.MOBILENET_V1.network(width_mult=0.25, resolution=32, classes=10)
    keys = list(dict.fromkeys(net.keys))
    on_demand = set(keys[::3])
    table = {k: 10.0 for k in keys if k not in on_demand}
    extra = {k: 20.0 for k in on_demand}
    drift = SessionDrift(FakeRunner(), [net], Tables(table, extra), n=5)
    drift.now = {k: 19.0 for k in on_demand}  # 5 % faster than when measured on demand
    entries = [table.get(k, extra.get(k)) for k in net.keys]
    lut = sum(e for k, e in zip(net.keys, entries) if k in table)
    expect = (1.2 * lut + 0.95 * (sum(entries) - lut)) / sum(entries)
    assert drift.network_factor(net, 1.2) == pytest.approx(expect)
    drift.tables = Tables({k: 10.0 for k in keys}, {})  # all in the LUT: its factor
    assert drift.network_factor(net, 1.2) == pytest.approx(1.2)


def test_calibration_of_another_setup_is_refused(calibrated, tmp_path: Path) -> None:
    store, version, cal = calibrated
    other = LutStore.open(tmp_path / "other.db", create=True)
    v = other.create_version("fake", "tflite-cpu", {"device": "other"})
    other.seal(v)
    with pytest.raises(SetupMismatch, match="same device and settings"):
        other.set_calibration(v, cal)
    with pytest.raises(SetupMismatch, match="another setup"):
        cb.calibrate(store, version, FakeRunner(device="other"), n=16, passes=1)


def test_a_version_without_calibration_says_so(tmp_path: Path) -> None:
    store, version = make_lut(tmp_path / "plain.db")
    said: list[str] = []
    net = zoo.MOBILENET_V1.network(width_mult=0.5, resolution=32, classes=10)
    est = estimate_network(store, version, net, log=said.append)
    assert est.calibration is None and est.total_us == est.raw_total_us
    assert len(said) == 1 and "no calibration" in said[0] and "netadapt calibrate" in said[0]


def test_report_scores_the_calibration_on_networks_it_never_saw(calibrated) -> None:
    store, version, _ = calibrated
    validate(store, version, FakeRunner(state=BUSY), n=20, passes=1, profile=False,
             drift_keys=20, repeats=1)
    report = build(store, version, n_boot=50)
    # measured on a busy machine, once per network: the headline says both
    v = report.metrics["verdict"]
    assert v["busy_networks"] == 20 and report.metrics["machine"][0]["busy"]
    said = " ".join(verdict_sentences(report))
    assert "warning: 20 of the networks were measured while the machine was busy" in said
    assert "repeatability not measured" in said
    # ... and so was the calibration the estimate comes from
    assert v["calibration_warning"].startswith("warning: this LUT's calibration was fitted")
    assert v["calibration_warning"] in said
    assert any(n.startswith("Machine while the calibration's networks were measured")
               for n in report.notes)
    preds = report.metrics["predictors"]
    assert {"calibrated", "calibrated_drift", "calibrated_anchored"} <= preds.keys()
    # the calibration's own networks, measured in the same session, re-level the others
    moved = report.metrics["anchors"]
    assert len(moved) == 1 and moved[0]["anchors"] >= anchors.MIN_ANCHORS
    assert "Re-levelled by the calibration's own networks measured in the same session" in said
    unseen = preds["calibrated"]["unseen"]
    assert 0 < unseen["n"] < preds["calibrated"]["in_space"]["n"]  # multipliers: fitted
    assert report.metrics["verdict"]["predictor"] == "calibrated"
    # FakeRunner's networks run 1.1 x their layers: the calibrated estimate gets that right
    assert unseen["count_within_5pct"] == unseen["n"]
    assert preds["naive"]["unseen"]["count_within_5pct"] < unseen["n"]


def test_an_unknown_missing_key_policy_is_named(tmp_path: Path) -> None:
    from bench.missing import resolve
    from lut_db.errors import LutError

    store, version = make_lut(tmp_path / "plain.db")
    with pytest.raises(LutError, match="unknown missing-key policy 'zero'; use one of error"):
        resolve(store, version, [], "zero")



def test_calibration_benchmark_states_limits_beside_repeatability() -> None:
    """The benchmark's scoring on fixed samples: each model's limits next to the repeats'
    own, and its noise-floor row is one repeat against the next."""
    from benchmarks import calibration_bench as bench

    samples = [cb.Sample(f"n{i}", [], 1000.0 * (i + 1), [1000.0 * (i + 1) * f for f in
                                                          (0.98, 1.0, 1.03)])
               for i in range(6)]
    preds = {"exact": lambda s: s.measured_us, "5 % high": lambda s: 1.05 * s.measured_us}
    out = bench.limits(preds, samples)
    rep = out["repeatability"]
    assert rep["n"] == 6 and rep["repeats"] == 3 and rep["upper_pct"] > 0
    assert out["models"]["exact"]["bias_pct"] == pytest.approx(0.0, abs=1e-9)
    assert out["models"]["5 % high"]["bias_pct"] == pytest.approx(5.0)
    assert out["models"]["exact"]["width_ratio"] == pytest.approx(0.0, abs=1e-9)
    floor = bench.noise_floor(samples)
    assert floor["n"] == 6 and floor["mean_signed_pct"] == pytest.approx(100 * (1 / 0.98 - 1))


def test_calibration_benchmark_per_class_candidate_recovers_a_known_model() -> None:
    """The benchmark's per-op-class correction: a noise-free gap of known factors is
    predicted exactly; a class never seen gets a factor between the fitted ones, a class
    too small to fit (adds) none."""
    from benchmarks import calibration_bench as bench

    rng = np.random.default_rng(3)
    entries = {f"n{i}": {"conv2d 1x1": rng.uniform(500, 5000),
                         "depthwise_conv2d 3x3": rng.uniform(100, 900), "add": 1.0}
               for i in range(40)}
    mb = {n: (rng.uniform(0.5, 15), rng.uniform(1, 30)) for n in entries}

    def gap(n: str) -> float:
        e, (w, a) = entries[n], mb[n]
        return 0.15 * e["conv2d 1x1"] + 0.25 * e["depthwise_conv2d 3x3"] + 20 * w + 3 * a

    samples = [cb.Sample(n, [], 5000.0 + gap(n)) for n in entries]
    predict = bench.fit_per_class(samples, lambda s: 5000.0, lambda s: entries[s.name],
                                  lambda s: mb[s.name])
    assert [predict(s) for s in samples] == pytest.approx([s.measured_us for s in samples])
    entries["3x3"], entries["adds"] = {"conv2d 3x3": 100.0}, {"add": 100.0}
    mb["3x3"] = mb["adds"] = (0.0, 0.0)
    assert 15 < predict(cb.Sample("3x3", [], 0.0)) - 5000 < 25
    assert predict(cb.Sample("adds", [], 0.0)) == pytest.approx(5000)


def test_calibration_benchmark_prints_the_candidates_side_by_side() -> None:
    from benchmarks import calibration_bench as bench

    models = {"plain sum": {"unseen": {"n": 20, "within_5": 4, "mean_signed_pct": -8.04},
                            "held_out": {"n": 8, "within_5": 7, "mean_signed_pct": 1.5}},
              "v4": {"unseen": {"n": 20, "within_5": 15, "mean_signed_pct": 0.3},
                     "held_out": {"n": 0}}}
    rows = bench.side_by_side(models)
    assert rows == [{"model": "plain sum", "unseen": "4/20, -8.0 %", "held_out": "7/8, +1.5 %"},
                    {"model": "v4", "unseen": "15/20, +0.3 %", "held_out": "-"}]
    lines = bench.table_text(rows).splitlines()
    assert lines[1].split() == ["model", "unseen", "held_out"]
    assert lines[3].split() == ["v4", "15/20,", "+0.3", "%", "-"]


def test_calibration_benchmark_replays_a_saved_run(tmp_path: Path) -> None:
    """A run's measurements saved beside its LUT are scored again offline, the same way:
    the replay's table equals the run's."""
    from benchmarks import calibration_bench as bench

    train, cal = profiled(12), replace(TRUE_LAYERS, cache_mb=1.5, evicted_mb=3.0)
    groups = {"unseen": profiled(6, seed=5), "held_out": profiled(4, seed=6)}
    for s in (*train, *groups["unseen"], *groups["held_out"]):
        s.repeats_us[:] = [s.measured_us * f for f in (0.99, 1.0, 1.02)]
    path = bench.save_samples(bench.samples_path(tmp_path / "host.db"), train, groups, cal,
                              {"l2": 2048})
    assert path.name == "host-calibration-bench.json"
    run: dict = {}
    bench.score_all(run, train, groups, cal, {"l2": 2048})
    again = bench.replay(path)
    assert again["table"] == run["table"] and again["limits"] == run["limits"]


class _DelegateProfiler(FakeRunner):
    """A phone's benchmark_model under the XNNPACK delegate: its op profile is one row for
    the whole delegated graph, not one per layer."""

    op_profiler = "benchmark_model --enable_op_profiling"

    def op_profile(self, model: bytes) -> list[tuple[str, float]] | None:
        return [("TfLiteXNNPackDelegate", 1234.0)]


def test_a_profile_of_one_delegate_op_falls_back_to_the_totals(tmp_path: Path) -> None:
    """A profile whose ops do not map one to one onto the layers is not used: calibrated
    through such a phone, every network is fitted on its total alone (the totals forms)."""
    store, version = make_lut(tmp_path / "phone.db")
    runner = _DelegateProfiler()
    nets = cb.calibration_set(Space.of(version.space), 8)
    assert cb.profile_layers(runner, nets) == {}
    cal = cb.calibrate(store, version, runner, n=16, passes=1)
    assert cal.model in (MODEL, V3) and not cal.kind_factor
    assert all(c["profiled"] == 0 for c in cal.candidates.values())


def test_the_files_bench_anchors_on_calibration_networks_its_lut_describes(calibrated) -> None:
    from benchmarks import files_bench as fb

    store, version, cal = calibrated
    table = store.table(version)
    nets = anchors.calibration_networks(store, version, n=4)
    assert 0 < len(nets) <= 4 and all(n.name in cal.networks for n in nets)
    assert all(k in table for n in nets for k in n.keys)  # no key measured on demand
    us = [sum(table[k] for k in n.keys) for n in nets]
    assert us == sorted(us)  # spread over their latency, smallest first
    # a file's row re-levelled by anchors that ran 10 % over their estimates
    timed = SimpleNamespace(latency_us=110.0, repeats_us=[110.0], pass_spread=0.0)
    est = SimpleNamespace(lut="x", raw_total_us=90.0, total_us=100.0)
    row = fb._row("f", est, timed, 1.0, [(10.0, 11.0), (100.0, 110.0), (1000.0, 1100.0)])
    assert row["error_pct"] == pytest.approx(-9.1) and row["anchored_error_pct"] == 0.0
    assert "anchored_error_pct" not in fb._row("f", est, timed, 1.0, [])


def test_a_drift_check_times_calibration_networks_whole(calibrated) -> None:
    """Layers alone as swept, whole networks 20 % slower than calibrated: stale, and the
    check says it is the networks that moved."""
    from analysis.drift import check

    store, version, _ = calibrated
    same = check(store, version, FakeRunner(), sample=6, seed=0, networks=4)
    assert same.networks == 4 and same.network_ratio == pytest.approx(1.0, abs=0.05)
    assert not same.stale
    slower = check(store, version, FakeRunner(in_network=1.1 * 1.2), sample=6, seed=0,
                   networks=4)
    assert slower.median_ratio == pytest.approx(1.0) and slower.network_ratio > 1.15
    assert slower.stale and slower.summary()["network_ratio"] == slower.network_ratio
    assert check(store, version, FakeRunner(), sample=6, seed=0, networks=0).networks == 0


def test_an_estimate_re_levelled_by_calibration_networks_timed_now(calibrated,
                                                                   monkeypatch) -> None:
    """`estimate --anchor`: whole networks run 20 % over their calibration now, and so does
    the re-levelled estimate; timing anchors on another setup is refused."""
    import contextlib

    import bench.devices
    from netadapt.network import Estimated, _anchored

    store, version, _ = calibrated
    pairs = anchors.time_now(store, version, FakeRunner(), n=4)
    assert len(pairs) == 4 and all(m / e == pytest.approx(1.0, abs=0.05) for e, m in pairs)
    with pytest.raises(SetupMismatch):
        anchors.time_now(store, version, FakeRunner(device="other"))
    monkeypatch.setattr(bench.devices, "open_runners", lambda *a, **k: contextlib.nullcontext(
        [FakeRunner(in_network=1.1 * 1.2)]))
    net = zoo.MOBILENET_V1.network(width_mult=0.5, resolution=32, classes=10)
    est = estimate_network(store, version, net)
    done = _anchored(Estimated(net, est), store, version, None)
    assert done.anchors == anchors.K and done.anchor_level == pytest.approx(1.2, abs=0.06)
    assert done.anchored_ms == pytest.approx(est.total_ms * done.anchor_level, rel=0.06)
    assert done.to_dict()["anchored_ms"] == done.anchored_ms
