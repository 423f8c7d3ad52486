"""The ``BenchmarkResult`` proto that LiteRT's ``benchmark_model --result_file_path``
writes, read with protobuf (the message is built from its descriptor at run time).

Schema: tflite/tools/benchmark/proto/benchmark_result.proto (package
tflite.tools.benchmark). The latencies are float milliseconds: the file keeps the
digits the tool's "%.2f ms" summary drops, so a 5 us layer is not "0.00 ms".
"""

from __future__ import annotations

import functools
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from bench.runners.base import Timing
from bench.runners.parse import ParseError

PACKAGE = "tflite.tools.benchmark"
_F = descriptor_pb2.FieldDescriptorProto
# message -> (field name, number, type, message type name) as in benchmark_result.proto
SCHEMA: dict[str, list[tuple[str, int, int, str]]] = {
    "LatencyMetrics": [(name, i + 1, _F.TYPE_FLOAT, "") for i, name in enumerate(
        ("avg_ms", "min_ms", "max_ms", "stddev_ms", "median_ms", "p5_ms", "p95_ms", "init_ms",
         "first_inference_ms", "average_warm_up_ms"))],
    "MemoryMetrics": [("init_footprint_kb", 1, _F.TYPE_INT64, ""),
                      ("overall_footprint_kb", 2, _F.TYPE_INT64, ""),
                      ("peak_mem_mb", 3, _F.TYPE_FLOAT, "")],
    "MiscMetrics": [("model_size_mb", 1, _F.TYPE_FLOAT, ""), ("num_runs", 2, _F.TYPE_INT32, ""),
                    ("num_warmup_runs", 3, _F.TYPE_INT32, ""),
                    ("model_throughput_in_mb_per_sec", 4, _F.TYPE_FLOAT, "")],
    "BenchmarkResult": [("name", 1, _F.TYPE_STRING, ""),
                        ("latency_metrics", 2, _F.TYPE_MESSAGE, "LatencyMetrics"),
                        ("memory_metrics", 3, _F.TYPE_MESSAGE, "MemoryMetrics"),
                        ("misc_metrics", 4, _F.TYPE_MESSAGE, "MiscMetrics")],
}


@functools.cache
def message_class() -> Any:
    """The BenchmarkResult message class (proto2, every field optional)."""
    file = descriptor_pb2.FileDescriptorProto(
        name="benchmark_result.proto", package=PACKAGE, syntax="proto2")
    for name, fields in SCHEMA.items():
        msg = file.message_type.add(name=name)
        for fname, number, ftype, ref in fields:
            field = msg.field.add(name=fname, number=number, type=ftype,
                                  label=_F.LABEL_OPTIONAL)
            if ref:
                field.type_name = f".{PACKAGE}.{ref}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{PACKAGE}.BenchmarkResult"))


def _us(ms: float) -> float:
    return round(float(ms) * 1000.0, 3)  # float32 ms -> us, to the nanosecond


def parse_result_file(data: bytes) -> Timing:
    """Timing (median, mean, spread, runs, percentiles) of one result file."""
    result = message_class()()
    try:
        result.ParseFromString(data)
    except DecodeError as e:
        raise ParseError(f"the benchmark result file is not a BenchmarkResult proto: {e}") from None
    lat, misc = result.latency_metrics, result.misc_metrics
    if not result.HasField("latency_metrics") or not lat.HasField("avg_ms"):
        raise ParseError("the benchmark result file has no latency_metrics.avg_ms "
                         f"({len(data)} bytes: truncated or empty)")
    if misc.num_runs <= 0:
        raise ParseError("the benchmark result file says no timed run was made (num_runs=0)")
    extra: dict[str, Any] = {"source": "result_file"}
    for field, name in (("p5_ms", "p5_us"), ("p95_ms", "p95_us"), ("init_ms", "init_us"),
                        ("first_inference_ms", "warmup_first_us"),
                        ("average_warm_up_ms", "warmup_avg_us")):
        if lat.HasField(field):
            extra[name] = _us(getattr(lat, field))
    return Timing(
        median_us=_us(lat.median_ms) if lat.HasField("median_ms") else None,
        mean_us=_us(lat.avg_ms), std_us=_us(lat.stddev_ms), min_us=_us(lat.min_ms),
        max_us=_us(lat.max_ms), runs=misc.num_runs, warmup_runs=misc.num_warmup_runs,
        extra=extra)


def result_file_bytes(**fields: Any) -> bytes:
    """A serialized BenchmarkResult (``latency_metrics={...}``, ``misc_metrics={...}``)."""
    msg = message_class()()
    for part, values in fields.items():
        sub = getattr(msg, part) if isinstance(values, dict) else None
        if sub is None:
            setattr(msg, part, values)
            continue
        for k, v in values.items():
            setattr(sub, k, v)
    return msg.SerializeToString()
