"""Parsers of stock tool output, against fixtures in tests/fixtures/outputs/.

litert_benchmark_* are real captures of `.venv/bin/litert-benchmark` (ai-edge-litert 2.3.0)
on this machine, on single-ADD float32 models (x + x, 1x56x56x64 and 1x224x224x64) written
with ai_edge_litert.schema_py_generated:
  stdout_cpu:   --num_runs 50 --warmup_runs 3 --num_threads 1 --result_json ...  (stdout only)
  combined_cpu: the 224 model, --num_runs 30 --warmup_runs 2, 2>&1; result.json is its JSON
  no_warmup:    --num_runs 5 --warmup_runs 0 (stdout);  verbose: --num_runs 20 --verbose, 2>&1
  missing_model: --model missing.tflite, 2>&1 (exit 1)
benchmark_model_* and snpe_diagview_* follow the documented formats
(/work/shared/formats/README.md) and public sample output, since neither tool runs here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.runners.base import Timing
from bench.runners.parse import (
    OpTiming,
    ParseError,
    parse_benchmark_model,
    parse_litert_benchmark,
    parse_op_profile,
)
from bench.runners.snpe_diagview import LayerTime, parse_snpe_diagview

FIXTURES = Path(__file__).parent / "fixtures" / "outputs"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


# ---- TFLite benchmark_model ------------------------------------------------------------

def test_benchmark_model_info_prefix_count_exceeds_num_runs():
    text = fixture("benchmark_model_info_prefix.txt")
    assert "Min num runs: [50]" in text
    t = parse_benchmark_model(text)
    assert isinstance(t, Timing)
    assert t.runs == 167  # --min_secs=2 kept the loop going past --num_runs=50
    assert t.warmup_runs == 41
    assert (t.mean_us, t.std_us, t.min_us, t.max_us) == (11968.2, 187.0, 11744.0, 13310.0)
    assert t.median_us is None and t.latency_us == 11968.2
    assert t.samples_us == ()
    assert t.extra["first_us"] == 11950.0  # first *timed* run, not the first inference
    assert t.extra["first_inference_us"] == 14093.0
    assert t.extra["init_us"] == 3501.0
    assert t.extra["warmup_avg_us"] == 12175.4
    assert t.extra["memory_delta_init_mb"] == 4.5
    assert t.extra["memory_delta_overall_mb"] == 12.3
    assert t.extra["peak_memory_mb"] == 20.1


def test_benchmark_model_without_prefix_matches_with_prefix():
    with_prefix = fixture("benchmark_model_info_prefix.txt")
    without = "\n".join(line.removeprefix("INFO: ") for line in with_prefix.splitlines())
    assert parse_benchmark_model(without) == parse_benchmark_model(with_prefix)


def test_benchmark_model_older_average_form():
    t = parse_benchmark_model(fixture("benchmark_model_old_average.txt"))
    assert (t.runs, t.warmup_runs, t.mean_us, t.std_us) == (50, 7, 79760.9, 1929.0)
    assert t.extra["init_us"] == 38467.0
    assert t.extra["warmup_avg_us"] == 80544.1
    assert t.extra["first_us"] == 79449.0


def test_benchmark_model_oldest_no_stats_and_all_same_lines():
    # "count=1 curr=352" and "count=3 curr=178(all same)": Stat prints no avg/std then.
    t = parse_benchmark_model(fixture("benchmark_model_old_nostats_all_same.txt"))
    assert (t.runs, t.warmup_runs) == (3, 1)
    assert t.mean_us == t.min_us == t.max_us == 178.0
    assert t.std_us == 0.0
    assert t.extra["inference_avg_us"] == 178.0


def test_benchmark_model_scientific_notation_avg():
    text = ("Running benchmark for at least 1 iterations and at least 0.5 seconds\n"
            "count=1 curr=1400000\n"
            "Running benchmark for at least 5 iterations and at least 1 seconds\n"
            "count=5 first=1300000 curr=1234000 min=1200000 max=1300000 avg=1.23457e+06 std=40000\n"
            "Inference timings in us: Init: 2.1e+06, First inference: 1400000, "
            "Warmup (avg): 1.4e+06, Inference (avg): 1.23457e+06\n")
    t = parse_benchmark_model(text)
    assert t.mean_us == 1234570.0
    assert t.extra["init_us"] == 2100000.0


@pytest.mark.parametrize("name", ["benchmark_model_gpu_op_profiling.txt",
                                  "benchmark_model_xnnpack_op_profiling.txt"])
def test_benchmark_model_ignores_op_profiling_timings_line(name):
    text = fixture(name)
    t = parse_benchmark_model(text)
    profiling = [ln for ln in text.splitlines() if ln.startswith("Timings (microseconds)")][-1]
    assert f"count={t.runs} " in text
    assert f"avg={t.mean_us:g}" not in profiling  # the main line, not the profiler's
    assert t.runs == int(profiling.split("count=")[1].split()[0])  # same runs, other numbers


def test_benchmark_model_gpu_fields():
    t = parse_benchmark_model(fixture("benchmark_model_gpu_op_profiling.txt"))
    assert (t.runs, t.warmup_runs, t.mean_us) == (110, 56, 8680.33)
    assert t.extra["peak_memory_overall_mb"] == 63.4883
    assert t.extra["model_size_mb"] == 3.79893


def test_benchmark_model_failure_is_parse_error_quoting_tool():
    with pytest.raises(ParseError, match="Inference timings in us") as err:
        parse_benchmark_model(fixture("benchmark_model_failed.txt"))
    assert "Didn't find op for builtin opcode" in str(err.value)


def test_benchmark_model_truncated_is_parse_error():
    with pytest.raises(ParseError, match="truncated"):
        parse_benchmark_model(fixture("benchmark_model_truncated.txt"))


@pytest.mark.parametrize("text", ["", "garbage\nnot a benchmark\n", "count=banana",
                                  "Inference timings in us: Init: 1, Inference (avg): 2\n"])
def test_benchmark_model_garbage_is_parse_error(text):
    with pytest.raises(ParseError):
        parse_benchmark_model(text)


def test_op_profile_newer_header_xnnpack_rows():
    ops = parse_op_profile(fixture("benchmark_model_xnnpack_op_profiling.txt"))
    assert [o.node_type for o in ops] == [
        "Convolution (NHWC, F32) IGEMM", "Convolution (NHWC, F32) DWConv",
        "Convolution (NHWC, F32) GEMM", "Add (ND, F32)", "Mean (ND) Mean",
        "Fully Connected (NC, F32) GEMM"]  # Run Order of the benchmark runs, not init/top
    assert ops[0] == OpTiming("Convolution (NHWC, F32) IGEMM",
                              "Delegate/Convolution (NHWC, F32) IGEMM:0", 1.180, 24.512, 1)
    assert sum(o.percent for o in ops) == pytest.approx(100.0, abs=0.01)


def test_op_profile_older_header_with_start_column():
    ops = parse_op_profile(fixture("benchmark_model_gpu_op_profiling.txt"))
    assert ops == [OpTiming("TfLiteGpuDelegateV2", "[Identity]:77", 8.671, 100.0, 1)]


def test_op_profile_space_separated_table_without_title():
    ops = parse_op_profile(fixture("benchmark_model_old_nostats_all_same.txt"))
    assert [(o.node_type, o.name) for o in ops][:2] == [
        ("Misc Runtime Ops", "AllocateTensors/0"), ("FULLY_CONNECTED", "[dense_3/BiasAdd]:0")]
    assert ops[-1] == OpTiming("TANH", "[dense_4/Tanh]:3", 0.008, 4.267, 0)


def test_op_profile_absent_is_parse_error():
    with pytest.raises(ParseError, match="enable_op_profiling"):
        parse_op_profile(fixture("benchmark_model_info_prefix.txt"))


# ---- litert-benchmark (real captures) --------------------------------------------------

def test_litert_benchmark_stdout():
    t = parse_litert_benchmark(fixture("litert_benchmark_stdout_cpu.txt"))
    assert (t.runs, t.warmup_runs) == (50, 3)
    assert (t.median_us, t.mean_us, t.min_us, t.max_us, t.std_us) == (20.0, 20.0, 20.0,
                                                                      120.0, 10.0)
    assert t.latency_us == 20.0
    assert t.extra["resolution_us"] == 10.0  # 2-decimal milliseconds
    assert t.extra["init_us"] == 2270.0
    assert t.extra["fully_accelerated"] is True


def test_litert_benchmark_with_logs_on_stderr_mixed_in():
    t = parse_litert_benchmark(fixture("litert_benchmark_combined_cpu.txt"))
    assert (t.runs, t.warmup_runs, t.median_us, t.mean_us) == (30, 2, 890.0, 920.0)
    assert (t.extra["p5_us"], t.extra["p95_us"]) == (880.0, 980.0)
    assert t.extra["warmup_first_us"] == 8430.0


def test_litert_benchmark_no_warmup_and_verbose():
    t = parse_litert_benchmark(fixture("litert_benchmark_no_warmup.txt"))
    assert (t.runs, t.warmup_runs) == (5, 0)
    v = parse_litert_benchmark(fixture("litert_benchmark_verbose.txt"))
    assert (v.runs, v.warmup_runs, v.median_us) == (20, 2, 30.0)


def test_litert_benchmark_failed_run_quotes_error():
    with pytest.raises(ParseError, match="Model file not found"):
        parse_litert_benchmark(fixture("litert_benchmark_missing_model.txt"))


def test_litert_benchmark_truncated_block():
    text = fixture("litert_benchmark_stdout_cpu.txt")
    cut = text[: text.index("Inference (median)")]
    with pytest.raises(ParseError, match=r"Inference \(median\)"):
        parse_litert_benchmark(cut)


# ---- snpe-diagview ---------------------------------------------------------------------

def test_diagview_gpu_layers_in_us():
    p = parse_snpe_diagview(fixture("snpe_diagview_2x_gpu.txt"))
    assert (p.total_inference_us, p.forward_us, p.init_us) == (11676.0, 11642.0, 903746.0)
    assert p.layer_times[0] == LayerTime(0, 144.0, "us", "GPU")
    assert [lt.index for lt in p.layer_times] == [0, 1, 2, 3, 4]
    assert p.extra["sdk_version"] == "2.9.0.4462"
    assert p.extra["rpc_init_time_us"] == 0.0  # printed as "0 NONE"


def test_diagview_dsp_layers_in_cycles():
    p = parse_snpe_diagview(fixture("snpe_diagview_2x_dsp_cycles.txt"))
    assert p.total_inference_us == 3318.0
    assert p.layer_times[1] == LayerTime(1, 162014.0, "cycles", "DSP")
    assert {lt.unit for lt in p.layer_times} == {"cycles"}
    assert p.extra["rpc_execute_time_us"] == 1777.0
    assert p.extra["accelerator_time_us"] == 603.0


def test_diagview_2_37_named_layers_and_subnets():
    p = parse_snpe_diagview(fixture("snpe_diagview_2_37_htp_named_layers.txt"))
    assert (p.total_inference_us, p.forward_us, p.init_us) == (1328.0, 1315.0, 158658.0)
    assert len(p.layer_times) == 6
    assert p.layer_names[1] == "conv2d_1/Conv2D:OpId_18 (cycles)"  # ':' inside the name
    assert p.layer_times[5] == LayerTime(5, 6038.0, "cycles", "DSP")
    assert p.extra["subnets"] == [(0, "DSP", 13545.0, "cycles")]
    assert p.extra["num_times_yield_occurred"] == 0.0
    cpu = parse_snpe_diagview(fixture("snpe_diagview_2_37_cpu_named_layers.txt"))
    assert cpu.layer_names[0] == "_sequential_1/dense_1/MatMul"
    assert cpu.extra["rpc_execute_time_us"] == 0.0  # printed without a unit


def test_diagview_1x_layers_without_runtime():
    p = parse_snpe_diagview(fixture("snpe_diagview_1x_no_layer_runtime.txt"))
    assert p.total_inference_us == 21987.0
    assert p.layer_times[2] == LayerTime(2, 9012.0, "us", None)


def test_diagview_prefers_averaged_section():
    text = ("Execute Statistics (Run 1):\nTotal Inference Time: 900 us\n"
            "Average SNPE Statistics:\nTotal Inference Time: 500 us\n"
            "Forward Propagate Time: 480 us\nLayer Times:\n0: 10 us : GPU\n")
    p = parse_snpe_diagview(text)
    assert (p.total_inference_us, p.forward_us, p.init_us) == (500.0, 480.0, None)
    assert p.layer_times == [LayerTime(0, 10.0, "us", "GPU")]


@pytest.mark.parametrize("text", ["", "garbage\n0: 12 us : GPU\n"])
def test_diagview_garbage(text):
    with pytest.raises(ParseError, match="Total Inference Time"):
        parse_snpe_diagview(text)


def test_diagview_truncated():
    with pytest.raises(ParseError, match="Total Inference Time"):
        parse_snpe_diagview(fixture("snpe_diagview_truncated.txt"))
