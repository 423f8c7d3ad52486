"""benchmarks/int8_fit_check.py: both rules refitted offline on a LUT's stored validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis import calibrate as cb
from analysis.features import Tables
from analysis.validate import validate
from bench import zoo
from benchmarks import int8_fit_check as fc
from lut_db.calibration import MODEL
from tests.fakes import FakeRunner, make_lut


def test_a_measurement_is_brought_to_the_time_of_its_entries() -> None:
    """The LUT's keys by the session's factor, keys measured on demand by theirs."""
    net = zoo.MOBILENET_V1.network(width_mult=0.25, resolution=32, classes=10)
    keys = list(dict.fromkeys(net.keys))
    on_demand = set(keys[:4])
    tables = Tables({k: 10.0 for k in keys if k not in on_demand}, {k: 10.0 for k in on_demand})
    entries = 10.0 * len(net.keys)
    extra = 10.0 * sum(k in on_demand for k in net.keys)
    s = fc.sample(net, 1000.0, tables, {"lut": 1.1, "extra": 1.5})
    assert s.measured_us == pytest.approx(1000.0 * entries / (1.1 * (entries - extra)
                                                             + 1.5 * extra))
    assert fc.sample(net, 1000.0, tables, 1.25).measured_us == pytest.approx(800.0)
    assert fc.sample(net, 1000.0, Tables({}, {}), 1.0) is None  # a key the LUT lacks


def test_both_rules_are_refitted_and_scored_on_each_set(tmp_path: Path) -> None:
    """A fake LUT whose networks run 1.1 x their layers, validated: both rules are fitted
    out of fold on its own families (the window pinned to the L2 the device reports) and
    scored on the held-out ones."""
    runner = FakeRunner(fp={"device": "fake", "runs": 3, "cache_kb": {"l2": 512}})
    store, version = make_lut(tmp_path / "fake.db", runner)
    cb.calibrate(store, version, runner, n=8, passes=1)
    validate(store, version, runner, n=24, passes=1, profile=False, drift_keys=20, repeats=1)
    store.close()
    out = fc.check(tmp_path / "fake.db")
    assert out["stored_model"] == MODEL and out["dtype"] == "float32"
    assert set(out["sets"]) == {fc.OLD, fc.NEW, fc.STORED}
    n = {name: {g: s["n"] for g, s in sets.items()} for name, sets in out["sets"].items()}
    assert n[fc.OLD] == n[fc.NEW] and n[fc.OLD]["unseen"] >= 2 * cb.MIN_NETWORKS
    assert n[fc.OLD]["held_out"] > 0
    assert out["sets"][fc.NEW]["unseen"]["mape_pct"] < 5
    assert "weights and activations" in out["fitted_on_all"][fc.NEW]
    assert "within ±5 %" in fc.table([out])
