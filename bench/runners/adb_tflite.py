"""TFLite on a phone over ADB: a ``benchmark_model`` (TFLite's, or LiteRT's CompiledModel
one: a probe run tells which) on the CPU or the GPU delegate, or ai-edge-litert's
``litert-benchmark``.

Setup, before any key is measured: the phone is probed (props, cpufreq policies, tools,
the binary's hash, thermal zones; the screen kept awake), the binary pushed if needed,
and the tool run once on a one-layer model with the sweep's flags, pinned as the sweep
pins: which tool it is, whether it took every flag, whether the GPU ran the whole model,
whether ``taskset`` really pinned. Anything wrong there is one message naming the fix.

Per batch: ONE sync session pushes every model and the batch script, ONE shell runs the
script (models one after another, pinned, each one's output between markers, the thermal
zones read before and after); with LiteRT's tool ONE more sync session pulls the result
files, whose float latencies replace the summary's two decimals. A batch that ended hot
is measured again after a cool-down. The batches folder is removed on close.
"""

from __future__ import annotations

import dataclasses
import hashlib
import posixpath
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.devices import Backend, ConfigError, DeviceConfig
from bench.discovery import AttachedDevice
from bench.runners.adb_phone import (
    DEFAULT_WORK_DIR,
    SECTION,
    Phone,
    PhoneRunner,
    elf_abi,
    local_hashes,
    parse_cpu_list,
    read_local,
    split_sections,
)
from bench.runners.adb_transport import ConnectionLost
from bench.runners.base import BatchItem, DeviceLost, Failure, Result, RunnerError
from bench.runners.batch_script import split_batch_output, wrap_command
from bench.runners.benchmark_result import parse_result_file
from bench.runners.checks import Check, adb_command, require
from bench.runners.parse import (
    ParseError,
    parse_benchmark_model,
    parse_litert_benchmark,
    parse_op_profile,
)
from bench.runners.tool_flags import (
    LITERT,
    LITERT_PY,
    SUMMARY_LINE,
    TFLITE,
    Flags,
    RunSpec,
    base_flags,
    delegation_problem,
    identify,
    merged,
    parse_extra_args,
    render,
    tool_flags,
    unconsumed,
)
from bench.tflite_build import build_layer
from bench.tflite_read import stores_float16
from lut_db.spec import LayerSpec

TOOLS = ("benchmark_model", "litert-benchmark")
ERR_TAIL = 4000  # bytes of a failed run's stderr worth sending back


@dataclass(frozen=True)
class TfliteSettings:
    """A ``runner = "adb-tflite"`` backend's settings, checked."""

    tool: str = "benchmark_model"
    binary: str | None = None  # local file, pushed once
    binary_on_device: str | None = None  # already on the phone
    work_dir: str = DEFAULT_WORK_DIR
    accelerator: str = "cpu"  # or "gpu" (the stock GPU delegate)
    threads: int = 1
    cpus: Any = "all"  # list of CPU numbers, "big", "biggest" or "all" (no pinning)
    warmup: int = 5
    runs: int = 50
    min_secs: float | None = None  # benchmark_model --min_secs (its default is 1 s)
    extra_args: tuple[str, ...] = ()
    batch_size: int = 100  # keys per batch: 2 round trips each
    model_timeout_s: float = 300.0
    runtime_version: str = ""

    @classmethod
    def from_backend(cls, config: DeviceConfig, backend: Backend) -> TfliteSettings:
        s = dict(backend.settings)
        where = f"{config.path}: key 'backends.{backend.name}."
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for key in s:
            if key not in types:
                raise ConfigError(f"{where}{key}': unknown setting (known: {', '.join(types)})")
        _check(s, where, "tool", lambda v: v in TOOLS, f"one of {', '.join(TOOLS)}")
        _check(s, where, "accelerator", lambda v: v in ("cpu", "gpu"), '"cpu" or "gpu"')
        for key, least in (("threads", 1), ("warmup", 0), ("runs", 1), ("batch_size", 1)):
            _check(s, where, key, lambda v, least=least: isinstance(v, int)
                   and not isinstance(v, bool) and v >= least, f"an integer >= {least}")
        for key in ("min_secs", "model_timeout_s"):
            _check(s, where, key, lambda v: isinstance(v, (int, float)) and v >= 0,
                   "a number of seconds")
        for key in ("binary", "binary_on_device", "work_dir", "runtime_version"):
            _check(s, where, key, lambda v: isinstance(v, str) and v, "a non-empty string")
        _check(s, where, "extra_args", lambda v: isinstance(v, list) and all(
            isinstance(a, str) for a in v), "a list of strings")
        _check(s, where, "cpus", lambda v: v in ("all", "big", "biggest") or (
            isinstance(v, list) and v and all(isinstance(c, int) and c >= 0 for c in v)),
            'a list of CPU numbers, "big", "biggest" or "all"')
        if "binary" in s and "binary_on_device" in s:
            raise ConfigError(f"{where}binary': give binary (a local file to push) or "
                              "binary_on_device (a path on the phone), not both")
        if "binary" not in s:
            s.setdefault("binary_on_device", f"/data/local/tmp/{s.get('tool', cls.tool)}")
        s["extra_args"] = tuple(s.get("extra_args", ()))
        try:
            extra = parse_extra_args(s["extra_args"])
        except ValueError as e:
            raise ConfigError(f"{where}extra_args': {e}") from None
        owned = [f"--{k}" for k in extra if k in RUNNER_OWNS]
        if owned:
            raise ConfigError(f"{where}extra_args': {', '.join(owned)} is set by the runner "
                              "(the model's path, its result file); remove it")
        return cls(**s)


def _check(s: dict[str, Any], where: str, key: str, ok: Any, expected: str) -> None:
    if key in s and not ok(s[key]):
        raise ConfigError(f"{where}{key}': expected {expected}, got {s[key]!r}")


RUNNER_OWNS = ("graph", "model", "result_file_path")  # flags extra_args may not replace

# What precision the GPU delegate computes in, per tool (see ``model_command``).
GPU_PRECISION = {
    TFLITE: "the model's: float16 models in fp16, others in fp32 "
            "(--gpu_precision_loss_allowed per model)",
    LITERT: "the model's: float16 models in fp16, others in fp32 (--gpu-precision per model)",
    LITERT_PY: "the delegate's default (fp16 allowed): it has no precision flag",
}
PROBE_SPEC = LayerSpec("conv2d", 8, 8, 8, 8, kernel=(3, 3))  # the one-layer probe model


@dataclass(frozen=True)
class ToolProbe:
    """What one run of the tool on the probe model showed (``probe_tool``)."""

    flavor: str | None  # tool_flags.TFLITE, LITERT or LITERT_PY; None: not a known tool
    full_delegation: bool  # GPU runs get --require_full_delegation=true
    pinned_to: list[int] | None  # Cpus_allowed_list under the runner's taskset
    output: str
    problem: str | None = None  # what stops a sweep, and its fix


class AdbTfliteRunner(PhoneRunner):
    """Measures batches of .tflite models on one phone with one backend's settings."""

    settings_class = TfliteSettings

    def __init__(self, config: DeviceConfig, backend: Backend, attached: AttachedDevice,
                 settings: TfliteSettings | None = None):
        super().__init__(config, backend, attached, settings)
        self._local = (read_local(self.settings.binary, config, f"backends.{backend.name}.binary")
                       if self.settings.binary else None)
        self.extra = parse_extra_args(self.settings.extra_args)
        self._first_setup()

    @property
    def op_profiler(self) -> str:  # type: ignore[override]
        return {TFLITE: "benchmark_model --enable_op_profiling"}.get(self.flavor, "")

    # -- setup -------------------------------------------------------------------------
    @property
    def remote_binary(self) -> str:
        return remote_binary(self.settings, self.phone.work_dir)

    @property
    def probe_model_path(self) -> str:
        return posixpath.join(self.phone.work_dir, "probe.tflite")

    def _setup(self) -> None:
        """Probe the phone, push what is missing, run the tool once: any problem is one
        RunnerError naming its fix, before a key is measured."""
        self.notes = []
        info = self.phone.probe((self.remote_binary,), stay_awake=True)
        self.watch_heat()
        have = info.files.get(self.remote_binary)
        require(tool_check(self.settings, self._local, self.phone, self.backend))
        push: list[tuple[bytes, str, int]] = []
        if self.settings.tool != "litert-benchmark":  # named by the config: no run needed
            push.append((build_layer(PROBE_SPEC), self.probe_model_path, 0o644))
        if self._local is not None:
            if have is None or have[0] not in local_hashes(self._local) or not have[1]:
                push.append((self._local, self.remote_binary, 0o755))
            self.tool_hash = hashlib.sha256(self._local).hexdigest()
        else:
            self.tool_hash = have[0] if have else ""
        self.phone.transport.push_many(push)
        self.cpus = self._resolve_cpus()
        self.pinning = self._pin_prefix()
        self.probe = self.probe_tool()
        if self.probe.problem:
            raise RunnerError(self.probe.problem)
        self.flavor = self.probe.flavor
        self._check_pinning(self.probe.pinned_to)

    def _fix_cpus(self) -> str:
        return f"fix cpus in [backends.{self.backend}] of {self.config.path}"

    def _resolve_cpus(self) -> list[int] | None:
        """The cores to pin: a list as given, or the big ones from the cpufreq policies
        (the top cpuinfo_max_freq, offline cores counted, only online ones pinned)."""
        want, info = self.settings.cpus, self.phone.info
        if want == "all":
            return None
        if isinstance(want, list):
            unknown = [c for c in want if info.cpus and c not in info.cpus]
            if unknown:
                raise RunnerError(f"{self.serial} has no CPU {unknown} (it has "
                                  f"{sorted(info.cpus)}); {self._fix_cpus()}")
            offline = [c for c in want if not info.is_online(c)]
            if offline:
                raise RunnerError(f"CPU {offline} of {self.serial} is offline (online: "
                                  f"{_cpu_list(info.online)}): taskset cannot pin to it; "
                                  f"{self._fix_cpus()}, or wake the core before the sweep")
            return sorted(want)
        big = info.big_cores()
        if not big:
            self.notes.append(f"cpus = {want!r}: no cpufreq on the phone, big cores unknown; "
                              "not pinned")
            return None
        usable = [c for c in big if info.is_online(c)]
        if not usable:
            raise RunnerError(
                f"the big cores {big} of {self.serial} are offline (online: "
                f"{_cpu_list(info.online)}): pinned there, taskset fails; keep the phone busy "
                f"or unlocked so the kernel brings them up, or {self._fix_cpus()}")
        if len(usable) < len(big):
            self.notes.append(f"big cores {big}: {sorted(set(big) - set(usable))} offline")
        return usable[-1:] if want == "biggest" else usable

    def _pin_prefix(self) -> list[str]:
        prefix = []
        if "timeout" in self.phone.info.tools:
            prefix += ["timeout", str(int(self.settings.model_timeout_s))]
        if self.cpus is None:
            return prefix
        if "taskset" not in self.phone.info.tools:
            self.notes.append("taskset not found on the phone: not pinned")
            return prefix
        return prefix + ["taskset", format(sum(1 << c for c in self.cpus), "x")]

    def _check_pinning(self, pinned_to: list[int] | None) -> None:
        if "taskset" not in self.pinning or self.cpus is None:
            return
        if pinned_to != self.cpus:
            raise RunnerError(
                f"taskset {self.pinning[-1]} on {self.serial} left the tool on CPUs "
                f"{_cpu_list(set(pinned_to or ()))} instead of {self.cpus} (Cpus_allowed_list); "
                f"{self._fix_cpus()}")

    def probe_tool(self) -> ToolProbe:
        """Run the tool on the probe model, pinned as the sweep pins: which tool it is
        (both ``benchmark_model``s share the base flags), then the sweep's own flags.
        ``problem`` names the fix when a flag is not taken, a result line is missing or
        the GPU does not run the whole model (setup raises it; ``netadapt doctor`` shows it).
        """
        s = self.settings
        if s.tool == "litert-benchmark":  # named by the config; only the pinning to check
            pinned = self._probe_full(None)[1] if "taskset" in self.pinning else None
            return ToolProbe(LITERT_PY, False, pinned, "")
        spec = dataclasses.replace(self._spec(half=False, result_file=self._probe_result_path()),
                                   full_delegation=True)  # asked afresh, also on a rejoin
        out = self._probe_run(render(merged(base_flags(self.probe_model_path, spec),
                                            self.extra)))
        flavor = identify(out)
        if flavor is None:
            return ToolProbe(None, False, None, out, self._probe_says(
                f"printed neither {SUMMARY_LINE[TFLITE]!r} nor {SUMMARY_LINE[LITERT]!r}: it "
                "is not a benchmark_model this runner knows, or it cannot run here", out))
        full = s.accelerator == "gpu" and self.extra.get("require_full_delegation") != "false"
        flags = self.flags(flavor, self.probe_model_path, spec)
        out, pinned, result = self._probe_full(render(flags))
        left = unconsumed(out)
        if full and left == ["--require_full_delegation=true"]:
            full = False  # an older binary: partial runs are caught by their log lines
            self.notes.append(f"{s.tool} has no --require_full_delegation: partly delegated "
                              "models are caught by the tool's log")
            left = []
        partial = delegation_problem(out) if s.accelerator == "gpu" else None
        problem = None
        if left:
            problem = self._probe_says(
                f"did not take {' '.join(left)} ('Unconsumed cmdline flags'): the tool does not "
                f"know it or it is repeated; fix extra_args in [backends.{self.backend}] of "
                f"{self.config.path}", out)
        elif partial:
            problem = self._probe_says(
                f"the GPU delegate did not run the whole one-layer probe model ({partial!r}): "
                "this phone's GPU delegate cannot time GPU keys", out)
        elif SUMMARY_LINE[flavor] not in out:
            problem = self._probe_says(
                f"printed no {SUMMARY_LINE[flavor]!r} line with the sweep's flags", out)
        elif flavor == LITERT and result is None:
            problem = self._probe_says(
                "wrote no --result_file_path file: this build cannot report full-precision "
                "latencies; use a LiteRT benchmark_model from the current release", out)
        return ToolProbe(flavor, full, pinned, out, problem)

    def _probe_result_path(self) -> str:
        return posixpath.join(self.phone.work_dir, "probe.pb")

    def _probe_says(self, what: str, out: str) -> str:
        return (f"{self.settings.tool} ({self.remote_binary}) on {self.serial}, run on a "
                f"one-layer model, {what}; its output ends: {out.strip()[-1500:]}")

    def _probe_run(self, args: list[str]) -> str:
        argv = " ".join(shlex.quote(a) for a in [self.remote_binary, *args])
        return self.phone.transport.shell(f"{argv} 2>&1", timeout_s=120).output

    def _probe_full(self, args: list[str] | None) -> tuple[str, list[int] | None, int | None]:
        """(output, Cpus_allowed_list under the pinning, result file size) in one shell
        (``args`` None: the pinning only)."""
        q = shlex.quote
        res_file = q(self._probe_result_path())
        pin = self.pinning[self.pinning.index("taskset"):] if "taskset" in self.pinning else []
        lines = [f"rm -f {res_file}",
                 f"echo '{SECTION} pin'",
                 (" ".join(q(a) for a in pin) + " cat /proc/self/status 2>&1") if pin
                 else "true",
                 f"echo '{SECTION} run'",
                 " ".join(q(a) for a in [*self.pinning, self.remote_binary, *args]) + " 2>&1"
                 if args is not None else "true",
                 f"echo '{SECTION} result'",
                 f"[ -f {res_file} ] && wc -c < {res_file}",
                 f"echo '{SECTION} end'"]
        res = self.phone.transport.shell("\n".join(lines) + "\n", timeout_s=120)
        sections = split_sections(res.stdout)
        pin_text = sections.get("pin", "")
        m = re.search(r"^Cpus_allowed_list:\s*(\S+)", pin_text, re.MULTILINE)
        if pin and not m:
            raise RunnerError(f"taskset {pin[-1]} failed on {self.serial}: "
                              f"{pin_text.strip()[-300:]}; {self._fix_cpus()}")
        size = sections.get("result", "").strip()
        return (sections.get("run", res.output), sorted(parse_cpu_list(m.group(1))) if m else None,
                int(size) if size.isdigit() else None)

    def _spec(self, half: bool, result_file: str | None = None,
              op_profile: bool = False) -> RunSpec:
        s = self.settings
        probe = getattr(self, "probe", None)
        return RunSpec(threads=s.threads, runs=s.runs, warmup=s.warmup, min_secs=s.min_secs,
                       gpu=s.accelerator == "gpu", half=half,
                       full_delegation=probe.full_delegation if probe else True,
                       result_file=result_file, op_profile=op_profile)

    def flags(self, flavor: str, model: str, spec: RunSpec) -> Flags:
        """One run's flags: the tool's mapping with extra_args' entries replacing its own."""
        return merged(tool_flags(flavor, model, spec), self.extra)

    def fingerprint(self) -> dict[str, Any]:
        """Device, runtime and settings; no serial: phones of one model share a version."""
        s = self.settings
        used = self.cpus or sorted(self.phone.info.cpus)
        info = self.phone.info.cpus
        return {
            **self.phone.device_fingerprint(),
            "runner": "adb-tflite", "tool": s.tool, "tool_flavor": self.flavor,
            "tool_hash": self.tool_hash,
            "runtime_version": s.runtime_version or None, "accelerator": s.accelerator,
            "threads": s.threads, "cpus": self.cpus, "pinned": "taskset" in self.pinning,
            "governor": sorted({info[c][1] for c in used if c in info and info[c][1]}) or None,
            "max_freq_khz": sorted({info[c][0] for c in used if c in info and info[c][0]})
            or None,
            "warmup": s.warmup, "runs": s.runs, "min_secs": s.min_secs,
            "extra_args": list(s.extra_args), "notes": self.notes,
            "thermal_zones": list(self.phone.thermal.zones),
            **({"gpu_precision": GPU_PRECISION[self.flavor],
                "full_delegation": self.probe.full_delegation}
               if s.accelerator == "gpu" else {}),
        }

    # -- measuring ---------------------------------------------------------------------
    def measure(self, batch: Sequence[BatchItem]) -> list[Result]:
        if not batch:
            return []
        folder = self.phone.new_batch_dir()
        script_path = posixpath.join(folder, "run.sh")
        models = [posixpath.join(folder, f"m{i}.tflite") for i in range(len(batch))]
        files: list[tuple[bytes, str, int]] = [(it.model, m, 0o644)
                                               for it, m in zip(batch, models)]
        half = [stores_float16(it.model) for it in batch]
        files.append((self.batch_script(folder, models, half).encode(), script_path, 0o644))
        self.phone.transport.push_many(files)
        results, _ = self.measure_cool(lambda: self._run(script_path, folder, len(batch)))
        return results

    def op_profile(self, model: bytes) -> list[tuple[str, float]] | None:
        """Each op's name and average time (us, run order) from TFLite's ``benchmark_model
        --enable_op_profiling=true``; None for a tool without that profile."""
        if self.flavor != TFLITE:
            return None
        folder = self.phone.new_batch_dir()
        path = posixpath.join(folder, "profile.tflite")
        self.phone.transport.push_many([(model, path, 0o644)])
        res = self.phone.transport.shell(self.model_command(
            path, folder, 0, half=stores_float16(model), op_profile=True))
        try:
            return [(op.node_type, op.avg_ms * 1000) for op in parse_op_profile(res.output)]
        except ParseError as e:
            raise RunnerError(f"{self.serial}: no op profile from benchmark_model: {e}; "
                              f"its output ends: {res.output.strip()[-ERR_TAIL:]}") from None

    def _run(self, script_path: str, folder: str, n: int) -> tuple[list[Result], str]:
        try:
            res = self.phone.transport.shell(f"sh {shlex.quote(script_path)}")
        except ConnectionLost as e:
            # keys finished before the cut are kept (LiteRT's need their result files: lost)
            done = self._results(e.output, n, {}) if self.flavor != LITERT else [None] * n
            raise DeviceLost(str(e), {i: r for i, r in enumerate(done) if r is not None}) from None
        out = res.stdout
        files: dict[str, bytes | None] = {}
        if self.flavor == LITERT:
            blocks = split_batch_output(out)
            files = self.phone.transport.pull_many(
                [self._result_path(folder, i) for i in range(n) if blocks.get(i, (1,))[0] == 0])
        results = self._results(out, n, {i: files.get(self._result_path(folder, i))
                                         for i in range(n)})
        if all(r is None for r in results):  # the script itself failed: not the models' fault
            raise RunnerError(f"{self.serial}: the batch script failed (exit {res.returncode}) "
                              f"before any model ran: {res.output.strip()[-ERR_TAIL:]}")
        return ([r if r is not None else Failure(
            f"the batch script stopped before this model (exit {res.returncode})",
            res.output[-ERR_TAIL:]) for r in results], out)

    @staticmethod
    def _result_path(folder: str, i: int) -> str:
        return posixpath.join(folder, f"m{i}.pb")

    def _results(self, text: str, n: int, files: dict[int, bytes | None]) -> list[Result | None]:
        blocks = split_batch_output(text)
        return [self._result(*blocks[i], files.get(i)) if i in blocks else None
                for i in range(n)]

    def _result(self, rc: int, body: str, result_file: bytes | None = None) -> Result:
        tool = self.settings.tool
        gpu = self.settings.accelerator == "gpu"
        problem = delegation_problem(body) if gpu else None
        why = (f"timed out after {self.settings.model_timeout_s:.0f} s" if rc == 124
               else f"killed by signal {rc - 128}" if rc > 128 else f"exit code {rc}")
        if not problem and gpu and 0 < rc < 124 and self.flavor == LITERT \
                and self.probe.full_delegation:
            # a release build says only "Benchmarking failed." when the GPU cannot take it all
            problem = f"{tool} failed ({why}) with --require_full_delegation=true"
        if problem:  # never a GPU timing of a model the CPU partly ran
            return Failure(f"the GPU delegate did not run the whole model: {problem}", body)
        if rc != 0:
            return Failure(f"{tool} failed on this model: {why}", body)
        left = unconsumed(body)
        if left:
            return Failure(f"{tool} did not take {' '.join(left)} (Unconsumed cmdline flags)",
                           body)
        try:
            if self.flavor == LITERT:
                if result_file is None:
                    return Failure(f"{tool} wrote no result file (--result_file_path)", body)
                timing = parse_result_file(result_file)
            elif self.flavor == LITERT_PY:
                timing = parse_litert_benchmark(body)
            else:
                timing = parse_benchmark_model(body)
        except ParseError as e:
            return Failure(f"unparseable {tool} output: {e}", body)
        self.timed_ns += int(timing.mean_us * timing.runs * 1000)
        return timing

    def batch_script(self, folder: str, models: Sequence[str],
                     half: Sequence[bool] = ()) -> str:
        """The POSIX-sh script measuring ``models`` one after another, with temperatures
        (``half``: which models store float16 weights)."""
        q = shlex.quote
        lines = [
            f"# netadapt-farm TFLite batch: {len(models)} model(s), {self.settings.tool}",
            # earlier batches (kept for a hot re-measure) go now, this one on close
            (f"for d in {q(self.phone.batches_dir)}/*; do "
             f"[ \"$d\" = {q(folder)} ] || rm -rf \"$d\"; done"),
            self.phone.temps_snippet("before"),
        ]
        for i, model in enumerate(models):
            lines += wrap_command(i, self.model_command(model, folder, i,
                                                        half=bool(half) and half[i]))
        lines.append(self.phone.temps_snippet("after"))
        return "\n".join(lines) + "\n"

    def model_command(self, model: str, folder: str, i: int, half: bool = False,
                      op_profile: bool = False) -> str:
        """One model's command line, every word quoted (``half``: the model stores float16
        weights, so the GPU may compute in fp16; ``op_profile``: the tool's op profile).

        The flags are one mapping (``flags``): each flag once, extra_args replacing the
        runner's own, since the tools read only a flag's first occurrence."""
        q = shlex.quote
        spec = self._spec(half, result_file=self._result_path(folder, i)
                          if self.flavor == LITERT else None, op_profile=op_profile)
        args = render(self.flags(self.flavor, model, spec))
        argv = " ".join(q(a) for a in [*self.pinning, self.remote_binary, *args])
        if self.flavor != LITERT_PY:
            return f"{argv} 2>&1"  # their results are log lines on stdout and stderr
        # litert-benchmark: results on stdout, a screenful of logs on stderr: keep those
        # only when it fails
        err = q(posixpath.join(folder, f"m{i}.err"))
        return (f"{argv} 2>{err}; rc=$?; [ $rc -eq 0 ] || tail -c {ERR_TAIL} {err}; "
                "(exit $rc)")


def remote_binary(settings: TfliteSettings, work_dir: str) -> str:
    """Where the benchmark tool is on the phone: binary_on_device, or where a local
    binary is pushed to."""
    if settings.binary_on_device:
        return settings.binary_on_device
    name = posixpath.basename(settings.binary or settings.tool)
    return posixpath.join(work_dir, "bin", name)


def tool_check(settings: TfliteSettings, local: bytes | None, phone: Phone,
               backend: str) -> Check:
    """The benchmark tool, from ``phone.info`` (a probe that hashed remote_binary): a local
    binary built for the phone's ABI, or one on the phone that is there and executable."""
    name, tool = "benchmark tool", settings.tool
    remote = remote_binary(settings, phone.work_dir)
    abis = phone.info.abis
    if local is not None:
        abi = elf_abi(local)
        if abi is not None and abi not in abis:
            return Check(name, False, f"{settings.binary} is built for {abi}, but "
                         f"{phone.serial} runs {', '.join(abis)}",
                         f"use a {abis[0]} build of {tool} (binary = ... in "
                         f"[backends.{backend}] of {phone.config.path})")
        return Check(name, True, f"{settings.binary} ({abi or 'not ELF: a script?'}), pushed "
                     f"to {remote} when missing or changed")
    have = phone.info.files.get(remote)
    adb = adb_command(phone.server, phone.serial)
    if have is None:
        return Check(name, False, f"benchmark binary {remote!r} is not found on {phone.serial}",
                     f"push a {abis[0]} build of it ({adb} push {tool} "
                     f"{shlex.quote(remote)}), or set binary = \"/local/path/to/{tool}\" in "
                     f"[backends.{backend}] of {phone.config.path} to have it pushed")
    if not have[1]:
        return Check(name, False, f"benchmark binary {remote!r} is not executable on "
                     f"{phone.serial}", f"{adb} shell chmod 755 {shlex.quote(remote)}")
    return Check(name, True, f"{remote} on the phone")


def _cpu_list(cpus: set[int] | None) -> str:
    return ",".join(map(str, sorted(cpus))) if cpus else "unknown"
