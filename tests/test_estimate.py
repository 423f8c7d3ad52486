"""lut_db.estimate: a network's estimate is the sum of its layers' entries; missing keys
are an error naming them, or interpolated over channel counts; SlotEstimator agrees."""

from __future__ import annotations

import itertools
import random

import pytest

from bench.zoo import MOBILENET_V1, MOBILENET_V2, Family, shape_space, slot_choices
from lut_db.errors import LutError
from lut_db.estimate import MissingKeys, SlotEstimator, estimate, interpolate
from lut_db.spec import LayerSpec

RES, GRID, CLASSES = 64, 32, 10
FAMS = [MOBILENET_V1, MOBILENET_V2]


def linear_us(spec: LayerSpec) -> float:
    """A synthetic device: latency linear in the channel counts within each layer shape."""
    base = 3.0 + 0.01 * spec.h * spec.w + 0.5 * spec.kernel[0] * spec.kernel[1]
    return base + 0.07 * spec.cin * spec.h * spec.w / 64 + 0.05 * spec.cout * spec.h / 8


def table_for(fam: Family, fn=linear_us) -> dict[str, float]:
    return {s.key: fn(s) for s in shape_space(fam, RES, GRID, CLASSES)}


@pytest.fixture(scope="module")
def tables() -> dict[str, dict[str, float]]:
    return {f.name: table_for(f) for f in FAMS}


# -- the sum --------------------------------------------------------------------------------


@pytest.mark.parametrize("fam", FAMS, ids=lambda f: f.name)
def test_estimate_is_the_sum_of_the_layers_entries(fam: Family, tables) -> None:
    table = tables[fam.name]
    net = fam.network(width_mult=1.0, resolution=RES, classes=CLASSES)
    est = estimate(net, table)
    assert len(net.keys) > len(set(net.keys))  # repeated layers count once per node
    assert est.total_us == pytest.approx(sum(table[k] for k in net.keys), rel=1e-12)
    assert est.total_ms == pytest.approx(est.total_us / 1000)
    assert [layer.node for layer in est.layers] == [n.name for n in net.nodes]
    assert all(layer.source == "lut" for layer in est.layers) and est.interpolated == []
    assert sum(layer.macs for layer in est.layers) == net.macs
    d = est.to_dict()
    assert d["network"] == net.name and d["total_us"] == est.total_us and d["interpolated"] == 0
    assert len(d["layers"]) == len(net.nodes)


def test_missing_keys_name_the_keys_and_the_command(tables) -> None:
    table = dict(tables["mobilenet_v1"])
    net = MOBILENET_V1.network(width_mult=1.0, resolution=RES, classes=CLASSES)
    gone = [net.node("pw3").spec.key, net.node("fc").spec.key]
    for k in gone:
        del table[k]
    with pytest.raises(MissingKeys) as e:
        estimate(net, table, lut="luts/host.db@2")
    assert e.value.keys == gone
    msg = str(e.value)
    assert "luts/host.db@2 has no entry for 2 layer(s)" in msg
    assert all(k in msg for k in gone)
    assert "netadapt lut" in msg and "--missing interpolate" in msg
    assert isinstance(e.value, LutError)  # the CLI shows it as one message


def test_many_missing_keys_are_summarised() -> None:
    net = MOBILENET_V1.network(width_mult=1.0, resolution=RES, classes=CLASSES)
    with pytest.raises(MissingKeys) as e:
        estimate(net, {})
    assert len(e.value.keys) == len(set(net.keys))
    assert f"... and {len(set(net.keys)) - 10} more" in str(e.value)


def test_unknown_policy_is_refused(tables) -> None:
    net = MOBILENET_V1.network(resolution=RES, classes=CLASSES)
    with pytest.raises(LutError, match="unknown missing-key policy 'zero'"):
        estimate(net, tables["mobilenet_v1"], missing="zero")


# -- interpolation --------------------------------------------------------------------------


def off_grid(fam: Family) -> tuple[dict, dict, dict]:
    """(lower on-grid widths, off-grid widths between, upper on-grid widths)."""
    lo, mid, hi = {}, {}, {}
    for slot, c in slot_choices(fam, GRID).items():
        gaps = [(a, b) for a, b in itertools.pairwise(c) if b - a >= 2]
        a, b = gaps[len(gaps) // 2] if gaps else (c[-1], c[-1])
        lo[slot], hi[slot] = a, b
        mid[slot] = (a + b) // 2 if gaps else a
    return lo, mid, hi


@pytest.mark.parametrize("fam", FAMS, ids=lambda f: f.name)
def test_interpolation_between_channel_counts(fam: Family, tables) -> None:
    table = tables[fam.name]
    lo, mid, hi = off_grid(fam)
    net = fam.network(mid, resolution=RES, classes=CLASSES)
    with pytest.raises(MissingKeys):
        estimate(net, table)
    est = estimate(net, table, missing="interpolate")
    assert est.interpolated  # it had to interpolate
    lo_us = estimate(fam.network(lo, resolution=RES, classes=CLASSES), table).total_us
    hi_us = estimate(fam.network(hi, resolution=RES, classes=CLASSES), table).total_us
    assert lo_us < est.total_us < hi_us
    # the table is linear in channels, so interpolation recovers the true values
    for layer, spec in zip(est.layers, net.specs):
        assert layer.latency_us == pytest.approx(linear_us(spec), rel=1e-6), layer.node
    assert est.total_us == pytest.approx(sum(linear_us(s) for s in net.specs), rel=1e-6)


def test_interpolation_of_one_free_channel_count() -> None:
    """First conv (cin fixed at 3) and classifier (cout fixed): 1-D along the free count."""
    first = {LayerSpec("conv2d", 32, 32, 3, c, (3, 3), (2, 2)).key: 10.0 + c for c in (8, 32)}
    fc = {LayerSpec("fully_connected", 1, 1, c, 10).key: 1.0 + 0.5 * c for c in (64, 128)}
    want = {LayerSpec("conv2d", 32, 32, 3, 20, (3, 3), (2, 2)).key: 30.0,
            LayerSpec("fully_connected", 1, 1, 96, 10).key: 49.0}
    assert interpolate(want, {**first, **fc}) == pytest.approx(want)


def test_interpolation_with_collinear_points() -> None:
    """Measured (cin, cout) on one line (cin == cout): no 2-D triangulation exists, so the
    nearest point scaled by MACs stands in (instead of a Qhull error)."""
    table = {LayerSpec("conv2d", 8, 8, c, c).key: float(c) for c in (16, 32, 48)}
    key = LayerSpec("conv2d", 8, 8, 24, 24).key
    nearest = [pytest.approx(c * 24 * 24 / (c * c)) for c in (16, 32)]  # a tie: either
    assert interpolate([key], table)[key] in nearest


def test_interpolation_outside_the_measured_range_scales_by_macs() -> None:
    table = {LayerSpec("depthwise_conv2d", 8, 8, c, kernel=(3, 3)).key: 2.0 * c for c in (8, 16)}
    key = LayerSpec("depthwise_conv2d", 8, 8, 64, kernel=(3, 3)).key
    assert interpolate([key], table)[key] == pytest.approx(32.0 * 64 / 16)


def test_interpolation_needs_a_layer_of_the_same_shape() -> None:
    table = {LayerSpec("conv2d", 8, 8, 8, 8).key: 1.0}
    other = LayerSpec("conv2d", 8, 8, 8, 8, (3, 3)).key  # another kernel: another shape
    with pytest.raises(MissingKeys) as e:
        interpolate([other], table)
    assert other in str(e.value) and "same shape" in str(e.value)


# -- the fast path --------------------------------------------------------------------------


@pytest.mark.parametrize("fam", FAMS, ids=lambda f: f.name)
def test_slot_estimator_equals_estimate(fam: Family, tables) -> None:
    table = tables[fam.name]
    fast = SlotEstimator(fam.slot_layers(RES, CLASSES), table)
    choices = slot_choices(fam, GRID)
    rnd = random.Random(3)
    for _ in range(50):
        width = {s: rnd.choice(c) for s, c in choices.items()}
        want = estimate(fam.network(width, resolution=RES, classes=CLASSES), table).total_us
        assert fast(width) == pytest.approx(want, rel=1e-12)
        assert fast(width) == pytest.approx(want, rel=1e-12)  # from the cache
        assert sum(fast.layer_costs(width)) == pytest.approx(want, rel=1e-12)
    mid = off_grid(fam)[1]
    with pytest.raises(MissingKeys):
        fast(mid)
    interp = SlotEstimator(fam.slot_layers(RES, CLASSES), table, missing="interpolate")
    net = fam.network(mid, resolution=RES, classes=CLASSES)
    assert interp(mid) == pytest.approx(estimate(net, table, "interpolate").total_us, rel=1e-9)
