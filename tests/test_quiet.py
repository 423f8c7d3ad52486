"""bench.quiet: waiting for a quiet machine, on scripted probes and a fake clock."""

from __future__ import annotations

import pytest

from bench import quiet


def test_window_noise_is_the_spread_of_window_means():
    # 0.2 s windows at 10 invokes/s: pairs of invokes; means 100, 110, 90
    assert quiet.window_noise([100, 100, 110, 110, 90, 90], per_s=10) == pytest.approx(0.1)
    assert quiet.window_noise([100, 100], per_s=10) is None  # too few windows to tell


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, s: float) -> None:
        self.now += s


def probes(*noise: float, load: float = 0.1):
    it = iter(noise)
    return lambda: {"noise": next(it), "load_1m": load}


def test_waits_for_a_quiet_spell_and_says_why_it_waited():
    clock, said = Clock(), []
    # quiet, noisy, then quiet twice in a row: a quiet instant is not enough
    got = quiet.wait_quiet(600, probes(0.02, 0.10, 0.01, 0.02), clock.sleep, 30,
                           lambda: clock.now, said.append, spell=2)
    assert got["quiet"] and got["noise"] == 0.02 and got["waited_s"] == 90
    assert len(said) == 3 and "one layer's 0.2 s means spread 10.0 % (under 3 %)" in said[1]
    assert "1 of 2 probes in a row" in said[2]


def test_a_wait_that_runs_out_returns_the_last_probe_marked_not_quiet():
    clock = Clock()
    got = quiet.wait_quiet(60, probes(0.10, 0.01, 0.08, 0.07), clock.sleep, 30,
                           lambda: clock.now, lambda _: None, spell=2)
    assert not got["quiet"] and got["noise"] == 0.08 and got["waited_s"] == 60


def test_a_loaded_machine_is_not_quiet_however_steady():
    clock = Clock()
    got = quiet.wait_quiet(0, probes(0.01, load=1.5), clock.sleep, 30, lambda: clock.now)
    assert not got["quiet"] and got["waited_s"] == 0
    # not waiting, one quiet probe says quiet
    assert quiet.wait_quiet(0, probes(0.01), clock.sleep, 30, lambda: clock.now)["quiet"]


def test_the_l3_probe_layers_fill_half_and_an_eighth_of_the_l3():
    big, small = quiet.l3_layers(32 * 1024)  # 32 MB
    assert (big.cin, big.cout, small.cin, small.cout) == (2048, 2048, 1024, 1024)
    assert 4 * big.cin * big.cout == 16 << 20 and 4 * small.cin * small.cout == 4 << 20


def test_the_l3_probe_times_both_layers_on_this_machine():
    got = quiet.l3_slowdown(512, seconds=0.05)  # a tiny "L3": 256x256 and 128x128 layers
    assert got["l3_layers"] == [s.key for s in quiet.l3_layers(512)]
    assert got["l3_slowdown"] > 0 and all(t > 0 for t in got["l3_us"])


def test_neighbours_holding_the_l3_make_the_machine_not_quiet():
    calm = {"noise": 0.01, "load_1m": 0.1}
    assert quiet.is_quiet(calm)  # no L3 reported: judged on load and spread alone
    assert quiet.is_quiet({**calm, "l3_slowdown": quiet.QUIET_L3 - 0.1})
    busy = {**calm, "l3_slowdown": quiet.QUIET_L3 + 0.1}
    assert not quiet.is_quiet(busy)
    assert f"{busy['l3_slowdown']:.2f}x slower per byte" in quiet.describe(busy)
