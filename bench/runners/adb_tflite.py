"""TFLite on a phone over ADB: a ``benchmark_model`` (TFLite's, or LiteRT's CompiledModel
one: a probe run tells which) on the CPU or the GPU delegate, or ai-edge-litert's
``litert-benchmark``.

Setup, before any key is measured: the phone is probed (props, cpufreq policies, tools,
the binary's hash, thermal zones; the screen kept awake), the binary pushed if needed,
and the tool run once on a one-layer model with the sweep's flags, pinned as the sweep
pins: which tool it is, whether it took every flag, whether the GPU ran the whole model,
whether ``taskset`` really pinned. Anything wrong there is one message naming the fix.
(The settings: ``tflite_settings``; the setup run: ``tflite_tool_probe``; the cores:
``phone_pinning``.)

Per batch: ONE sync session pushes every model and the batch script, ONE shell runs the
script (models one after another, pinned, each one's output between markers, the thermal
zones read before and after); with LiteRT's tool ONE more sync session pulls the result
files, whose float latencies replace the summary's two decimals. A batch that ended hot
is measured again after a cool-down. The batches folder is removed on close.
"""

from __future__ import annotations

import hashlib
import posixpath
import shlex
from collections.abc import Sequence
from typing import Any

from bench.cpu_caches import cache_field
from bench.devices import Backend, DeviceConfig
from bench.discovery import AttachedDevice
from bench.runners.adb_transport import ConnectionLost
from bench.runners.base import BatchItem, DeviceLost, Failure, Result, RunnerError
from bench.runners.batch_script import split_batch_output, wrap_command
from bench.runners.benchmark_result import parse_result_file
from bench.runners.checks import require
from bench.runners.local_files import local_hashes, read_local
from bench.runners.parse import (
    ParseError,
    parse_benchmark_model,
    parse_litert_benchmark,
    parse_op_profile,
)
from bench.runners.phone_pinning import check_pinning, pin_prefix, resolve_cpus
from bench.runners.phone_runner import PhoneRunner
from bench.runners.tflite_settings import TfliteSettings, remote_binary, tool_check
from bench.runners.tflite_tool_probe import PROBE_SPEC, ToolProber, probe_model_path
from bench.runners.tool_flags import (
    LITERT,
    LITERT_PY,
    TFLITE,
    Flags,
    RunSpec,
    delegation_problem,
    merged,
    parse_extra_args,
    render,
    tool_flags,
    unconsumed,
)
from bench.tflite_build import build_layer
from bench.tflite_read import stores_float16

ERR_TAIL = 4000  # bytes of a failed run's stderr worth sending back


# What precision the GPU delegate computes in, per tool (see ``model_command``).
GPU_PRECISION = {
    TFLITE: "the model's: float16 models in fp16, others in fp32 "
            "(--gpu_precision_loss_allowed per model)",
    LITERT: "the model's: float16 models in fp16, others in fp32 (--gpu-precision per model)",
    LITERT_PY: "the delegate's default (fp16 allowed): it has no precision flag",
}


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
            push.append((build_layer(PROBE_SPEC), probe_model_path(self.phone.work_dir), 0o644))
        if self._local is not None:
            if have is None or have[0] not in local_hashes(self._local) or not have[1]:
                push.append((self._local, self.remote_binary, 0o755))
            self.tool_hash = hashlib.sha256(self._local).hexdigest()
        else:
            self.tool_hash = have[0] if have else ""
        self.phone.transport.push_many(push)
        fix = f"fix cpus in [backends.{self.backend}] of {self.config.path}"
        self.cpus, notes = resolve_cpus(self.settings.cpus, info, self.serial, fix)
        self.pinning, more = pin_prefix(info.tools, self.cpus, self.settings.model_timeout_s)
        self.notes += notes + more
        self.probe = ToolProber(self.phone, self.settings, self.remote_binary, self.pinning,
                                self.extra, self.backend, fix, self.notes).probe()
        if self.probe.problem:
            raise RunnerError(self.probe.problem)
        self.flavor = self.probe.flavor
        check_pinning(self.pinning, self.cpus, self.probe.pinned_to, self.serial, fix)

    def _spec(self, half: bool, result_file: str | None = None,
              op_profile: bool = False) -> RunSpec:
        return self.settings.run_spec(half, self.probe.full_delegation, result_file, op_profile)

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
            **cache_field(self.phone.info.caches, self.cpus or self.phone.info.big_cores()),
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
            self.phone.thermal.temps_snippet("before"),
        ]
        for i, model in enumerate(models):
            lines += wrap_command(i, self.model_command(model, folder, i,
                                                        half=bool(half) and half[i]))
        lines.append(self.phone.thermal.temps_snippet("after"))
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

