"""The two benchmark_models' flags and output, read from the real tools' captured lines."""

from __future__ import annotations

import re

import pytest

from bench.runners.benchmark_result import parse_result_file, result_file_bytes
from bench.runners.parse import ParseError, parse_benchmark_model, parse_litert_model
from bench.runners.tool_flags import (
    LITERT,
    TFLITE,
    RunSpec,
    delegation_problem,
    identify,
    merged,
    parse_extra_args,
    render,
    tool_flags,
    unconsumed,
)
from loopback.farm import LITERT_RESULT, TOOL_FIXTURES, printed


def test_every_fixture_line_names_its_source():
    for path in TOOL_FIXTURES.glob("*.txt"):
        for line in path.read_text().splitlines():
            assert re.match(r"^[\w.]+\.(cc|h):\d+ \| ", line), (path.name, line)


def test_the_probe_tells_the_two_benchmark_models_apart():
    assert identify(printed("tflite_benchmark_model_cpu.txt")) == TFLITE
    assert identify(printed("litert_benchmark_model_cpu.txt")) == LITERT
    assert identify(printed("litert_benchmark_model_gpu_not_full.txt")) is None


def test_tflite_text_and_litert_text_and_result_file():
    t = parse_benchmark_model(printed("tflite_benchmark_model_cpu.txt"))
    assert (t.mean_us, t.runs, t.warmup_runs, t.min_us) == (8.46, 50, 10, 7.0)
    text = parse_litert_model(printed("litert_benchmark_model_cpu.txt"))
    assert (text.mean_us, text.std_us, text.runs, text.warmup_runs) == (10.0, 0.0, 50, 10)
    exact = parse_result_file(result_file_bytes(**LITERT_RESULT))  # what the runner uses
    assert (exact.mean_us, exact.median_us, exact.runs) == (8.46, 8.12, 50)
    assert exact.extra["p5_us"] == 7.1 and exact.extra["init_us"] == 3418.0
    with pytest.raises(ParseError, match="no latency_metrics.avg_ms"):
        parse_result_file(b"")
    with pytest.raises(ParseError, match="not a BenchmarkResult"):
        parse_result_file(b"\xff\xff\xff")
    with pytest.raises(ParseError, match="no '========== BENCHMARK RESULTS"):
        parse_litert_model(printed("litert_benchmark_model_gpu_not_full.txt"))


def test_unconsumed_flags_and_partial_delegation_in_the_tools_words():
    assert unconsumed(printed("tflite_benchmark_model_unconsumed.txt")) == [
        "--num_threads=4", "--use_profiler=true"]
    assert unconsumed(printed("tflite_benchmark_model_cpu.txt")) == []
    assert "partially executed by the delegate w/ 2" in delegation_problem(
        printed("tflite_benchmark_model_gpu_partial.txt"))
    assert delegation_problem(printed("tflite_benchmark_model_gpu_disallowed.txt")) == \
        "ERROR: Disallowed CPU fallback detected."
    assert delegation_problem(printed("tflite_benchmark_model_cpu.txt")) is None


def test_each_tool_gets_its_own_flags_once():
    gpu = RunSpec(threads=1, runs=50, warmup=10, min_secs=0, gpu=True, half=False,
                  result_file="/r.pb")
    tfl = tool_flags(TFLITE, "/m.tflite", gpu)
    assert tfl["gpu_precision_loss_allowed"] == "false" and tfl["require_full_delegation"] == "true"
    assert "result_file_path" not in tfl and "use_cpu" not in tfl
    lrt = tool_flags(LITERT, "/m.tflite", gpu)
    assert (lrt["use_cpu"], lrt["gpu-precision"], lrt["result_file_path"]) == ("false", "fp32",
                                                                               "/r.pb")
    assert "gpu_precision_loss_allowed" not in lrt
    prof = RunSpec(threads=1, runs=5, warmup=1, op_profile=True)
    assert tool_flags(LITERT, "/m", prof)["use_profiler"] == "true"
    assert tool_flags(TFLITE, "/m", prof)["enable_op_profiling"] == "true"
    args = render(merged(tfl, parse_extra_args(["--num_threads=4", "--use_xnnpack=true"])))
    assert [a for a in args if a.startswith("--num_threads")] == ["--num_threads=4"]
    assert "--use_xnnpack=true" in args
