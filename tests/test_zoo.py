"""bench.zoo: MobileNetV1/V2 as Network generators, and the shape spaces to sweep."""

from __future__ import annotations

import math
import random

import pytest

from bench.zoo import (
    FAMILIES,
    MOBILENET_V1,
    MOBILENET_V2,
    MOBILENET_V3_SMALL,
    Family,
    channel_choices,
    family,
    make_divisible,
    shape_space,
    slot_choices,
    spaces,
)
from lut_db.spec import SpecError

FAMS = [MOBILENET_V1, MOBILENET_V2, MOBILENET_V3_SMALL]


# -- the standard models --------------------------------------------------------------------


def test_mobilenet_v1_macs_and_params() -> None:
    net = MOBILENET_V1.network()
    assert net.macs == pytest.approx(569e6, rel=0.01)  # the paper: 569 M mult-adds
    assert net.params == pytest.approx(4.2e6, rel=0.02)  # 4.2 M parameters
    assert len(net.nodes) == 1 + 2 * 13 + 2
    assert net.meta["widths"] == list(MOBILENET_V1.base)


def test_mobilenet_v2_macs_and_params() -> None:
    net = MOBILENET_V2.network()
    assert net.macs == pytest.approx(300e6, rel=0.01)  # the paper: 300 M
    assert net.params == pytest.approx(3.47e6, rel=0.01)  # 3.4-3.5 M
    assert sum(n.spec.op == "add" for n in net.nodes) == 10  # residual blocks
    assert sum(n.spec.op == "depthwise_conv2d" for n in net.nodes) == 17


def test_mobilenet_v3_small_macs_params_and_blocks() -> None:
    net = MOBILENET_V3_SMALL.network()
    weighted = sum(s.macs for s in net.specs
                   if s.op in ("conv2d", "depthwise_conv2d", "fully_connected"))
    assert weighted == pytest.approx(56e6, rel=0.02)  # the paper: 56 M multiply-adds
    assert net.params == pytest.approx(2.54e6, rel=0.01)  # torchvision: 2.54 M
    ops = [n.spec.op for n in net.nodes]
    assert ops.count("channel_mul") == ops.count("mul_scalar") == 9  # squeeze-excite blocks
    assert ops.count("add") == 6 and ops.count("depthwise_conv2d") == 11
    se = net.node("b4_se_mul")  # the block's features times its 1x1xC gate
    gate = net.node(se.inputs[1])  # hard_sigmoid as converted: conv with ReLU6, then x 1/6
    assert gate.spec.op == "mul_scalar" and net.node(gate.inputs[0]).spec.act == "relu6"
    assert net.node(se.inputs[0]).spec.output_shape == se.spec.output_shape == (14, 14, 96)
    assert net.node("b4_se_reduce").spec.cout == 24  # a quarter of 96
    assert net.node("b2_expand").spec.act == "relu" and net.node("b4_dw").spec.act == "none"
    assert net.node("b4_dw_hs").spec.op == "hard_swish"
    assert MOBILENET_V3_SMALL.network(width_mult=0.75).params == pytest.approx(2.04e6, rel=0.02)


@pytest.mark.parametrize("fam, mult, macs, params", [
    # Published numbers (MobileNetV1 paper Table 6; MobileNetV2 reference checkpoints).
    (MOBILENET_V1, 0.75, 325e6, 2.59e6),
    (MOBILENET_V1, 0.5, 149e6, 1.33e6),
    (MOBILENET_V1, 0.25, 41e6, 0.47e6),
    (MOBILENET_V2, 1.4, 582e6, 6.06e6),
    (MOBILENET_V2, 0.75, 209e6, 2.61e6),
    (MOBILENET_V2, 0.5, 97e6, 1.95e6),
    (MOBILENET_V2, 0.35, 59e6, 1.66e6),
])
def test_width_multipliers(fam: Family, mult: float, macs: float, params: float) -> None:
    net = fam.network(width_mult=mult)
    assert net.macs == pytest.approx(macs, rel=0.015)
    assert net.params == pytest.approx(params, rel=0.02)
    assert net.name == f"{fam.name}_x{mult:g}_224"


def test_multiplier_widths_are_divisible_by_8() -> None:
    for fam in FAMS:
        for m in (0.25, 0.35, 0.5, 0.75, 1.0, 1.4):
            assert all(w % 8 == 0 for w in fam.multiplier(m))
    assert MOBILENET_V1.multiplier(1.0) == MOBILENET_V1.base
    assert MOBILENET_V2.multiplier(1.0) == MOBILENET_V2.base
    assert MOBILENET_V2.widths(width_mult=0.5)["conv_last"] == 1280  # V2 keeps the last conv


@pytest.mark.parametrize("v, out", [(32 * 0.25, 8), (3, 8), (100, 104), (92, 96), (91, 88),
                                    (24 * 0.35, 8), (1280 * 1.4, 1792)])
def test_make_divisible(v: float, out: int) -> None:
    assert make_divisible(v) == out
    assert out >= 0.9 * v


@pytest.mark.parametrize("fam", FAMS, ids=lambda f: f.name)
@pytest.mark.parametrize("resolution", [32, 64, 96, 128, 160, 192, 224, 225])
def test_any_resolution(fam: Family, resolution: int) -> None:
    net = fam.network(resolution=resolution, classes=10)
    assert net.input_shape == (resolution, resolution, 3)
    pool = net.node("pool").spec
    side = math.ceil(resolution / 32)  # five stride-2 stages
    assert pool.input_shape[:2] == (side, side)
    assert net.node("fc").spec.output_shape == (1, 1, 10)
    assert net.meta["resolution"] == resolution and net.meta["classes"] == 10


@pytest.mark.parametrize("fam", FAMS, ids=lambda f: f.name)
def test_any_width_config(fam: Family) -> None:
    rnd = random.Random(1)
    for _ in range(20):
        widths = [rnd.randint(1, 2 * b) for b in fam.base]
        net = fam.network(widths, resolution=64, classes=7)  # shape-checked on construction
        assert net.meta["widths"] == widths
        for slot, w in zip(fam.slots, widths):
            if slot in [n.name for n in net.nodes]:
                assert net.node(slot).spec.cout == w


def test_partial_width_mapping_keeps_the_other_slots() -> None:
    w = MOBILENET_V1.widths({"pw3": 40})
    assert w["pw3"] == 40 and w["pw4"] == 256
    net = MOBILENET_V1.network({"pw3": 40}, resolution=32)
    assert net.node("dw4").spec.cin == 40 and net.node("pw4").spec.cin == 40


def test_v2_residual_slots_tie_block_input_and_output() -> None:
    net = MOBILENET_V2.network({"s3": 40}, resolution=64)
    add = net.node("b5_add")  # stage 3's second block
    assert add.spec.cin == 40
    assert net.node(add.inputs[0]).spec.output_shape == net.node(add.inputs[1]).spec.output_shape


@pytest.mark.parametrize("call, words", [
    (lambda: MOBILENET_V1.network([32, 64]), ["mobilenet_v1 takes 14 widths", "got 2"]),
    (lambda: MOBILENET_V1.network({"pw99": 8}), ["unknown slot", "pw99"]),
    (lambda: MOBILENET_V1.network({"pw2": 0}), ["pw2", "positive"]),
    (lambda: MOBILENET_V2.network({"e2": -8}), ["e2", "positive"]),
    (lambda: family("resnet50"), ["unknown model family", "mobilenet_v1", "mobilenet_v2"]),
    (lambda: MOBILENET_V1.network(resolution=0), ["h must be a positive integer"]),
    (lambda: MOBILENET_V1.network(width_mult=0), ["width multiplier must be positive", "0"]),
    (lambda: MOBILENET_V2.network(width_mult=-1), ["width multiplier must be positive", "-1"]),
    (lambda: MOBILENET_V3_SMALL.network(width_mult=float("nan")), ["must be positive", "nan"]),
    (lambda: MOBILENET_V1.network(width_mult=float("inf")), ["must be a finite number", "inf"]),
])
def test_bad_width_configs(call, words: list[str]) -> None:
    with pytest.raises(SpecError) as e:
        call()
    for word in words:
        assert word in str(e.value)


def test_family_lookup() -> None:
    assert family("mobilenet_v2") is MOBILENET_V2
    assert set(FAMILIES) == {"mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small"}


def test_slot_layers_make_the_networks_specs() -> None:
    """What SlotEstimator sums per position is what the network holds."""
    rnd = random.Random(2)
    for fam in FAMS:
        layers = fam.slot_layers(64, 10)
        for _ in range(5):
            width = {s: rnd.randint(1, b) for s, b in zip(fam.slots, fam.base)}
            net = fam.network(width, resolution=64, classes=10)
            assert [make(width) for _, make in layers] == net.specs
            for (slots, make), spec in zip(layers, net.specs):
                # the spec depends on the listed slots only
                other = {s: (w + 8 if s not in slots else w) for s, w in width.items()}
                assert make(other) == spec


# -- shape spaces ---------------------------------------------------------------------------


def test_channel_choices() -> None:
    assert channel_choices(64, 32) == [32, 64]
    assert channel_choices(72, 32, (8, 200, 0)) == [8, 32, 64, 72]
    assert channel_choices(16, 32) == [16]


@pytest.mark.parametrize("fam", FAMS, ids=lambda f: f.name)
@pytest.mark.parametrize("resolution, grid", [(32, 64), (64, 32)])
def test_shape_space_contains_every_grid_network(fam: Family, resolution: int,
                                                 grid: int) -> None:
    space = shape_space(fam, resolution, grid, classes=10)
    keys = {s.key for s in space}
    choices = slot_choices(fam, grid)
    rnd = random.Random(resolution * grid)
    for _ in range(60):
        width = {s: rnd.choice(c) for s, c in choices.items()}
        net = fam.network(width, resolution=resolution, classes=10)
        assert set(net.keys) <= keys, set(net.keys) - keys
    for m in (0.25, 0.5, 0.75, 1.0):  # the multiplier baselines are in the space too
        net = fam.network(width_mult=m, resolution=resolution, classes=10)
        assert set(net.keys) <= keys
    # ... and the extreme corners of the grid
    for pick in (min, max):
        net = fam.network({s: pick(c) for s, c in choices.items()}, resolution=resolution,
                          classes=10)
        assert set(net.keys) <= keys


@pytest.mark.parametrize("fam", FAMS, ids=lambda f: f.name)
def test_shape_space_is_deduplicated_and_holds_only_reachable_layers(fam: Family) -> None:
    space = shape_space(fam, 32, 64, classes=10)
    assert len({s.key for s in space}) == len(space)  # one spec per key
    # every spec comes from some grid network: the template that makes it
    choices = slot_choices(fam, 64)
    reachable = set()
    for t in fam.layout(32, 10):
        for cin in (choices[t.cin] if isinstance(t.cin, str) else [t.cin]):
            for cout in (choices[t.cout] if isinstance(t.cout, str) else [None]):
                w = {**({t.cin: cin} if isinstance(t.cin, str) else {}),
                     **({t.cout: cout} if isinstance(t.cout, str) else {})}
                reachable.add(t.spec(w).key)
    assert {s.key for s in space} == reachable


def test_spaces_union_is_sorted_and_unique() -> None:
    both = spaces(["mobilenet_v1", "mobilenet_v2"], 32, 64, 10)
    keys = [s.key for s in both]
    assert keys == sorted(set(keys))
    v1 = shape_space(MOBILENET_V1, 32, 64, 10)
    v2 = shape_space(MOBILENET_V2, 32, 64, 10)
    assert set(both) == v1 | v2
    assert len(both) < len(v1) + len(v2)  # shared layers (e.g. the first conv) counted once
    with pytest.raises(SpecError, match="unknown model family"):
        spaces(["mobilenet_v3"], 32, 64, 10)


def test_finer_grids_and_other_resolutions_give_other_spaces() -> None:
    coarse = shape_space(MOBILENET_V1, 32, 64, 10)
    fine = shape_space(MOBILENET_V1, 32, 32, 10)
    assert coarse < fine
    assert shape_space(MOBILENET_V1, 64, 64, 10) != coarse
