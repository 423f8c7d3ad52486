"""bench.runners.host: real LiteRT measurements of small layers on this machine."""

from __future__ import annotations

import json
import os
from importlib import metadata

import pytest

from bench.runners.base import BatchItem, Failure, RunnerError, Timing, runner_class
from bench.runners.host import GIVE_UP_NS, HostRunner, cpu_model
from bench.tflite_build import build_layer
from lut_db.spec import LayerSpec
from lut_db.store import LutStore

SMALL = LayerSpec("conv2d", 8, 8, 8, 16, (3, 3), act="relu6")


@pytest.mark.sweep
def test_measures_a_small_layer(fast_runner: HostRunner) -> None:
    (t,) = fast_runner.measure([BatchItem(SMALL.key, build_layer(SMALL))])
    assert isinstance(t, Timing)
    assert t.runs >= fast_runner.runs == 3
    assert len(t.samples_us) == t.runs
    assert t.warmup_runs == fast_runner.warmup == 1
    assert 0 < t.min_us <= t.median_us <= t.max_us
    assert t.min_us <= t.mean_us <= t.max_us
    assert t.latency_us == t.median_us
    assert t.std_us >= 0 and t.spread == pytest.approx(t.std_us / t.mean_us)
    assert min(t.samples_us) == t.min_us and max(t.samples_us) == t.max_us
    assert fast_runner.timed_ns >= sum(t.samples_us) * 1000 * 0.99


class FakeClock:
    """A wall clock and a thread CPU clock that fake interpreters advance."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0
        self.log: list[str] = []

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr("bench.runners.host.time.perf_counter_ns", lambda: self.wall)
        monkeypatch.setattr("bench.runners.host.time.thread_time_ns", lambda: self.cpu)


class FakeInterpreter:
    """Each invoke takes the next of ``costs_ns`` of wall time, ``lost_ns`` of it spent
    in another process (preempted)."""

    def __init__(self, clock: FakeClock, name: str, costs_ns: list[int],
                 lost_ns: list[int] | None = None):
        self.clock, self.name, self.costs, self.calls = clock, name, costs_ns, 0
        self.lost = lost_ns or [0]

    def invoke(self) -> None:
        cost, lost = (x[self.calls % len(x)] for x in (self.costs, self.lost))
        self.clock.wall += cost
        self.clock.cpu += cost - lost
        self.clock.log.append(self.name)
        self.calls += 1


def _measure(monkeypatch, runner: HostRunner, **models: dict) -> tuple[list, FakeClock]:
    """Measure fake models (name -> FakeInterpreter kwargs) as one batch."""
    clock = FakeClock()
    clock.install(monkeypatch)
    fakes = {name.encode(): FakeInterpreter(clock, name, **kw) for name, kw in models.items()}
    monkeypatch.setattr(runner, "_interpreter", lambda model: fakes[model])
    return runner.measure([BatchItem(n, n.encode()) for n in models]), clock


@pytest.mark.sweep
def test_runs_until_both_runs_and_minimum_time(monkeypatch) -> None:
    runner = HostRunner(warmup=2, runs=3, min_time_ms=5.0)
    (t,), clock = _measure(monkeypatch, runner, a={"costs_ns": [1_000_000]})  # 1 ms each
    assert t.runs == 5 and len(clock.log) == 2 + 5  # 5 ms needs 5 runs; warm-ups untimed
    assert t.samples_us == (1000.0,) * 5 and t.warmup_runs == 2
    runner = HostRunner(warmup=0, runs=4, min_time_ms=0.5)
    (t,), _ = _measure(monkeypatch, runner, a={"costs_ns": [1_000_000]})
    assert t.runs == 4  # the run count is the larger demand here
    assert runner.timed_ns == 4_000_000


@pytest.mark.sweep
def test_passes_spread_each_model_over_rounds_through_the_batch(monkeypatch) -> None:
    runner = HostRunner(warmup=2, runs=6, min_time_ms=0, passes=3)
    (a, b), clock = _measure(monkeypatch, runner, a={"costs_ns": [100_000]},
                             b={"costs_ns": [200_000]})
    # 2 warm-ups + 2 timed, then per later pass 1 warm-up + 2 timed; a and b take turns.
    assert "".join(clock.log) == "aaaa" "bbbb" + "aaabbb" * 2
    assert (a.runs, b.runs) == (6, 6) and a.warmup_runs == 2 + 2
    assert (a.median_us, b.median_us) == (100.0, 200.0)
    assert runner.fingerprint()["passes"] == 3


@pytest.mark.sweep
def test_preempted_invokes_are_dropped_and_counted(monkeypatch) -> None:
    # Every third invoke loses 1 ms to another process.
    lost = [0, 0, 1_000_000]
    runner = HostRunner(warmup=0, runs=6, min_time_ms=0)
    (t,), clock = _measure(monkeypatch, runner, a={"costs_ns": [100_000], "lost_ns": lost})
    assert t.runs == 6 and t.extra["preempted"] == 2 and len(clock.log) == 8
    assert set(t.samples_us) == {100.0}
    small = [0, 0, 1_000]  # under 20 us of jitter: kept
    (t,), _ = _measure(monkeypatch, runner, a={"costs_ns": [100_000], "lost_ns": small})
    assert (t.runs, t.extra["preempted"]) == (6, 0)
    threads = HostRunner(threads=2, warmup=0, runs=6, min_time_ms=0)  # CPU time cannot tell
    (t,), _ = _measure(monkeypatch, threads, a={"costs_ns": [100_000], "lost_ns": lost})
    assert (t.runs, t.extra["preempted"]) == (6, 0)
    assert "kept" in threads.fingerprint()["preempted_invokes"]


@pytest.mark.sweep
def test_a_core_that_is_rarely_ours_ends_the_pass(monkeypatch) -> None:
    runner = HostRunner(warmup=0, runs=4, min_time_ms=1.0)
    (t,), clock = _measure(monkeypatch, runner,
                           a={"costs_ns": [100_000], "lost_ns": [90_000]})  # always preempted
    assert t.extra["preempted"] == len(clock.log) and t.runs == 1  # the last one, flagged
    assert GIVE_UP_NS < clock.wall <= GIVE_UP_NS + 100_000  # 15 x 1 ms is less
    slow = HostRunner(warmup=0, runs=4, min_time_ms=10.0)
    (t,), clock = _measure(monkeypatch, slow, a={"costs_ns": [1_000_000], "lost_ns": [900_000]})
    assert 150_000_000 < clock.wall <= 151_000_000  # 15 x the 10 ms budget


@pytest.mark.sweep
def test_samples_go_into_the_store(fast_runner: HostRunner) -> None:
    (t,) = fast_runner.measure([BatchItem(SMALL.key, build_layer(SMALL))])
    store = LutStore.memory()
    v = store.create_version("host", fast_runner.backend, fast_runner.fingerprint())
    store.add_results(v, [(SMALL.key, t)], serial=fast_runner.serial)
    (row,) = store.entries(v)
    assert json.loads(row["samples_us"]) == list(t.samples_us)
    assert row["runs"] == t.runs and row["latency_us"] == t.median_us
    assert row["serial"] == "host"


@pytest.mark.sweep
def test_fingerprint(fast_runner: HostRunner) -> None:
    fp = fast_runner.fingerprint()
    assert fp["runtime"] == f"ai-edge-litert {metadata.version('ai-edge-litert')}"
    assert fp["model"] == cpu_model() and fp["model"]
    assert (fp["threads"], fp["warmup"], fp["runs"], fp["min_time_ms"]) == (1, 1, 3, 0.0)
    assert fp["cpus"] == [max(os.sched_getaffinity(0))] == fast_runner.cpus
    assert fp["cores"] == os.cpu_count()
    for field in ("device", "machine", "os", "delegate", "governor", "max_freq_khz"):
        assert field in fp
    json.dumps(fp)  # it is stored as JSON
    assert fp == HostRunner(warmup=1, runs=3, min_time_ms=0.0).fingerprint()
    assert fp != HostRunner(warmup=1, runs=4, min_time_ms=0.0).fingerprint()


@pytest.mark.sweep
def test_pins_to_the_configured_cpus_only_while_it_times(monkeypatch) -> None:
    before = os.sched_getaffinity(0)
    cpu = min(before)
    runner = HostRunner(cpus=[cpu], runs=1, min_time_ms=0)
    assert os.sched_getaffinity(0) == before  # made, not timing: nothing pinned
    assert runner.fingerprint()["cpus"] == [cpu]
    seen: list[set[int]] = []
    real_run = HostRunner._run

    def run(self: HostRunner, interp, warmup: int):  # type: ignore[no-untyped-def]
        seen.append(os.sched_getaffinity(0))
        return real_run(self, interp, warmup)

    monkeypatch.setattr(HostRunner, "_run", run)
    (t,) = runner.measure([BatchItem(SMALL.key, build_layer(SMALL))])
    assert isinstance(t, Timing) and seen == [{cpu}]
    assert os.sched_getaffinity(0) == before  # given back after the timed loop

    class Stop(Exception):
        pass

    def stopped(*_a):  # type: ignore[no-untyped-def]
        raise Stop

    monkeypatch.setattr(HostRunner, "_run", stopped)
    with pytest.raises(Stop):
        runner.measure([BatchItem(SMALL.key, build_layer(SMALL))])
    assert os.sched_getaffinity(0) == before  # and when the loop fails


def test_cpus_it_may_not_use_are_a_runner_error() -> None:
    with pytest.raises(RunnerError, match=r"cannot pin to CPU\(s\) \[4096\]"):
        HostRunner(cpus=[4096])


@pytest.mark.parametrize("model", [b"", b"garbage" * 20, b"\x00" * 64])
@pytest.mark.sweep
def test_broken_model_bytes_are_a_failure_not_an_exception(fast_runner: HostRunner,
                                                           model: bytes) -> None:
    (res,) = fast_runner.measure([BatchItem("broken", model)])
    assert isinstance(res, Failure)
    assert "LiteRT could not load the model" in res.error


@pytest.mark.sweep
def test_a_broken_model_does_not_stop_the_batch(fast_runner: HostRunner) -> None:
    good = build_layer(SMALL)
    out = fast_runner.measure([BatchItem("a", good), BatchItem("b", good[: len(good) // 2]),
                               BatchItem("c", good)])
    assert [type(r) for r in out] == [Timing, Failure, Timing]


def test_registered_as_the_host_runner() -> None:
    assert runner_class("host") is HostRunner
    with pytest.raises(RunnerError, match="unknown runner 'tpu'"):
        runner_class("tpu")
