"""A phone farm made of loopback ADB devices behind real private adb servers, for the tests
and benchmarks.

Each device's benchmark binary is a small sh wrapper (pushed by the runner like any
binary) that runs the real ``litert-benchmark`` of this virtualenv, forked from a zygote
that imported it once (``loopback/litert_zygote.py``: the import costs more than a small
model's whole run). Two test faults
are keyed on a model's first bytes: ``CRASHME`` makes the tool die of SIGSEGV,
``GARBAGE`` makes it print something that is not a benchmark result.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from loopback.adb.device import LoopbackDevice
from loopback.adb.server import AdbServer

ZYGOTE = Path(__file__).with_name("litert_zygote.py")
ZYGOTE_SOCKET = Path(tempfile.gettempdir()) / f"netadapt-litert-{os.getpid()}.sock"
# The device's litert-benchmark: a run forked from the zygote (started by `litert_zygote`).
LITERT = f"{sys.executable} -S {ZYGOTE} --client {ZYGOTE_SOCKET}"

WRAPPER = """#!/bin/sh
# litert-benchmark for the loopback device, with two test faults keyed on the model
for a in "$@"; do case "$a" in --model=*) m="${{a#--model=}}";; esac; done
case "$(head -c 7 "$m" 2>/dev/null | tr -d '\\000')" in
  CRASHME) kill -SEGV $$ ;;
  GARBAGE) echo "no results here"; exit 0 ;;
esac
exec {litert} "$@"
"""


def write_wrapper(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(WRAPPER.format(litert=LITERT))
    path.chmod(0o755)
    return path


def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return str(v)


def loop_toml(name: str, servers: list[str], backend: dict[str, object],
              thermal: dict[str, object] | None = None, model: str = "Loopback",
              adb: dict[str, object] | None = None) -> str:
    lines = [f'name = "{name}"', 'kind = "android"', f'description = "loopback {name}"',
             "[match]", f'"ro.product.model" = {toml_value(model)}',
             "[adb]", f"servers = {toml_value(servers)}"]
    lines += [f"{k} = {toml_value(v)}" for k, v in (adb or {}).items()]
    if thermal:
        lines += ["[thermal]", *(f"{k} = {toml_value(v)}" for k, v in thermal.items())]
    lines += ["[backends.tflite-cpu]", 'runner = "adb-tflite"', "default = true"]
    lines += [f"{k} = {toml_value(v)}" for k, v in backend.items()]
    return "\n".join(lines) + "\n"


@dataclass
class Farm:
    """Servers, devices and a written config ``name`` in ``config_dir``."""

    servers: list[AdbServer]
    devices: list[LoopbackDevice]
    config_dir: Path
    tmp: Path
    name: str = "loop"
    backend: dict[str, object] = field(default_factory=dict)

    def write(self, **changes: object) -> None:
        """Rewrite the config with backend settings changed (None removes a setting)."""
        thermal = changes.pop("thermal", None)
        adb = changes.pop("adb", None)
        self.backend.update(changes)
        backend = {k: v for k, v in self.backend.items() if v is not None}
        servers = [f"127.0.0.1:{s.port}" for s in self.servers]
        (self.config_dir / f"{self.name}.toml").write_text(
            loop_toml(self.name, servers, backend, thermal, adb=adb))

    def config(self):  # type: ignore[no-untyped-def]
        from bench.devices import load_config

        return load_config(self.name, self.config_dir)


def default_backend(tmp: Path) -> dict[str, object]:
    return {"tool": "litert-benchmark", "binary": str(write_wrapper(tmp / "tool" / "lrt")),
            "work_dir": str(tmp / "phones" / "{serial}" / "netadapt"), "warmup": 1, "runs": 5,
            "batch_size": 8}


@pytest.fixture(scope="session")
def litert_zygote() -> Iterator[Path]:
    """The zygote the loopback phones' tool runs are forked from, for the whole session."""
    ZYGOTE_SOCKET.unlink(missing_ok=True)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # no pools to fork
    proc = subprocess.Popen([sys.executable, str(ZYGOTE), str(ZYGOTE_SOCKET)], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready", "the litert-benchmark zygote failed"
        yield ZYGOTE_SOCKET
    finally:
        proc.kill()
        proc.wait()
        ZYGOTE_SOCKET.unlink(missing_ok=True)


@pytest.fixture
def farm_factory(litert_zygote: Path, adb_server_factory: Callable[..., AdbServer],
                 loopback_device_factory: Callable[..., LoopbackDevice], configs: Path,
                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Farm]]:
    """make(servers=1, per_server=1, **backend settings) -> a started Farm with its config.

    ANDROID_ADB_SERVER_PORT points at the first private server, so nothing in the test
    can reach (or start) a server on the default port.
    """
    def make(servers: int = 1, per_server: int = 1, **backend: object) -> Farm:
        srv = [adb_server_factory() for _ in range(servers)]
        monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(srv[0].port))
        devices = []
        for s in srv:
            for _ in range(per_server):
                d = loopback_device_factory()
                s.connect(d.serial)
                devices.append(d)
        farm = Farm(srv, devices, configs, tmp_path, backend={**default_backend(tmp_path)})
        farm.write(**backend)
        return farm

    yield make


@pytest.fixture
def farm(farm_factory: Callable[..., Farm]) -> Farm:
    """One loopback phone on one private adb server, config "loop"."""
    return farm_factory()


# --- stand-ins of the real benchmark tools ---------------------------------------------

# The tools' recorded outputs stay with the tests that read them too.
FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
TOOL_FIXTURES = FIXTURES / "tools"
OUTPUTS = FIXTURES / "outputs"

# Flags each tool's parser knows (benchmark_tflite_model.cc / benchmark_litert_model.h
# GetFlags, the base BenchmarkModel's included), as far as the runner uses them.
_BASE_FLAGS = "graph num_threads num_runs warmup_runs min_secs warmup_min_secs max_secs"
TOOL_KNOWS = {
    "tflite": f"{_BASE_FLAGS} use_gpu gpu_precision_loss_allowed require_full_delegation "
              "enable_op_profiling use_xnnpack",
    "tflite-old": f"{_BASE_FLAGS} use_gpu gpu_precision_loss_allowed enable_op_profiling",
    "litert": f"{_BASE_FLAGS} use_gpu use_cpu require_full_delegation gpu-precision "
              "use_profiler result_file_path",
}
# what each prints: a plain run, a GPU run the delegate took partly (without and with
# --require_full_delegation=true)
TOOL_PRINTS = {
    "tflite": ("tflite_benchmark_model_cpu.txt", "tflite_benchmark_model_gpu_partial.txt",
               "tflite_benchmark_model_gpu_disallowed.txt"),
    "litert": ("litert_benchmark_model_cpu.txt", "litert_benchmark_model_cpu.txt",
               "litert_benchmark_model_gpu_not_full.txt"),
}
TOOL_PRINTS["tflite-old"] = TOOL_PRINTS["tflite"]
# the result file LiteRT's tool writes for litert_benchmark_model_cpu.txt's run
LITERT_RESULT = {"latency_metrics": {"avg_ms": 0.00846, "min_ms": 0.007, "max_ms": 0.012,
                                     "stddev_ms": 0.00091, "median_ms": 0.00812, "p5_ms": 0.0071,
                                     "p95_ms": 0.0113, "init_ms": 3.418,
                                     "first_inference_ms": 0.061, "average_warm_up_ms": 0.0142},
                 "misc_metrics": {"num_runs": 50, "num_warmup_runs": 10}}

STAND_IN = """#!/bin/sh
# stand-in for {what}: prints that tool's real output (tests/fixtures/tools) and takes
# flags as command_line_flags.cc does: a flag's first occurrence; a repeat or an unknown
# flag is only reported as unconsumed. A model starting with PARTIAL is one the GPU
# delegate takes only partly.
echo "$*" >> {dir}/calls.log
known=" {known} "
seen=" "; left=""; m=""; r=""; full=false; gpu=false; prof=false
for a in "$@"; do
  n=${{a#--}}; n=${{n%%=*}}
  case "$known" in *" $n "*) ;; *) left="$left $a"; continue ;; esac
  case "$seen" in *" $n "*) left="$left $a"; continue ;; esac
  seen="$seen$n "; v=${{a#*=}}
  case "$n" in
    graph) m=$v ;; result_file_path) r=$v ;; require_full_delegation) full=$v ;;
    use_gpu) gpu=$v ;; enable_op_profiling|use_profiler) prof=$v ;;
  esac
done
[ -n "$left" ] && echo "WARN: Unconsumed cmdline flags:$left"
[ -f "$m" ] || {{ echo "ERROR: Could not open '$m'."; exit 1; }}
if [ "$gpu" = true ] && [ "$(head -c 7 "$m" | tr -d '\\000')" = PARTIAL ]; then
  [ "$full" = true ] && {{ cat {dir}/gpu_refused.txt; exit 1; }}
  exec cat {dir}/gpu_partial.txt
fi
[ "$prof" = true ] && [ -f {dir}/profile.txt ] && exec cat {dir}/profile.txt
cat {dir}/run.txt
[ -z "$r" ] || cp {dir}/result.pb "$r"
"""


def printed(name: str) -> str:
    """What a tool printed, from a fixture of ``source:line | text`` lines."""
    lines = (TOOL_FIXTURES / name).read_text().splitlines()
    return "".join(line.partition(" | ")[2] + "\n" for line in lines)


def stand_in_tool(folder: Path, kind: str = "tflite", prints: str | None = None) -> Path:
    """A ``benchmark_model`` stand-in (kind: tflite, tflite-old without
    --require_full_delegation, or litert) in ``folder``; its argv go to calls.log.
    ``prints``: a text to print instead of the tool's run output."""
    from bench.runners.benchmark_result import result_file_bytes

    folder.mkdir(parents=True, exist_ok=True)
    run, partial, refused = TOOL_PRINTS[kind]
    (folder / "run.txt").write_text(printed(run) if prints is None else prints)
    (folder / "gpu_partial.txt").write_text(printed(partial))
    (folder / "gpu_refused.txt").write_text(printed(refused))
    (folder / "profile.txt").write_text((OUTPUTS / "benchmark_model_xnnpack_op_profiling.txt")
                                        .read_text())
    (folder / "result.pb").write_bytes(result_file_bytes(**LITERT_RESULT))
    tool = folder / "benchmark_model"
    what = {"tflite": "TFLite's benchmark_model", "tflite-old": "an older TFLite benchmark_model",
            "litert": "LiteRT's CompiledModel benchmark_model"}[kind]
    tool.write_text(STAND_IN.format(what=what, dir=shlex.quote(str(folder)),
                                    known=TOOL_KNOWS[kind]))
    tool.chmod(0o755)
    return tool


def calls(tool: Path) -> list[list[str]]:
    """Each run's argv of a stand-in tool."""
    log = tool.parent / "calls.log"
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []
