"""analysis.drift: a sealed version re-measured now, its median ratio and its outliers."""

from __future__ import annotations

import pytest

from analysis import drift
from bench import timing
from bench.runners.base import Failure, Timing
from lut_db.errors import SetupMismatch
from tests.fakes import FakeRunner, make_lut


class Slower(FakeRunner):
    """FakeRunner at ``factor`` x the speed it had, one key way off, one failing."""

    def __init__(self, factor: float, odd: str = "", broken: str = ""):
        super().__init__()
        self.factor, self.odd, self.broken = factor, odd, broken

    def measure(self, batch):
        out = []
        for item, t in zip(batch, super().measure(batch)):
            if item.key == self.broken:
                out.append(Failure("crashed"))
                continue
            f = self.factor * (3.0 if item.key == self.odd else 1.0)
            out.append(Timing.from_samples([s * f for s in t.samples_us]))
        return out


@pytest.fixture(scope="module")
def lut(tmp_path_factory):
    return make_lut(tmp_path_factory.mktemp("drift") / "fake.db")


def test_fresh_lut_is_not_stale(lut):
    store, version = lut
    d = drift.check(store, version, FakeRunner(), sample=30, seed=0)
    assert d.median_ratio == pytest.approx(1.0) and not d.stale and d.outliers == []
    s = d.summary()
    assert s["keys"] == 30 and s["within_5pct"] == 1.0 and s["seed"] == 0


def test_a_slower_device_and_an_outlier(lut):
    store, version = lut
    keys = drift.sample_keys(store.table(version), 30, seed=5)
    d = drift.check(store, version, Slower(1.2, odd=keys[3], broken=keys[7]), 30, seed=5)
    assert d.median_ratio == pytest.approx(1.2) and d.stale
    assert d.outliers == [keys[3]] and d.failed == [keys[7]]
    assert d.summary()["outliers"][0]["ratio"] == pytest.approx(3.6)


def test_refuses_another_setup_and_empty_samples(lut):
    store, version = lut
    with pytest.raises(SetupMismatch, match="another setup"):
        drift.check(store, version, FakeRunner(device="other"))
    with pytest.raises(drift.DriftError, match="at least one key"):
        drift.check(store, version, FakeRunner(), sample=0)


def test_sum_ratio():
    assert timing.sum_ratio({"a": 1.0, "b": 3.0}, {"a": 2.0, "b": 6.0, "c": 9.0}) == 2.0
    assert timing.sum_ratio({}, {}) == 1.0
