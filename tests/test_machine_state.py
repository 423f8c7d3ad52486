"""bench.machine_state and the measurement value of bench.timing: fixed /proc text, a fake
clock, scripted runners; nothing here depends on the machine's real load."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import replace

import pytest

from bench import machine_state as ms
from bench import timing
from bench.runners.base import BaseRunner, BatchItem, Result, Timing
from bench.runners.checks import parse_battery
from bench.runners.phone_thermal import zone_readings
from tests.fakes import BUSY, QUIET, FixedProbe

STAT_0 = """cpu  1000 0 200 8000 100 0 0 10 0 0
cpu0 500 0 100 4000 50 0 0 5 0 0
cpu1 500 0 100 4000 50 0 0 5 0 0
intr 12345
"""
# 10 s later on 2 cores (2000 ticks in all): 900 ticks busy, 30 stolen
STAT_1 = """cpu  1700 0 400 9070 100 0 0 40 0 0
cpu0 850 0 200 4535 50 0 0 20 0 0
cpu1 850 0 200 4535 50 0 0 20 0 0
"""


class Fake:
    """Files by path, a clock and our own CPU time, all moved by the test."""

    def __init__(self) -> None:
        self.files = {"/proc/stat": STAT_0, "/proc/loadavg": "0.20 0.10 0.05 1/100 42\n"}
        self.now = 100.0
        self.own_s = 3.0

    def probe(self) -> ms.HostProbe:
        return ms.HostProbe(read=lambda path: self.files[path], own_cpu=lambda: self.own_s,
                            clock=lambda: self.now, ticks_per_s=100)

    def advance(self, stat: str, load: str, own_s: float, wall_s: float = 10.0) -> None:
        self.files = {"/proc/stat": stat, "/proc/loadavg": load}
        self.now += wall_s
        self.own_s += own_s


def test_proc_stat_is_parsed_into_seconds():
    t = ms.parse_proc_stat(STAT_0, ticks_per_s=100)
    assert t == ms.CpuTimes(busy_s=12.0, idle_s=81.0, steal_s=0.1, cores=2)
    assert ms.parse_proc_stat("intr 1\n") is None
    assert ms.parse_loadavg("1.43 0.69 0.28 5/185 8310") == 1.43
    assert ms.parse_loadavg("") is None


def test_other_processes_are_busy_time_less_our_own():
    f = Fake()
    p = f.probe()
    p.start()
    f.advance(STAT_1, "1.40 0.5 0.2 2/100 42\n", own_s=4.0)
    s = p.stop()
    # 9 s of CPU in 10 s, 4 of them ours: other processes used 0.5 cores; 0.3 s stolen
    assert s.wall_s == 10.0 and s.cores == 2 and s.own_cpu_s == 4.0
    assert s.other_cpu_cores == pytest.approx(0.5)
    assert s.steal_s == pytest.approx(0.3) and s.steal_share == pytest.approx(0.015)
    assert s.load_1m == 1.40
    # load 1.40 less our own 0.4 cores is 1.0 runnable beyond us: busy as well
    assert s.reasons() == ["other processes used 0.50 of 2 cores", "load average 1.40"]
    line = s.warning("the passes")
    assert line is not None and "\n" not in line
    assert line.startswith("warning: the passes were measured while host was busy")
    assert "measure again on a quiet machine" in line


def test_a_quiet_machine_gives_no_warning():
    f = Fake()
    p = f.probe()
    p.start()
    quiet = STAT_0.replace("cpu  1000 0 200 8000", "cpu  1980 0 220 9000")
    f.advance(quiet, "1.05 0.5 0.2 1/100 42\n", own_s=10.0)  # one core busy: ours
    s = p.stop()
    assert s.other_cpu_cores == pytest.approx(0.0) and s.steal_share == 0.0
    assert s.reasons() == [] and s.warning() is None and not s.busy
    d = s.to_dict()
    assert d["busy"] is False and d["warning"] is None and "load 1.05" in d["summary"]
    assert ms.MachineState.from_dict(d) == s


def test_steal_alone_makes_the_machine_busy():
    s = ms.MachineState("host", 10.0, 2, 0.1, 1.0, other_cpu_cores=0.0, steal_share=0.05)
    assert s.reasons() == ["steal time 5.0 %"]


def test_unreadable_proc_still_gives_a_state():
    p = ms.HostProbe(read=lambda path: "", own_cpu=lambda: 0.0, clock=iter([0.0, 2.0]).__next__)
    p.start()
    s = p.stop()
    assert s.wall_s == 2.0 and s.other_cpu_cores is None and s.reasons() == []


PHONE_0 = """@@NETADAPT-STATE uptime
1000.00 3000.00
@@NETADAPT-STATE loadavg
0.50 0.40 0.30 1/500 99
@@NETADAPT-STATE stat
cpu  1000 0 200 8000 100 0 0 0 0 0
cpu0 500 0 100 4000 50 0 0 0 0 0
cpu1 500 0 100 4000 50 0 0 0 0 0
@@NETADAPT-STATE cpus
0 1900800 schedutil
1 300000 schedutil
@@NETADAPT-STATE temps
@@NETADAPT-TEMP state
@@T cpu-0-0-usr 41000
@@T battery 30
@@T bogus 999999
@@NETADAPT-STATE battery
Current Battery Service state:
  AC powered: false
  USB powered: false
  status: 3
  level: 12
@@NETADAPT-STATE end
"""


def read_extras(sections) -> ms.PhoneExtras:
    """As the phone runner reads its sections (its own parsers)."""
    bat = parse_battery(sections.get("battery", ""))
    assert bat is not None
    return ms.PhoneExtras(dict(zone_readings(sections.get("temps", ""), "state")),
                          bat.level, bat.status, bat.on_power)


def test_phone_state_from_two_readings():
    later = (PHONE_0.replace("1000.00 3000.00", "1010.00 3010.00")
             .replace("cpu  1000 0 200 8000", "cpu  1500 0 300 9400")
             .replace("@@T cpu-0-0-usr 41000", "@@T cpu-0-0-usr 47500"))
    texts = iter([PHONE_0, later])
    probe = ms.PhoneProbe("SER1", lambda script: next(texts),
                          {"temps": "echo temps here", "battery": "dumpsys battery"},
                          read_extras, limit_c=45.0)
    assert "echo '@@NETADAPT-STATE temps'; echo temps here" in probe.script
    assert "echo '@@NETADAPT-STATE battery'; dumpsys battery" in probe.script
    probe.start()
    s = probe.stop()
    assert s.where == "SER1" and s.wall_s == pytest.approx(10.0) and s.cores == 2
    assert s.busy_share == pytest.approx(6.0 / 20)  # 600 ticks of 2000: every process
    assert s.phone["temps_c"] == {"cpu-0-0-usr": 47.5, "battery": 30.0}  # 999 C dropped
    assert s.phone["hot"] and s.phone["governors"] == ["schedutil"]
    assert s.phone["freqs_khz"] == {"0": 1900800, "1": 300000}
    assert s.phone["battery_pct"] == 12 and s.phone["battery_status"] == "discharging"
    assert s.phone["charging"] is False
    assert s.reasons() == ["the phone ran hot (47.5 C)", "battery at 12 % and not charging"]
    assert "let the phone cool down and charge" in (s.warning() or "")


def test_a_phones_load_average_is_kept_but_not_judged():
    # Android counts tasks waiting on I/O: loads of 5-10 at rest
    assert ms.MachineState("SER1", 10.0, 8, load_1m=9.0).reasons() == []


def test_a_phone_that_prints_nothing_is_unknown_not_broken():
    s = ms.phone_state("X", ms.parse_phone_state(""), ms.parse_phone_state(""))
    assert s.wall_s == 0.0 and s.busy_share is None and s.reasons() == []


# -- the measurement value -----------------------------------------------------------------------


class Scripted(BaseRunner):
    """Returns the next latency of ``script`` per model timed, and a fixed machine state."""

    backend = "tflite-cpu"

    def __init__(self, script: Sequence[float], state: ms.MachineState | None = None):
        self.script = list(script)
        self.state = state

    def fingerprint(self) -> dict:
        return {"device": "scripted"}

    def measure(self, batch: Sequence[BatchItem]) -> list[Result]:
        return [Timing.from_samples([self.script.pop(0)] * 3) for _ in batch]

    def state_probe(self) -> ms.StateProbe:
        return FixedProbe(self.state)


def test_a_measurement_is_one_value_with_its_repeats_and_state():
    runner = Scripted([100, 110, 90, 200, 210, 205], QUIET)
    m = timing.time_networks(runner, {"n": b"model"}, passes=2, repeats=3)["n"]
    assert m.passes_us == [100, 110, 90, 200, 210, 205]
    assert m.repeats_us == [105, 145, 207.5]  # blocks of 2 passes, in the order measured
    assert m.latency_us == 145 and m.latency_ms == 0.145
    assert m.repeat_spread == pytest.approx((207.5 - 105) / 145)
    assert m.pass_spread == pytest.approx((210 - 90) / 155)
    assert m.runs == 18 and m.fingerprint == {"device": "scripted"}
    # the probe's state, with the session's own noise: passes from 90 to 210 us are noisy
    assert m.state == replace(QUIET, scatter=m.state.scatter)
    assert m.state.scatter > ms.NOISY_SCATTER
    d = m.to_dict()
    assert d["repeats_us"] == [105, 145, 207.5] and d["machine_state"]["busy"] is True
    assert d["measured_at"]


def test_the_pass_scatter_is_a_robust_sd_of_log_time():
    assert timing.pass_scatter({"a": [100, 100 * math.exp(0.1)]}) == pytest.approx(
        0.1 / timing.PAIR_MEDIAN_SD)
    # one preempted pass in five does not decide it; a network timed once tells nothing
    assert timing.pass_scatter({"a": [100, 100, 100, 100, 145], "b": [7.0]}) == 0
    assert timing.pass_scatter({"a": [100]}) is None


def test_a_noisy_session_says_so_when_load_and_steal_do_not():
    def session(noise: float) -> timing.Measurement:
        rng = random.Random(1)
        script = [100 * math.exp(rng.gauss(0, noise)) for _ in range(30)]
        return timing.time_networks(Scripted(script, QUIET), {"n": b"m"}, passes=30)["n"]

    calm, noisy = session(0.02), session(0.10)
    assert calm.state.scatter == pytest.approx(0.02, rel=0.35) and not calm.state.busy
    assert noisy.state.scatter == pytest.approx(0.10, rel=0.35)
    assert noisy.state.warning() == (
        f"warning: these numbers were measured while host was busy (its passes scattered "
        f"±{100 * noisy.state.scatter:.1f} % about their medians (quiet: under 6 %)): they may "
        "be off by 10-45 %; stop other work and measure again on a quiet machine")
    assert f"passes ±{100 * noisy.state.scatter:.1f} %" in noisy.state.describe()


def test_a_runner_that_knows_nothing_of_its_machine_gives_no_state():
    m = timing.time_networks(Scripted([1.0, 1.0]), {"n": b"m"}, passes=2)["n"]
    assert m.state is None and m.to_dict()["machine_state"] is None and m.repeat_spread is None


def test_agreeing_passes_are_measured_once():
    c = timing.time_until_agreed(Scripted([100, 103, 101, 99, 102], QUIET), b"m", passes=5)
    assert c.reliable and c.measurement.repeats == 1 and c.note() is None


def test_disagreeing_passes_are_measured_again_until_repeats_agree():
    # a 45 % outlier pass: measured again, and the repeats' medians agree
    script = [100, 145, 101, 99, 102, 100, 101, 99, 100, 101]
    c = timing.time_until_agreed(Scripted(script, QUIET), b"m", passes=5)
    assert c.reliable and c.measurement.repeats == 2
    assert c.measurement.latency_us == pytest.approx(100.5)


def test_repeats_that_never_agree_are_flagged_unreliable():
    script = [100, 145, 100, 100, 100] + [145] * 5 + [100, 145, 100, 145, 100]
    c = timing.time_until_agreed(Scripted(script, BUSY), b"m", passes=5, max_repeats=3)
    assert not c.reliable and c.measurement.repeats == 3
    assert c.measurement.repeats_us == [100, 145, 100] and c.measurement.latency_us == 100
    note = c.note()
    assert note == ("UNRELIABLE: measured 3 times, the results still disagree by 45 % "
                    "(over 10 %), so the median may be far off; measure again on a quiet "
                    "machine")
    # the busiest state of the repeats is kept (with that repeat's scatter)
    assert replace(c.measurement.state, scatter=None) == BUSY


def test_one_disagreeing_repeat_says_how_to_measure_again():
    c = timing.time_until_agreed(Scripted([100, 145, 100]), b"m", passes=3, max_repeats=1)
    assert not c.reliable and c.note() == (
        "UNRELIABLE: its 3 passes disagree by 45 % (over 10 %), so the median may be far off; "
        "measure again on a quiet machine, with --max-repeats 3")


def test_worst_state_is_the_busiest():
    assert ms.worst([QUIET, BUSY, QUIET]) is BUSY and ms.worst([]) is None


def test_adapts_verification_says_when_the_machine_was_busy(monkeypatch):
    import contextlib

    from adapter import on_device
    from bench import devices, zoo
    from tests.fakes import FakeRunner

    @contextlib.contextmanager
    def attached(device, backend=None, **_):
        yield [FakeRunner(state=BUSY)]

    monkeypatch.setattr(devices, "open_runners", attached)
    net = zoo.MOBILENET_V1.network(width_mult=0.25, resolution=32, classes=10)
    said: list[str] = []
    ms, drift = on_device.measure_with_drift({"a": net}, "fake", rounds=1, log=said.append)
    assert ms["a"] > 0 and drift is None
    assert said == [BUSY.warning("the networks' latencies")]


def test_each_repeat_keeps_the_machines_state_over_it():
    class PerProbe(Scripted):
        """Each probe made reports the next state: the run's first, then each repeat's."""

        def __init__(self, script, states):
            super().__init__(script)
            self.states = iter(states)

        def state_probe(self) -> ms.StateProbe:
            return FixedProbe(next(self.states))

    runner = PerProbe([100, 101, 130, 131, 100, 99], [BUSY, QUIET, BUSY, QUIET])
    m = timing.time_networks(runner, {"n": b"m"}, passes=2, repeats=3)["n"]
    assert replace(m.state, scatter=None) == BUSY and m.repeat_states == (QUIET, BUSY, QUIET)
    assert m.to_dict()["repeats_busy"] == [False, True, False]
    from analysis.report_build import busy_repeats

    assert busy_repeats([False, True, False]) == " (busy in repeat 2 of 3)"
    assert busy_repeats(None) == "" and busy_repeats([False]) == ""
    one = timing.time_networks(Scripted([1.0]), {"n": b"m"}, passes=1)["n"]
    assert one.repeat_states == () and one.to_dict()["repeats_busy"] is None


class Paced(BaseRunner):
    """Each network's own time, times the machine's pace at that pass (every network
    timed in a pass shares it): a machine that changes speed mid-session."""

    backend = "tflite-cpu"

    def __init__(self, base: dict[str, float], pace: Sequence[float]):
        self.base, self.pace, self.done = base, list(pace), 0

    def fingerprint(self) -> dict:
        return {"device": "paced"}

    def measure(self, batch: Sequence[BatchItem]) -> list[Result]:
        out = []
        for item in batch:
            p = self.pace[self.done // len(self.base)]
            out.append(Timing.from_samples([self.base[item.key] * p] * 3))
            self.done += 1
        return out


def test_a_sessions_common_pace_is_taken_out_of_every_network():
    base = {f"n{i}": 100.0 * (i + 1) for i in range(timing.MIN_FOR_PACE)}
    pace = [1.0, 1.12, 0.95, 1.0, 1.05, 1.0]
    timed = timing.time_networks(Paced(base, pace), {n: b"m" for n in base}, passes=2,
                                 repeats=3)
    m = timed["n3"]
    assert m.pace == pytest.approx(pace)  # the passes' median pace is 1 already
    assert m.raw_us == pytest.approx([400 * p for p in pace])  # kept as the device gave them
    assert m.passes_us == pytest.approx([400] * 6) and m.repeat_spread == pytest.approx(0)
    assert m.to_dict()["pass_pace"] == pytest.approx(pace)


def test_too_few_networks_keep_their_times_as_measured():
    base = {f"n{i}": 100.0 for i in range(timing.MIN_FOR_PACE - 1)}
    m = timing.time_networks(Paced(base, [1.0, 1.2]), {n: b"m" for n in base}, passes=2)["n0"]
    assert m.pace == () and m.passes_us == pytest.approx([100, 120])


def test_the_report_states_the_pace_it_took_out():
    from analysis.report_build import _machine_notes
    from analysis.report_metrics import _machine_sessions

    state = QUIET.to_dict()
    rows = [{"machine_state": state, "pass_pace": [1.0, 1.12, 0.95]},
            {"machine_state": state, "pass_pace": [1.0, 1.12, 0.95]}]
    sessions = _machine_sessions(rows)
    assert sessions[0]["pace"] == [0.95, 1.12] and sessions[0]["networks"] == 2
    notes = _machine_notes({"machine": sessions})
    assert any("pace over those passes: 0.95x to 1.12x" in n for n in notes)


def test_the_report_says_why_a_session_was_busy():
    from analysis.report_build import _machine_notes

    noisy = replace(QUIET, scatter=0.09).to_dict()
    notes = _machine_notes({"calibration_machine": noisy,
                            "machine": [{**noisy, "networks": 3, "measured_at": "now"}]})
    assert len(notes) == 2 and all(
        "busy: its passes scattered ±9.0 % about their medians (quiet: under 6 %)." in n
        for n in notes)
    assert "passes ±9.0 %" in notes[0]
