"""analysis.anchors: estimates re-levelled by the calibration's own networks measured now."""

from __future__ import annotations

import pytest

from analysis import anchors


def test_each_network_follows_the_anchors_nearest_in_latency() -> None:
    # small networks ran as calibrated, big ones 10 % slower (a device whose big networks
    # drifted and small ones did not)
    small = [(e, e) for e in (20.0, 25.0, 30.0)]
    big = [(e, 1.1 * e) for e in (2000.0, 2500.0, 3000.0)]
    got = anchors.anchored([22.0, 2800.0], small + big, k=3)
    assert got == pytest.approx([22.0, 3080.0])
    assert anchors.level(small + big) == pytest.approx(1.05)


def test_too_few_anchors_leave_no_anchored_estimate() -> None:
    two = [(100.0, 110.0), (200.0, 220.0)]
    assert anchors.anchored([150.0], two) is None and anchors.level(two) is None
    # a broken anchor (no estimate) does not count
    assert anchors.anchored([150.0], [*two, (0.0, 5.0)]) is None


def test_every_anchor_counts_when_k_exceeds_them() -> None:
    pairs = [(100.0, 90.0), (200.0, 220.0), (400.0, 440.0)]
    assert anchors.anchored([1e6], pairs, k=8) == pytest.approx([1.1e6])  # median of 0.9, 1.1, 1.1
