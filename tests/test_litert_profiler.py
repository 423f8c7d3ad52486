"""LiteRT's op profiler, reached through its C API: real invokes on this machine."""

from __future__ import annotations

import pytest

from analysis.families import HELD_OUT
from analysis.profile import fold_free_ops, profile_layers
from bench.runners import litert_profiler
from bench.runners.base import BatchItem, RunnerError
from bench.runners.host import HostRunner
from bench.tflite_build import build_network
from bench.zoo import family


@pytest.fixture
def runner():
    r = HostRunner(warmup=2, runs=20, min_time_ms=2)
    yield r
    r.close()


def test_profile_lists_every_op_of_every_invoke_in_order():
    net = family("mobilenet_v1").network(width_mult=0.25, resolution=32)
    invokes = litert_profiler.profile(build_network(net), warmup=1, runs=5)
    assert len(invokes) == 5
    names = [tag for tag, _ in invokes[0].ops]
    assert all([tag for tag, _ in i.ops] == names for i in invokes)
    # XNNPACK's own ops: conv1, then depthwise / pointwise (a GEMM) pairs, the pool, the
    # classifier behind the reshape the builder puts before it.
    assert names[0].startswith("Convolution") and "IGEMM" in names[0]
    assert names[1].endswith("DWConv") and names[2].startswith("Fully Connected")
    assert names[-3:] == ["Mean (ND) Reduce2", "Static Reshape (NC)",
                          "Fully Connected (NC, F32) GEMM"]
    assert all(i.wall_ns > 0 and i.cpu_ns > 0 for i in invokes)
    assert sum(us for _, us in invokes[-1].ops) > 0


def test_a_file_litert_cannot_read_is_one_clear_error():
    with pytest.raises(RunnerError, match="LiteRtCreateModelFromBuffer failed"):
        litert_profiler.profile(b"not a model" * 8, runs=1)


def test_free_ops_count_with_the_op_they_feed():
    ops = [("Conv", 5.0), ("Delegate/Static Reshape (NC)", 1.0), ("FC", 2.0),
           ("RESHAPE", 0.5)]
    assert fold_free_ops(ops) == [5.0, 3.5]
    assert fold_free_ops([]) == []
    # an ADD with a fused ReLU runs as Add then Clamp: one layer
    assert fold_free_ops([("Conv", 5.0), ("Add (ND)", 2.0), ("Clamp (NC)", 1.0),
                          ("Conv", 4.0)]) == [5.0, 3.0, 4.0]


@pytest.mark.parametrize("name, resolution, dtype", [
    ("mobilenet_v2", 64, "float32"),
    ("mobilenet_v3_small", 64, "float32"),
    ("mobilenet_v3_small", 64, "int8"),  # XNNPACK leaves int8 hard-swish to the kernel
    ("resnet_style", 64, "float32"),  # residual adds with a fused ReLU: Add, then Clamp
])
@pytest.mark.sweep
def test_host_layer_profile_comes_from_the_op_profiler(runner, name, resolution, dtype):
    fam = HELD_OUT.get(name) or family(name)
    net = fam.network(width_mult=0.5, resolution=resolution).with_dtype(dtype)
    prof = profile_layers(runner, net, {n.spec.key: 1.0 for n in net.nodes})
    assert prof["method"].startswith("the runtime's op profiler: LiteRT's")
    assert [x["node"] for x in prof["layers"]] == [n.name for n in net.nodes]
    total = sum(x["profile_us"] for x in prof["layers"])
    (whole,) = runner.measure([BatchItem("net", build_network(net))])
    # The ops' times and the whole invoke are the same work: within a factor of two on a
    # machine whose speed drifts, the profiler's own per-event cost counted in its op
    # times (1.0-1.5x the interpreter's invoke seen for these small networks).
    assert 0.5 * whole.latency_us < total < 2.0 * whole.latency_us
    convs = [x["profile_us"] for x in prof["layers"] if x["op"] == "conv2d"]
    assert max(convs) > 1.0


@pytest.mark.sweep
def test_a_profile_that_does_not_map_falls_back_to_prefixes(runner, monkeypatch):
    net = family("mobilenet_v1").network(width_mult=0.25, resolution=32)
    monkeypatch.setattr(runner, "op_profile", lambda model: [("Conv", 1.0)])
    prof = profile_layers(runner, net, {n.spec.key: 1.0 for n in net.nodes}, passes=1)
    assert prof["method"].startswith("prefix differencing")
    assert "1 ops are not the network's 29 layers" in prof["method"]
