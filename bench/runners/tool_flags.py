"""The benchmark tools a phone may have, the flags each one takes, and what their
output says about a run beyond its numbers.

Two binaries are called ``benchmark_model``: TFLite's (tflite/tools/benchmark,
"Inference timings in us") and LiteRT's CompiledModel one
(litert/tools/benchmark_litert_model.*, "========== BENCHMARK RESULTS =========="). A
probe run tells them apart. ``litert-benchmark`` is ai-edge-litert's Python tool.

Flags are one mapping per model, built once: the tools' parser
(tflite/tools/command_line_flags.cc) takes the *first* occurrence of a flag and only
logs a later copy as "Unconsumed cmdline flags", so ``extra_args`` replace entries of
the mapping instead of being appended.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

TFLITE = "tflite-benchmark_model"
LITERT = "litert-benchmark_model"
LITERT_PY = "litert-benchmark"
FLAVORS = (TFLITE, LITERT, LITERT_PY)

# the line each flavor's summary starts with (what the probe looks for)
SUMMARY_LINE = {TFLITE: "Inference timings in us", LITERT: "========== BENCHMARK RESULTS",
                LITERT_PY: "BENCHMARK RESULTS"}
OP_PROFILE_FLAG = {TFLITE: "enable_op_profiling", LITERT: "use_profiler"}

Flags = dict[str, str | None]  # name -> value; None: a bare switch (--use_gpu)


@dataclass(frozen=True)
class RunSpec:
    """What one run of the tool is asked to do."""

    threads: int
    runs: int
    warmup: int
    min_secs: float | None = None
    gpu: bool = False
    half: bool = False  # the model stores float16 weights
    full_delegation: bool = True  # GPU only, when the binary knows the flag
    result_file: str | None = None  # LiteRT's --result_file_path
    op_profile: bool = False


def identify(output: str) -> str | None:
    """Which ``benchmark_model`` printed ``output`` (None: neither summary is there)."""
    if SUMMARY_LINE[LITERT] in output:
        return LITERT
    if SUMMARY_LINE[TFLITE] in output:
        return TFLITE
    return None


def base_flags(model: str, spec: RunSpec) -> Flags:
    """Flags both ``benchmark_model``s take (their shared BenchmarkModel base): enough
    to run the probe model before the flavor is known."""
    flags: Flags = {"graph": model, "num_threads": str(spec.threads),
                    "num_runs": str(spec.runs), "warmup_runs": str(spec.warmup)}
    if spec.min_secs is not None:
        flags["min_secs"] = f"{spec.min_secs:g}"
        flags["warmup_min_secs"] = f"{spec.min_secs:g}"
    return flags


def tool_flags(flavor: str, model: str, spec: RunSpec) -> Flags:
    """The whole mapping of one run's flags for ``flavor``."""
    if flavor == LITERT_PY:
        flags: Flags = {"model": model, "num_runs": str(spec.runs),
                        "warmup_runs": str(spec.warmup), "num_threads": str(spec.threads)}
        if spec.gpu:
            flags["use_gpu"] = None
        return flags
    flags = base_flags(model, spec)
    if flavor == TFLITE and spec.gpu:
        # precision follows the model: fp32 keys are not timed in fp16 (the default)
        flags["use_gpu"] = "true"
        flags["gpu_precision_loss_allowed"] = "true" if spec.half else "false"
    elif flavor == LITERT and spec.gpu:
        # use_cpu with require_full_delegation aborts the tool: the CPU must be off
        flags.update({"use_gpu": "true", "use_cpu": "false",
                      "gpu-precision": "fp16" if spec.half else "fp32"})
    if spec.gpu and spec.full_delegation:
        flags["require_full_delegation"] = "true"
    if flavor == LITERT and spec.result_file:
        flags["result_file_path"] = spec.result_file
    if spec.op_profile and flavor in OP_PROFILE_FLAG:
        flags[OP_PROFILE_FLAG[flavor]] = "true"
    return flags


_ARG = re.compile(r"^--([A-Za-z0-9_][A-Za-z0-9_.-]*)(?:=(.*))?$", re.DOTALL)


def parse_extra_args(args: Sequence[str]) -> Flags:
    """``["--use_xnnpack=true", "--use_gpu"]`` -> mapping; ValueError naming a word that
    is not ``--name`` or ``--name=value``, or a flag given twice."""
    out: Flags = {}
    for a in args:
        m = _ARG.match(a)
        if not m:
            raise ValueError(f"{a!r} is not a flag (expected --name=value)")
        if m.group(1) in out:
            raise ValueError(f"--{m.group(1)} is given twice (the tool reads only the first)")
        out[m.group(1)] = m.group(2)
    return out


def merged(flags: Mapping[str, str | None], extra: Mapping[str, str | None]) -> Flags:
    """``flags`` with ``extra``'s entries replacing or added: each flag once."""
    return {**flags, **extra}


def render(flags: Mapping[str, str | None]) -> list[str]:
    return [f"--{k}" if v is None else f"--{k}={v}" for k, v in flags.items()]


_UNCONSUMED = re.compile(r"Unconsumed cmdline flags:\s*(.*)$", re.MULTILINE)


def unconsumed(output: str) -> list[str]:
    """The flags the tool did not take (unknown, or a repeat), from its warning."""
    found: list[str] = []
    for m in _UNCONSUMED.finditer(output):
        found += m.group(1).split()
    return found


# The tools' own words when a delegate leaves ops on the CPU (benchmark_tflite_model.cc
# logs the partial cases and exits 0; with --require_full_delegation it fails with
# "Disallowed CPU fallback detected."; the LiteRT tool fails to compile with the CPU off).
_PARTIAL = re.compile(r"partially executed by the delegate|will not be executed by the "
                      r"delegate|Disallowed CPU fallback|Failed to compile model|"
                      r"not fully accelerated|Fully accelerated:\s*False", re.IGNORECASE)


def delegation_problem(output: str) -> str | None:
    """The tool's line saying the GPU did not take the whole model, or None."""
    for line in output.splitlines():
        if _PARTIAL.search(line):
            return line.strip()
    return None
