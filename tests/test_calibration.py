"""The in-network model: fitted from whole networks, stored once with a version, used by
estimate, the adapter's fast path and the report."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from analysis import calibrate as cb
from analysis.report import build
from analysis.sampling import Space
from analysis.validate import validate
from bench import zoo
from bench.missing import estimate_network
from lut_db.calibration import Calibration, CalibrationError, features
from lut_db.errors import SetupMismatch
from lut_db.estimate import SlotEstimator, estimate
from lut_db.store import LutStore
from tests.fakes import SPACE, FakeRunner, make_lut

TRUE = {"l2": 1.0, "fits": 30.0, "act": 0.5, "layer": 1.5, "overhead": 5.0}


def synthetic(n: int, seed: int = 0) -> list[cb.Sample]:
    """Networks whose measured latency follows the model exactly (entries made up)."""
    rng = random.Random(seed)
    space = Space.of(SPACE)
    out = []
    for net in cb.calibration_set(space, n, seed):
        layers = [(node.spec, 5.0 + node.spec.macs / 2e4 * rng.uniform(0.8, 1.2))
                  for node in net.nodes]
        coef = (TRUE["fits"], TRUE["act"], TRUE["layer"])
        inside = sum(e - TRUE["overhead"] + sum(a * x for a, x in
                                                zip(coef, features(spec, TRUE["l2"])))
                     for spec, e in layers)
        out.append(cb.Sample(net.name, layers, inside + TRUE["overhead"]))
    return out


def test_fit_recovers_the_physics_and_its_cache_size() -> None:
    cal = cb.fit(synthetic(30), TRUE["overhead"], {"device": "fake"})
    assert cal.l2_mb == TRUE["l2"]
    assert cal.coefficients == pytest.approx(
        (TRUE["fits"], TRUE["act"], TRUE["layer"]), rel=1e-3, abs=1e-3)
    assert cal.cv["n"] == 30 and cal.cv["max_pct"] < 0.1 and cal.cv["within_5"] == 30
    assert Calibration.from_json(cal.to_json()) == cal


def test_too_few_networks_are_refused() -> None:
    with pytest.raises(CalibrationError, match="at least 8 networks"):
        cb.fit(synthetic(30)[:5], 5.0, {})


def test_an_unknown_model_is_refused() -> None:
    cal = cb.fit(synthetic(12), 5.0, {})
    with pytest.raises(CalibrationError, match="another netadapt-farm"):
        Calibration.from_json(cal.to_json().replace("cache-l2-v2", "cache-l3-v9"))


@pytest.fixture
def calibrated(tmp_path: Path):
    """A FakeRunner LUT calibrated by the FakeRunner (whole networks 1.1 x their layers)."""
    store, version = make_lut(tmp_path / "fake.db")
    cal = cb.calibrate(store, version, FakeRunner(), n=16, passes=1)
    return store, version, cal


def test_calibrate_stores_once_and_estimates_use_it(calibrated) -> None:
    store, version, cal = calibrated
    assert store.calibration(version) == cal and len(cal.networks) == 16
    with pytest.raises(CalibrationError, match="calibrated already"):
        store.set_calibration(version.id, cal)
    with pytest.raises(sqlite3.IntegrityError, match="never changes"):
        store.db.execute("DELETE FROM calibrations")
    net = zoo.MOBILENET_V1.network(width_mult=0.5, resolution=32, classes=10)
    est = estimate_network(store, version, net)
    raw = estimate_network(store, version, net, raw=True)
    assert est.calibration == cal and raw.calibration is None
    assert est.raw_total_us == raw.total_us != est.total_us
    assert est.total_us == pytest.approx(
        cal.overhead_us + sum(x.in_network_us for x in est.layers))
    # the adapter's fast path gives the same number from cached look-ups
    table = store.table(version.id)
    slots = SlotEstimator(zoo.MOBILENET_V1.slot_layers(32, 10), table, calibration=cal)
    widths = zoo.MOBILENET_V1.widths(width_mult=0.5)
    assert slots(widths) == pytest.approx(estimate(net, table, calibration=cal).total_us)


def test_calibration_of_another_setup_is_refused(calibrated, tmp_path: Path) -> None:
    store, version, cal = calibrated
    other = LutStore.open(tmp_path / "other.db", create=True)
    v = other.create_version("fake", "tflite-cpu", {"device": "other"})
    other.seal(v.id)
    with pytest.raises(SetupMismatch, match="same device and settings"):
        other.set_calibration(v.id, cal)
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
    validate(store, version, FakeRunner(), n=20, passes=1, profile=False, drift_keys=20)
    report = build(store, version, n_boot=50)
    preds = report.metrics["predictors"]
    assert {"calibrated", "calibrated_drift"} <= preds.keys()
    unseen = preds["calibrated"]["unseen"]
    assert 0 < unseen["n"] < preds["calibrated"]["in_space"]["n"]  # multipliers: fitted
    assert report.metrics["verdict"]["predictor"] == "calibrated"
    # FakeRunner's networks run 1.1 x their layers: the calibrated estimate gets that right
    assert unseen["count_within_5pct"] == unseen["n"]
    assert preds["naive"]["unseen"]["count_within_5pct"] < unseen["n"]


def test_an_unknown_missing_key_policy_is_named(tmp_path: Path) -> None:
    from bench.missing import resolve
    from lut_db.store import LutError

    store, version = make_lut(tmp_path / "plain.db")
    with pytest.raises(LutError, match="unknown missing-key policy 'zero'; use one of error"):
        resolve(store, version, [], "zero")

