"""Parsers of the stock benchmark tools' text output. Pure functions, no I/O.

Formats (see /work/shared/formats/README.md):

- TFLite ``benchmark_model`` (tensorflow/lite/tools/benchmark): the ``count=... avg=...``
  statistics lines, the "Inference timings in us" summary (and its older "Average
  inference timings in us" form), memory lines, and the ``--enable_op_profiling`` tables.
- LiteRT's CompiledModel ``benchmark_model`` (litert/tools/benchmark_litert_model.h):
  the "========== BENCHMARK RESULTS ==========" block, each line behind LITERT_LOG's
  ``INFO: [file:line]`` prefix (its result file is read by benchmark_result.py).
- ai-edge-litert ``litert-benchmark`` (tools/benchmark_litert_model.py): the
  "BENCHMARK RESULTS" block.
Qualcomm's ``snpe-diagview`` output is read in ``snpe_diagview.py``. Every parser raises
:class:`ParseError` naming what it did not find.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from bench.runners.base import Timing


class ParseError(ValueError):
    """The tool output does not contain what the parser needs (failed or truncated run)."""


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"  # C++ ostream may print 1.23457e+06
# TFLITE_LOG's "INFO: " (tflite/tools/logging.h); LITERT_LOG adds "[file.h:99] "
_LOG_PREFIX = re.compile(r"^(?:INFO|WARN|WARNING|ERROR|VERBOSE|DEBUG):\s+(?:\[[\w.]+:\d+\]\s?)?")
_ERROR_LINE = re.compile(r"\bERROR\b|Benchmarking failed|Failed to|error:", re.IGNORECASE)


def _strip_prefix(line: str) -> str:
    """A benchmark_model line without surrounding blanks and the ``INFO: `` prefix."""
    return _LOG_PREFIX.sub("", line.strip())


def tool_said(text: str) -> str:
    """The first error-looking line of the output, to make a ParseError actionable."""
    for line in text.splitlines():
        if _ERROR_LINE.search(line):
            return f"; tool said: {line.strip()[:200]!r}"
    if not text.strip():
        return "; the output is empty"
    return ""


def _ms_to_us(value: float | str) -> float:
    # 2-decimal milliseconds -> microseconds without float noise (0.92 ms -> 920.0 us).
    return round(float(value) * 1000.0, 3)


# --------------------------------------------------------------------------------------
# TFLite benchmark_model
# --------------------------------------------------------------------------------------

class _Stat(NamedTuple):
    count: int
    first: float
    curr: float
    min: float
    max: float
    avg: float
    std: float


def _parse_stat(rest: str) -> _Stat:
    """Fields of one ``count=...`` line (tensorflow/core/util/stats_calculator.h Stat).

    Stat::OutputToStream prints ``count=0`` when empty, ``count=N curr=X`` plus
    ``(all same)`` when every sample is equal, else count/first/curr/min/max/avg/std.
    """
    kv = {k: float(v) for k, v in re.findall(rf"(\w+)=({_NUM})", rest)}
    count = int(kv.get("count", 0))
    if "avg" not in kv:  # empty or all-same form
        curr = kv.get("curr", 0.0)
        return _Stat(count, curr, curr, curr, curr, curr, 0.0)
    return _Stat(count, kv.get("first", kv["avg"]), kv.get("curr", kv["avg"]),
                 kv.get("min", kv["avg"]), kv.get("max", kv["avg"]), kv["avg"],
                 kv.get("std", 0.0))


_SUMMARY = re.compile(r"^(?:Average )?[Ii]nference timings in us:\s*(.*)$")
_SUMMARY_KEYS = {
    "init": "init_us",
    "first inference": "first_inference_us",
    "warmup (avg)": "warmup_avg_us",
    "warmup": "warmup_avg_us",  # older form: "Warmup: <avg>"
    "inference (avg)": "inference_avg_us",
    "inference": "inference_avg_us",
    "no stats": "inference_avg_us",  # oldest form
}
_MEMORY = [
    (re.compile(rf"Memory footprint delta from the start of the tool \(MB\): "
                rf"init=({_NUM}) overall=({_NUM})"),
     ("memory_delta_init_mb", "memory_delta_overall_mb")),
    (re.compile(rf"^Peak memory footprint \(MB\): init=({_NUM}) overall=({_NUM})"),
     ("peak_memory_init_mb", "peak_memory_overall_mb")),
    (re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: ({_NUM})"),
     ("peak_memory_mb",)),
    (re.compile(rf"The input model file size \(MB\): ({_NUM})"), ("model_size_mb",)),
]


def _summary_fields(rest: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in rest.split(","):
        key, sep, value = part.partition(":")
        name = _SUMMARY_KEYS.get(key.strip().lower())
        if sep and name and re.fullmatch(_NUM, value.strip()):
            out[name] = float(value.strip())
    return out


def parse_benchmark_model(text: str) -> Timing:
    """Timing of the timed phase of a stock TFLite ``benchmark_model`` run.

    benchmark_model prints one ``count=`` line after each "Running benchmark for at
    least ..." line: first the warm-up phase, then the timed phase, then the
    "Inference timings in us" summary. The timed line is the last ``count=`` line
    before the summary (op-profiling ``Timings (microseconds): count=`` lines start
    with "Timings" and are never taken). ``count`` is read, not assumed: with
    --min_secs it can exceed --num_runs. No median is reported: ``median_us`` is None
    and the LUT falls back to the mean. ``first_us`` is the first *timed* run.
    A missing summary line means a failed or truncated run: ParseError.
    """
    stats: list[_Stat] = []
    summary: dict[str, float] | None = None
    extra: dict[str, Any] = {}
    for raw in text.splitlines():
        line = _strip_prefix(raw)
        if line.startswith("count=") and summary is None:
            stats.append(_parse_stat(line))
            continue
        m = _SUMMARY.match(line)
        if m and summary is None:
            summary = _summary_fields(m.group(1))
            continue
        for pattern, names in _MEMORY:
            mm = pattern.search(line)
            if mm:
                extra.update({n: float(v) for n, v in zip(names, mm.groups())})
    if summary is None:
        raise ParseError("benchmark_model output has no 'Inference timings in us' line "
                         f"(failed or truncated run){tool_said(text)}")
    if not stats:
        raise ParseError("benchmark_model output has no 'count=' statistics line before "
                         f"'Inference timings in us'{tool_said(text)}")
    timed = stats[-1]
    if timed.count <= 0:
        raise ParseError("benchmark_model timed phase has 'count=0': no run was measured")
    warmup = stats[-2] if len(stats) >= 2 else None
    extra.update(summary)
    extra["first_us"] = timed.first
    if warmup is not None:
        extra.setdefault("warmup_avg_us", warmup.avg)
    return Timing(
        median_us=None,
        mean_us=timed.avg,
        std_us=timed.std,
        min_us=timed.min,
        max_us=timed.max,
        runs=timed.count,
        warmup_runs=warmup.count if warmup is not None else 0,
        extra=extra,
    )


@dataclass(frozen=True)
class OpTiming:
    """One row of benchmark_model's op-profiling "Run Order" table."""

    node_type: str
    name: str
    avg_ms: float
    percent: float
    times_called: int


_TABLE_TITLE = re.compile(r"^=+ (.+?) =+$")
_COLUMN = re.compile(r"\[([^\]]+)\]")


def _row_fields(line: str, ncols: int) -> list[str] | None:
    """Split a table row into ``ncols`` fields: tab-separated, else by whitespace."""
    if "\t" in line:
        fields = [f.strip() for f in line.split("\t")]
        while fields and not fields[0]:
            fields.pop(0)  # the rows start with a tab
        if len(fields) == ncols:
            return fields
    # Tabs lost (copied logs): node type, ncols-2 numbers, then the name.
    nums = r"\s+".join([rf"({_NUM}%?)"] * (ncols - 2))
    m = re.match(rf"^\s*(.+?)\s+{nums}\s+(.*?)\s*$", line)
    return list(m.groups()) if m else None


def _parse_table(lines: list[str], start: int) -> list[OpTiming]:
    """The Run Order table whose header line is ``lines[start]``."""
    columns = [c.strip().lower() for c in _COLUMN.findall(lines[start])]
    need = ("node type", "avg ms", "%", "times called", "name")
    if not all(c in columns for c in need):
        raise ParseError(f"op profile header lacks one of {need}: {lines[start].strip()!r}")
    col = {c: columns.index(c) for c in need}
    rows: list[OpTiming] = []
    for line in lines[start + 1:]:
        if not line.strip() or line.strip().startswith("="):
            break
        fields = _row_fields(line, len(columns))
        if fields is None:
            break
        rows.append(OpTiming(
            node_type=fields[col["node type"]],
            name=fields[col["name"]],
            avg_ms=float(fields[col["avg ms"]]),
            percent=float(fields[col["%"]].rstrip("%")),
            times_called=int(float(fields[col["times called"]])),
        ))
    return rows


def parse_op_profile(text: str) -> list[OpTiming]:
    """Per-op rows of the "Run Order" table of ``--enable_op_profiling=true`` output.

    Newer builds print two profiles, "Profiling Info for Benchmark Initialization"
    (ModifyGraphWithDelegate, AllocateTensors) and "Operator-wise Profiling Info for
    Regular Benchmark Runs"; the latter is returned. Columns are read from the header
    (newer builds dropped ``[start]``); node types may contain spaces (XNNPACK's
    "Convolution (NHWC, F32) IGEMM"), so rows are split on tabs. A table header
    without its "=== Run Order ===" title (old builds) counts as Run Order; the
    "Top by Computation Time" table never does.
    """
    lines = [_strip_prefix(raw) if raw.strip().startswith("INFO:") else raw
             for raw in text.splitlines()]
    tables: list[tuple[str, list[OpTiming]]] = []
    phase, title = "unknown", None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if "Profiling Info for Benchmark Initialization" in stripped:
            phase = "init"
        elif "Profiling Info for Regular Benchmark Runs" in stripped:
            phase = "runs"
        elif (m := _TABLE_TITLE.match(stripped)):
            title = m.group(1)
        elif "[node type]" in stripped and "[Name]" in stripped:
            if title in (None, "Run Order"):
                tables.append((phase, _parse_table(lines, i)))
            title = None
    candidates = [t for p, t in tables if p == "runs"] or [t for p, t in tables if p != "init"]
    if not candidates:
        raise ParseError("no 'Run Order' op-profiling table of the benchmark runs in the "
                         "output (was --enable_op_profiling=true passed?)")
    return candidates[-1]


# --------------------------------------------------------------------------------------
# LiteRT's CompiledModel benchmark_model (text summary)
# --------------------------------------------------------------------------------------

_COMPILED_LINE = re.compile(rf"^([A-Z][A-Za-z ()]*?):\s+({_NUM})(?: ms)?(?: \((\d+) runs\))?")
_COMPILED_KEYS = {"Model initialization": "init_us", "Warmup (first)": "warmup_first_us",
                  "Warmup (avg)": "warmup_avg_us", "Inference (avg)": "mean",
                  "Inference (min)": "min", "Inference (max)": "max", "Inference (std)": "std"}


def parse_litert_model(text: str) -> Timing:
    """Timing from the summary of LiteRT's CompiledModel ``benchmark_model``
    (benchmark_litert_model.h, OnBenchmarkEnd): "%.2f ms" values, so 10 us steps; the
    runner reads the result file instead whenever there is one. ``Inference (std)`` is
    printed in ms without its unit. No median in the text: ``median_us`` is None."""
    lines = [_strip_prefix(raw) for raw in text.splitlines()]
    starts = [i for i, line in enumerate(lines) if line.startswith("========== BENCHMARK RESULTS")]
    if not starts:
        raise ParseError("benchmark_model output has no '========== BENCHMARK RESULTS "
                         f"==========' block (failed or truncated run){tool_said(text)}")
    values: dict[str, float] = {}
    runs: dict[str, int] = {}
    for line in lines[starts[-1] + 1:]:
        if line.startswith("====="):
            break
        m = _COMPILED_LINE.match(line)
        if m and m.group(1) in _COMPILED_KEYS:
            name = _COMPILED_KEYS[m.group(1)]
            values[name] = _ms_to_us(m.group(2))
            if m.group(3):
                runs[name] = int(m.group(3))
    missing = [k for k, n in _COMPILED_KEYS.items() if n in ("mean", "min", "max", "std")
               and n not in values]
    if missing or not runs.get("mean"):
        what = ", ".join(repr(k) for k in missing) or "'(N runs)' on 'Inference (avg)'"
        raise ParseError(f"benchmark_model BENCHMARK RESULTS lacks {what} (no timed run?)")
    extra: dict[str, Any] = {k: v for k, v in values.items() if k.endswith("_us")}
    extra.update(resolution_us=LITERT_RESOLUTION_US, source="text")
    return Timing(median_us=None, mean_us=values["mean"], std_us=values["std"],
                  min_us=values["min"], max_us=values["max"], runs=runs["mean"],
                  warmup_runs=runs.get("warmup_avg_us", 0), extra=extra)


# --------------------------------------------------------------------------------------
# ai-edge-litert litert-benchmark
# --------------------------------------------------------------------------------------

_LITERT_LINE = re.compile(r"^([A-Z][A-Za-z0-9 ()]*?):\s+(.+?)\s*$")
_LITERT_MS = re.compile(rf"^({_NUM}) ms(?: \((\d+) runs\))?$")
_LITERT_REQUIRED = ("Inference (avg)", "Inference (min)", "Inference (max)",
                    "Inference (median)", "Inference (std)")
# litert-benchmark rounds to 0.01 ms: a LUT entry below ~100 us is coarse.
LITERT_RESOLUTION_US = 10.0


def parse_litert_benchmark(text: str) -> Timing:
    """Timing from the "BENCHMARK RESULTS" block printed by ``litert-benchmark``.

    Format from ai_edge_litert/tools/benchmark_litert_model.py: ``Key:  <v> ms`` lines
    with 2 decimals (converted to us), the run counts in ``(N runs)``, a median.
    Optional lines (p5/p95, Throughput, Fully accelerated) go to ``extra``.
    """
    start = text.rfind("BENCHMARK RESULTS")
    if start < 0:
        raise ParseError(f"no 'BENCHMARK RESULTS' block in litert-benchmark output{tool_said(text)}")
    values: dict[str, tuple[float, int | None]] = {}
    extra: dict[str, Any] = {"resolution_us": LITERT_RESOLUTION_US}
    for line in text[start:].splitlines()[1:]:
        m = _LITERT_LINE.match(line.strip())
        if not m:
            if values and line.strip().startswith("="):
                break  # closing rule of the block
            continue
        key, value = m.groups()
        ms = _LITERT_MS.match(value)
        if ms:
            values[key] = (_ms_to_us(ms.group(1)), int(ms.group(2)) if ms.group(2) else None)
        elif key == "Throughput":
            extra["throughput_mb_s"] = float(value.split()[0])
        elif key == "Fully accelerated":
            extra["fully_accelerated"] = value == "True"
    missing = [k for k in _LITERT_REQUIRED if k not in values]
    if missing or values["Inference (avg)"][1] is None:
        what = ", ".join(repr(k) for k in missing) or "'(N runs)' on 'Inference (avg)'"
        raise ParseError(f"litert-benchmark BENCHMARK RESULTS lacks {what} (truncated output?)")
    optional = {"Model initialization": "init_us", "Warmup (first)": "warmup_first_us",
                "Warmup (avg)": "warmup_avg_us", "Inference (p5)": "p5_us",
                "Inference (p95)": "p95_us"}
    extra.update({name: values[key][0] for key, name in optional.items() if key in values})
    warmup_runs = values.get("Warmup (avg)", (0.0, 0))[1] or 0
    return Timing(
        median_us=values["Inference (median)"][0],
        mean_us=values["Inference (avg)"][0],
        std_us=values["Inference (std)"][0],
        min_us=values["Inference (min)"][0],
        max_us=values["Inference (max)"][0],
        runs=values["Inference (avg)"][1] or 0,
        warmup_runs=warmup_runs,
        extra=extra,
    )
