"""The adapter as a LUT consumer: budgets, schedule, proposal search, LUT checks.

``real_lut`` (a real LUT measured on this machine in ~2 s: MobileNetV1 at 32 px, grid 64,
10 classes) is shared with the other adapter tests.
"""

from __future__ import annotations

import time

import pytest

from adapter.config import Budget
from adapter.errors import AdaptError
from adapter.schedule import Schedule
from adapter.search_space import SearchSpace, lut_grid, missing_keys
from bench import zoo
from lut_db.estimate import MissingKeys, estimate
from tests.fakes import ADAPT_SPACE as SPACE
from tests.fakes import CLASSES, GRID, RES


def space_on(table: dict, family: str = "mobilenet_v1", grid: int = GRID) -> SearchSpace:
    return SearchSpace(family, RES, CLASSES, table, grid)


def macs_table(family: str, grid: int) -> dict[str, float]:
    return {s.key: s.macs / 1000 + 1.0
            for s in zoo.shape_space(zoo.family(family), RES, grid, CLASSES)}


# -- budgets and schedule ------------------------------------------------------------------------


@pytest.mark.parametrize("resource,text,want", [
    ("latency_ms", "0.5", Budget("latency_ms", 0.5, True)),
    ("latency_ms", "3.2ms", Budget("latency_ms", 3.2, False)),
    ("macs", "5M", Budget("macs", 5e6, False)),
    ("params", "0.25", Budget("params", 0.25, True)),
    ("params", "120k", Budget("params", 120e3, False)),
])
def test_budget_parse(resource: str, text: str, want: Budget) -> None:
    assert Budget.parse(resource, text) == want


@pytest.mark.parametrize("text,message", [("2", "bare number is a ratio"), ("-1", "positive"),
                                          ("fast", "not understood"),
                                          ("nanms", "'nan' is not a finite number"),
                                          ("infms", "'inf' is not a finite number")])
def test_budget_parse_errors(text: str, message: str) -> None:
    with pytest.raises(AdaptError, match=message):
        Budget.parse("latency_ms", text)


def test_run_names_hold_no_spaces() -> None:
    from netadapt.adaptation import run_name

    assert run_name("mobilenet_v1", "luts/host.db@2", "3.2 ms", 0) == "mobilenet_v1-host-3p2ms-s0"
    assert run_name("mobilenet_v1", "luts/host.db", "0.5", 1, "int8") == (
        "mobilenet_v1-host-0p5-s1-int8")


def test_schedule_targets_decay_and_stop_at_the_budget() -> None:
    s = Schedule({"latency_ms": 5.0, "macs": 100.0}, {"latency_ms": 10.0, "macs": 200.0}, 0.1, 0.5)
    cur = {"latency_ms": 10.0, "macs": 90.0}
    assert s.targets(cur, 1) == {"latency_ms": 9.0, "macs": 100.0}  # macs already met: stay under
    assert s.targets(cur, 3) == {"latency_ms": pytest.approx(10 - 1.0 * 0.25), "macs": 100.0}
    assert s.targets(cur, 1, relax=1) == {"latency_ms": 9.5, "macs": 100.0}
    assert s.targets({"latency_ms": 5.5, "macs": 90.0}, 1)["latency_ms"] == 5.0  # floored
    assert not s.met(cur) and s.met({"latency_ms": 5.0, "macs": 100.0})


def test_schedule_refuses_unreachable_budgets() -> None:
    s = Schedule({"latency_ms": 1.0}, {"latency_ms": 10.0}, 0.05, 0.9)
    with pytest.raises(AdaptError, match=r"smallest network .* is 2\.000 ms \(0\.20 of the "
                       r"initial network\); raise the budget"):
        s.check({"latency_ms": 2.0})
    with pytest.raises(AdaptError, match="schedule can never reach"):
        s.check({"latency_ms": 0.5})  # 0.05 / (1 - 0.9) = 0.5 of the initial < 0.9 needed


# -- the proposal search -------------------------------------------------------------------------


@pytest.mark.parametrize("family,grid", [("mobilenet_v1", 32), ("mobilenet_v2", 32)])
def test_each_proposal_is_the_largest_width_meeting_the_target(family: str, grid: int) -> None:
    space = space_on(macs_table(family, grid), family, grid)
    widths = dict(zip(space.fam.slots, space.fam.base))
    current = space.resource("latency_ms", widths)
    target = current * 0.97
    props = {p.group: p for p in space.propose(widths, {"latency_ms": target})}
    assert props
    for group in space.groups:
        cands = space.candidates(widths, group)
        ok = [c for c in cands if space.resource("latency_ms", {**widths, **c}) <= target]
        if not ok:
            assert group not in props
            continue
        p = props[group]
        assert p.widths == ok[0]  # the first (largest) candidate meeting the target
        assert p.resources["latency_ms"] <= target
        assert p.resources["macs"] == space.resource("macs", {**widths, **p.widths})


def test_proposals_count_the_next_layers_input_channels() -> None:
    space = space_on(macs_table("mobilenet_v1", 32), grid=32)
    widths = dict(zip(space.fam.slots, space.fam.base))
    (p,) = [p for p in space.propose(widths, {"latency_ms": 1e12}) if p.group == ("pw6",)]
    net = space.network({**widths, **p.widths})
    # the estimate is the whole network's: pw6's out, dw7 and pw7's in all shrank
    assert p.resources["latency_ms"] == pytest.approx(
        estimate(net, macs_table("mobilenet_v1", 32)).total_ms)
    assert net.node("dw7").spec.cin == net.node("pw7").spec.cin == p.widths["pw6"]


def test_v2_groups_follow_the_paper() -> None:
    space = space_on(macs_table("mobilenet_v2", 32), "mobilenet_v2", 32)
    assert ("s4", "s5") in space.groups and ("s6", "s7") in space.groups
    assert ("e5",) in space.groups and ("conv_last",) in space.groups
    widths = dict(zip(space.fam.slots, space.fam.base))
    step = space.candidates(widths, ("s4", "s5"))[0]
    assert step["s4"] < widths["s4"] and step["s5"] < widths["s5"]  # shrink together


def test_multi_resource_targets_all_hold() -> None:
    space = space_on(macs_table("mobilenet_v1", 32), grid=32)
    widths = dict(zip(space.fam.slots, space.fam.base))
    cur = space.resources(widths)
    targets = {"latency_ms": cur["latency_ms"] * 0.99, "params": cur["params"] * 0.9}
    for p in space.propose(widths, targets):
        assert all(p.resources[r] <= t for r, t in targets.items())


@pytest.mark.sweep
def test_search_is_fast_on_a_real_lut(real_lut) -> None:
    table, _, _ = real_lut
    space = space_on(table)
    widths = dict(zip(space.fam.slots, space.fam.base))
    target = space.resource("latency_ms", widths) * 0.95
    t0 = time.perf_counter()
    props = space.propose(widths, {"latency_ms": target})
    assert props and time.perf_counter() - t0 < 0.5  # cold cache; ~ms warm (see bench)


# -- LUT checks ------------------------------------------------------------------------------------


def test_lut_grid_and_resolution_errors() -> None:
    assert lut_grid(SPACE, "mobilenet_v1", RES, CLASSES, "x.db@1") == GRID
    with pytest.raises(AdaptError, match="swept at 32 px for mobilenet_v1, but the model runs "
                                         "at 64 px.*netadapt lut --device DEVICE --space "
                                         "mobilenet_v1 --resolution 64"):
        lut_grid(SPACE, "mobilenet_v1", 64, CLASSES, "x.db@1")
    with pytest.raises(AdaptError, match="holds no float32 sweep of mobilenet_v2"):
        lut_grid(SPACE, "mobilenet_v2", RES, CLASSES, "x.db@1")
    # the search prices float32 layers: an int8 sweep of the family does not count
    int8 = {"sweeps": [{**SPACE["sweeps"][0], "dtype": "int8"}]}
    with pytest.raises(AdaptError, match="no float32 sweep of mobilenet_v1.*, int8"):
        lut_grid(int8, "mobilenet_v1", RES, CLASSES, "x.db@1")
    both = {"sweeps": [*int8["sweeps"], {**SPACE["sweeps"][0], "grid": 2 * GRID}]}
    assert lut_grid(both, "mobilenet_v1", RES, CLASSES, "x.db@1") == 2 * GRID
    # an int8 search takes the int8 sweep's grid, and says how to sweep one at int8
    assert lut_grid(both, "mobilenet_v1", RES, CLASSES, "x.db@1", "int8") == GRID
    with pytest.raises(AdaptError, match="no int8 sweep of mobilenet_v1.*netadapt lut --device "
                                         "pixel1 --space mobilenet_v1 --resolution 32 --classes "
                                         "10 --dtype int8 --lut x.db$"):
        lut_grid(SPACE, "mobilenet_v1", RES, CLASSES, "x.db@1", "int8", "pixel1")


@pytest.mark.sweep
def test_missing_keys_are_named(real_lut) -> None:
    table, _, _ = real_lut
    space = space_on(table)
    assert missing_keys(space, table) == []
    partial = {k: v for k, v in table.items() if "out=1024" not in k}
    absent = missing_keys(space, partial)
    assert absent and all("out=1024" in k for k in absent)
    with pytest.raises(MissingKeys, match="--missing measure"):
        space_on(partial).resource("latency_ms", dict(zip(space.fam.slots, space.fam.base)))
