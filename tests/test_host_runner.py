"""bench.runners.host: real LiteRT measurements of small layers on this machine."""

from __future__ import annotations

import json
import os
from importlib import metadata

import pytest

from bench.runners.base import BatchItem, Failure, RunnerError, Timing, runner_class
from bench.runners.host import HostRunner, cpu_model
from bench.tflite_build import build_layer
from lut_db.spec import LayerSpec
from lut_db.store import LutStore

SMALL = LayerSpec("conv2d", 8, 8, 8, 16, (3, 3), act="relu6")


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


class FakeInterpreter:
    """Each invoke takes the next of ``costs_ns`` on a fake clock."""

    def __init__(self, costs_ns: list[int]):
        self.now, self.costs, self.calls = 0, costs_ns, 0

    def clock(self) -> int:
        return self.now

    def invoke(self) -> None:
        self.now += self.costs[self.calls % len(self.costs)]
        self.calls += 1


def _timed(monkeypatch, runner: HostRunner, costs_ns: list[int]) -> tuple[Timing, int]:
    fake = FakeInterpreter(costs_ns)
    monkeypatch.setattr("bench.runners.host.time.perf_counter_ns", fake.clock)
    t = runner._time(fake)
    return t, fake.calls


def test_runs_until_both_runs_and_minimum_time(monkeypatch) -> None:
    runner = HostRunner(warmup=2, runs=3, min_time_ms=5.0, max_rounds=3)
    t, calls = _timed(monkeypatch, runner, [1_000_000])  # 1 ms per invoke
    assert t.runs == 5 and calls == 2 + 5  # 5 ms needs 5 runs; warm-ups are not timed
    assert t.samples_us == (1000.0,) * 5 and t.warmup_runs == 2
    runner = HostRunner(warmup=0, runs=4, min_time_ms=0.5, max_rounds=3)
    t, _ = _timed(monkeypatch, runner, [1_000_000])
    assert t.runs == 4  # the run count is the larger demand here
    assert runner.timed_ns == 4_000_000


def test_a_wide_spread_buys_more_rounds(monkeypatch) -> None:
    runner = HostRunner(warmup=0, runs=4, min_time_ms=0, max_rounds=3)
    t, _ = _timed(monkeypatch, runner, [1_000_000, 3_000_000])  # std/mean = 0.5
    assert t.runs == 12 and t.median_us == 2000.0
    steady = HostRunner(warmup=0, runs=4, min_time_ms=0, max_rounds=3)
    t, _ = _timed(monkeypatch, steady, [1_000_000, 1_050_000])
    assert t.runs == 4  # stable after one round


def test_samples_go_into_the_store(fast_runner: HostRunner) -> None:
    (t,) = fast_runner.measure([BatchItem(SMALL.key, build_layer(SMALL))])
    store = LutStore.memory()
    v = store.create_version("host", fast_runner.backend, fast_runner.fingerprint())
    store.add_results(v.id, [(SMALL.key, t)], serial=fast_runner.serial)
    (row,) = store.entries(v.id)
    assert json.loads(row["samples_us"]) == list(t.samples_us)
    assert row["runs"] == t.runs and row["latency_us"] == t.median_us
    assert row["serial"] == "host"


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


def test_pins_to_the_configured_cpus() -> None:
    cpu = min(os.sched_getaffinity(0))
    runner = HostRunner(cpus=[cpu], runs=1, min_time_ms=0)
    assert os.sched_getaffinity(0) == {cpu}
    assert runner.fingerprint()["cpus"] == [cpu]


def test_cpus_it_may_not_use_are_a_runner_error() -> None:
    with pytest.raises(RunnerError, match=r"cannot pin to CPU\(s\) \[4096\]"):
        HostRunner(cpus=[4096])


@pytest.mark.parametrize("model", [b"", b"garbage" * 20, b"\x00" * 64])
def test_broken_model_bytes_are_a_failure_not_an_exception(fast_runner: HostRunner,
                                                           model: bytes) -> None:
    (res,) = fast_runner.measure([BatchItem("broken", model)])
    assert isinstance(res, Failure)
    assert "LiteRT could not load the model" in res.error


def test_a_broken_model_does_not_stop_the_batch(fast_runner: HostRunner) -> None:
    good = build_layer(SMALL)
    out = fast_runner.measure([BatchItem("a", good), BatchItem("b", good[: len(good) // 2]),
                               BatchItem("c", good)])
    assert [type(r) for r in out] == [Timing, Failure, Timing]


def test_registered_as_the_host_runner() -> None:
    assert runner_class("host") is HostRunner
    with pytest.raises(RunnerError, match="unknown runner 'tpu'"):
        runner_class("tpu")
