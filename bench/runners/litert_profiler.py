"""LiteRT's own op profiler, through its C API: each op's time inside a whole network.

The Python API (``Interpreter``, ``CompiledModel``) exposes no profiler, but the
``libLiteRt.so`` that ai-edge-litert ships exports one: a compiled model created with the
runtime option ``enable_profiling`` records every op of every invoke, the XNNPACK
delegate's ops included (its own op names, e.g. "Convolution (NHWC, F32) DWConv"), in
execution order. This module binds the few C functions it takes (environment, model,
options, compiled model, buffers, profiler) with ctypes. Signatures are those of
ai-edge-litert 2.3.0 (``litert/c/*.h``); the package is pinned to it.

Options reach the runtime as opaque option payloads, TOML text under an identifier (what
``litert/c/options`` writes): ``runtime_options_string`` carries ``enable_profiling``,
``xnnpack`` carries ``num_threads``.
"""

from __future__ import annotations

import ctypes as C
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.runners.base import RunnerError

P = C.c_void_p
_OK = 0
# OPERATOR_INVOKE_EVENT (a TFLite kernel) and DELEGATE_PROFILED_OPERATOR_INVOKE_EVENT (an
# op inside XNNPACK, listed in place of the delegate's node)
_OP_EVENTS = {1 << 1, 1 << 3}
CHILD_TIMEOUT_S = 300
PROFILED_WARMUP = 40  # invokes profiled and dropped before the ones kept
_TENSOR_TYPE_BYTES = 256  # LiteRtRankedTensorType is 72 bytes; only passed through


class _Memory(C.Structure):
    _fields_ = [("total", C.c_size_t), ("in_use", C.c_size_t), ("private", C.c_size_t)]


class _Event(C.Structure):
    """``ProfiledEventData`` (litert/c/litert_profiler_event.h)."""

    _fields_ = [("tag", C.c_char_p), ("event_type", C.c_int), ("start_us", C.c_uint64),
                ("elapsed_us", C.c_uint64), ("begin_mem", _Memory), ("end_mem", _Memory),
                ("metadata1", C.c_uint64), ("metadata2", C.c_uint64), ("source", C.c_int)]


@dataclass(frozen=True)
class Invoke:
    """One profiled invoke: its wall and thread CPU time (ns) and its ops (tag, us)."""

    wall_ns: int
    cpu_ns: int
    ops: tuple[tuple[str, int], ...]


def _library() -> C.CDLL:
    import ai_edge_litert

    lib = C.CDLL(str(Path(ai_edge_litert.__file__).parent / "libLiteRt.so"))
    lib.LiteRtCreateModelFromBuffer.argtypes = [P, P, C.c_size_t, P]
    lib.LiteRtRunCompiledModel.argtypes = [P, C.c_size_t, C.c_size_t, P, C.c_size_t, P]
    lib.LiteRtCreateOpaqueOptions.argtypes = [C.c_char_p, P, P, P]
    for name in ("LiteRtDestroyCompiledModel", "LiteRtDestroyModel", "LiteRtDestroyEnvironment",
                 "LiteRtDestroyOptions", "LiteRtDestroyTensorBuffer"):
        getattr(lib, name).argtypes = [P]
        getattr(lib, name).restype = None
    return lib


_LIB: C.CDLL | None = None
_LIBC = C.CDLL(None)
_LIBC.strdup.restype = P
_LIBC.strdup.argtypes = [C.c_char_p]
_FREE = C.cast(_LIBC.free, P)


def _lib() -> C.CDLL:
    global _LIB
    if _LIB is None:
        _LIB = _library()
    return _LIB


def _call(name: str, *args: object) -> None:
    status = getattr(_lib(), name)(*args)
    if status != _OK:
        raise RunnerError(f"LiteRT's C API: {name} failed with status {status}")


class _Session:
    """One compiled model with the profiler on, its buffers, and what to free."""

    def __init__(self, model: bytes, threads: int):
        self._data = C.create_string_buffer(model, len(model))  # LiteRT reads it in place
        self._free: list[tuple[str, P]] = []
        try:
            with _native_log() as log:
                try:
                    self._open(threads)
                except RunnerError as e:
                    log.seek(0)
                    errors = [ln for ln in log.read().splitlines() if ln.startswith("ERROR")]
                    raise RunnerError("; ".join([str(e), *errors])) from None
        except BaseException:
            self.close()
            raise

    def _own(self, destroy: str, handle: P) -> P:
        self._free.append((destroy, handle))
        return handle

    def _open(self, threads: int) -> None:
        env, model, options, compiled = P(), P(), P(), P()
        _call("LiteRtCreateEnvironment", 0, None, C.byref(env))
        self.env = self._own("LiteRtDestroyEnvironment", env)
        _call("LiteRtCreateModelFromBuffer", env, self._data, len(self._data), C.byref(model))
        self.model = self._own("LiteRtDestroyModel", model)
        _call("LiteRtCreateOptions", C.byref(options))
        self._own("LiteRtDestroyOptions", options)
        _call("LiteRtSetOptionsHardwareAccelerators", options, 1)  # kLiteRtHwAcceleratorCpu
        _add_toml(options, b"runtime_options_string", "enable_profiling = true")
        _add_toml(options, b"xnnpack", f"num_threads = {threads}")
        _call("LiteRtCreateCompiledModel", env, model, options, C.byref(compiled))
        self.compiled = self._own("LiteRtDestroyCompiledModel", compiled)
        signature = P()
        _call("LiteRtGetModelSignature", model, C.c_size_t(0), C.byref(signature))
        self.inputs = self._buffers(signature, "Input")
        self.outputs = self._buffers(signature, "Output")
        self.profiler = P()
        _call("LiteRtCompiledModelGetProfiler", compiled, C.byref(self.profiler))

    def _buffers(self, signature: P, kind: str) -> C.Array:
        count = C.c_size_t()
        _call(f"LiteRtGetNumSignature{kind}s", signature, C.byref(count))
        buffers = (P * count.value)()
        for i in range(count.value):
            tensor, needs, buffer = P(), P(), P()
            tensor_type = C.create_string_buffer(_TENSOR_TYPE_BYTES)
            _call(f"LiteRtGetSignature{kind}TensorByIndex", signature, C.c_size_t(i),
                  C.byref(tensor))
            _call("LiteRtGetRankedTensorType", tensor, tensor_type)
            _call(f"LiteRtGetCompiledModel{kind}BufferRequirements", self.compiled,
                  C.c_size_t(0), C.c_size_t(i), C.byref(needs))
            _call("LiteRtCreateManagedTensorBufferFromRequirements", self.env, tensor_type,
                  needs, C.byref(buffer))
            buffers[i] = self._own("LiteRtDestroyTensorBuffer", buffer).value
        return buffers

    def run(self) -> None:
        _call("LiteRtRunCompiledModel", self.compiled, 0, len(self.inputs), self.inputs,
              len(self.outputs), self.outputs)

    def events(self) -> list[_Event]:
        count = C.c_int()
        _call("LiteRtGetNumProfilerEvents", self.profiler, C.byref(count))
        events = (_Event * count.value)()
        _call("LiteRtGetProfilerEvents", self.profiler, count, events)
        return list(events)

    def close(self) -> None:
        with _native_log():
            for destroy, handle in reversed(self._free):  # buffers, model, then env
                getattr(_lib(), destroy)(handle)
        self._free.clear()


@contextmanager
def _native_log() -> Iterator:
    """What LiteRT's C++ side writes to stderr while the model loads (a dozen INFO lines
    per environment), kept out of the terminal and readable for the error message."""
    with tempfile.TemporaryFile("w+") as log:
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            yield log
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _add_toml(options: P, identifier: bytes, toml: str) -> None:
    """One opaque option whose payload is TOML text; LiteRT frees it with libc's free."""
    payload, opaque = _LIBC.strdup(toml.encode() + b"\n"), P()
    _call("LiteRtCreateOpaqueOptions", identifier, payload, _FREE, C.byref(opaque))
    _call("LiteRtAddOpaqueOptions", options, opaque)  # options own it now


@contextmanager
def session(model: bytes, threads: int = 1) -> Iterator[_Session]:
    s = _Session(model, threads)
    try:
        yield s
    finally:
        s.close()


def profile(model: bytes, threads: int = 1, warmup: int = 3, runs: int = 20) -> list[Invoke]:
    """``runs`` invokes of ``model`` after ``warmup``, each with its ops in execution order,
    profiled in a fresh Python process.

    Why a process of its own: the profiler copies every event's tag into its buffer, so
    its cost follows the heap's state; in a process whose heap torch has churned (adapt,
    the test suite), op times came out 2-3x the interpreter's for the same layers. A
    fresh process also keeps a crash in the C binding from taking the caller down. The
    child inherits the calling thread's CPU pinning.
    """
    cmd = [sys.executable, "-m", __name__, str(threads), str(warmup), str(runs)]
    try:
        proc = subprocess.run(cmd, input=model, capture_output=True, timeout=CHILD_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired:
        raise RunnerError(f"LiteRT's profiler took over {CHILD_TIMEOUT_S} s") from None
    if proc.returncode < 0:
        raise RunnerError(f"LiteRT's profiler crashed (signal {-proc.returncode})")
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        raise RunnerError(lines[-1] if lines else "LiteRT's profiler failed")
    return [Invoke(w, c, tuple((tag, us) for tag, us in ops))
            for w, c, ops in json.loads(proc.stdout)]


def profile_here(model: bytes, threads: int = 1, warmup: int = 3,
                 runs: int = 20) -> list[Invoke]:
    """``profile`` in this process (what the child runs)."""
    # The warm-up invokes are profiled too, and dropped: while the profiler's event buffer
    # and the heap grow, op times run up to 3x their later value (a fresh process's first
    # invokes of MobileNetV2 x0.5 at 32 px: 930 us of ops, 250 us after 40 invokes).
    lead = max(warmup, PROFILED_WARMUP)
    with session(model, threads) as s:
        _call("LiteRtStartProfiler", s.profiler)
        times = []
        for _ in range(lead + runs):
            c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
            s.run()
            times.append((time.perf_counter_ns() - t0, time.thread_time_ns() - c0))
        _call("LiteRtStopProfiler", s.profiler)
        groups = _by_invoke(s.events())
    if len(groups) != lead + runs:
        raise RunnerError(f"LiteRT's profiler recorded {len(groups)} invokes of {lead + runs}")
    return [Invoke(w, c, ops) for (w, c), ops in zip(times[lead:], groups[lead:])]


def _by_invoke(events: list[_Event]) -> list[tuple[tuple[str, int], ...]]:
    """The op events between each ``Invoke`` event and the next, in the order recorded."""
    groups: list[list[tuple[str, int]]] = []
    for e in events:
        tag = (e.tag or b"").decode()
        if tag == "Invoke" and e.event_type == 1:  # DEFAULT: the interpreter's invoke
            groups.append([])
        elif groups and e.event_type in _OP_EVENTS:
            groups[-1].append((tag, int(e.elapsed_us)))
    return [tuple(g) for g in groups]


def main() -> None:
    """Child: THREADS WARMUP RUNS, the model on stdin; JSON invokes on stdout, or one line
    on stderr and exit 1."""
    threads, warmup, runs = (int(v) for v in sys.argv[1:4])
    try:
        invokes = profile_here(sys.stdin.buffer.read(), threads, warmup, runs)
    except RunnerError as e:
        sys.stderr.write(f"{e}\n")
        sys.exit(1)
    json.dump([[i.wall_ns, i.cpu_ns, i.ops] for i in invokes], sys.stdout)


if __name__ == "__main__":
    main()
