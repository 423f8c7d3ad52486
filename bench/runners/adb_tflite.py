"""TFLite on a phone over ADB: the stock ``benchmark_model`` (CPU, or the GPU delegate
with ``--use_gpu=true``), or ai-edge-litert's ``litert-benchmark``.

Per batch, two round trips: ONE sync session pushes every model and the batch script,
ONE shell runs the script, which measures the models one after another (pinned with
``taskset``) and prints each one's output between markers, with the phone's thermal
zones read before and after. A batch that ended hot is measured again after a
cool-down. The benchmark binary is pushed once (its ABI checked against the phone's)
and kept, keyed by its hash; the batches folder is removed on close.
"""

from __future__ import annotations

import dataclasses
import posixpath
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.devices import Backend, ConfigError, DeviceConfig
from bench.discovery import AttachedDevice
from bench.runners.adb_phone import (
    DEFAULT_WORK_DIR,
    Phone,
    PhoneRunner,
    elf_abi,
    local_hashes,
    read_local,
)
from bench.runners.adb_transport import ConnectionLost
from bench.runners.base import BatchItem, DeviceLost, Failure, Result, RunnerError
from bench.runners.batch_script import split_batch_output, wrap_command
from bench.runners.checks import Check, adb_command, require
from bench.runners.parse import (
    ParseError,
    parse_benchmark_model,
    parse_litert_benchmark,
    parse_op_profile,
)
from bench.tflite_read import stores_float16

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
        return cls(**s)


def _check(s: dict[str, Any], where: str, key: str, ok: Any, expected: str) -> None:
    if key in s and not ok(s[key]):
        raise ConfigError(f"{where}{key}': expected {expected}, got {s[key]!r}")


# What precision the GPU delegate computes in, per tool (see ``model_command``).
GPU_PRECISION = {
    "benchmark_model": "the model's: float16 models in fp16, others in fp32 "
                       "(--gpu_precision_loss_allowed per model)",
    "litert-benchmark": "the delegate's default (fp16 allowed): it has no precision flag",
}


class AdbTfliteRunner(PhoneRunner):
    """Measures batches of .tflite models on one phone with one backend's settings."""

    settings_class = TfliteSettings

    def __init__(self, config: DeviceConfig, backend: Backend, attached: AttachedDevice,
                 settings: TfliteSettings | None = None):
        super().__init__(config, backend, attached, settings)
        self._local = (read_local(self.settings.binary, config, f"backends.{backend.name}.binary")
                       if self.settings.binary else None)
        self._setup()

    @property
    def op_profiler(self) -> str:  # type: ignore[override]
        return ("benchmark_model --enable_op_profiling" if self.settings.tool == "benchmark_model"
                else "")

    # -- setup -------------------------------------------------------------------------
    @property
    def remote_binary(self) -> str:
        return remote_binary(self.settings, self.phone.work_dir)

    def _setup(self) -> None:
        """Probe the phone (one round trip); push the binary if it is not there yet."""
        self.notes = []
        info = self.phone.probe((self.remote_binary,))
        have = info.files.get(self.remote_binary)
        require(tool_check(self.settings, self._local, self.phone, self.backend))
        if self._local is not None:
            if have is None or have[0] not in local_hashes(self._local) or not have[1]:
                self.phone.transport.push_many([(self._local, self.remote_binary, 0o755)])
            self.tool_hash = _sha(self._local)
        else:
            self.tool_hash = have[0] if have else ""
        self.cpus = self._resolve_cpus()
        self.pinning = self._pin_prefix()

    def _resolve_cpus(self) -> list[int] | None:
        want, cpus = self.settings.cpus, self.phone.info.cpus
        if want == "all":
            return None
        if isinstance(want, list):
            unknown = [c for c in want if cpus and c not in cpus]
            if unknown:
                raise RunnerError(f"{self.serial} has no CPU {unknown} (it has {sorted(cpus)}); "
                                  f"fix cpus in [backends.{self.backend}] of {self.config.path}")
            return sorted(want)
        freqs = {c: f for c, (f, _) in cpus.items() if f}
        if not freqs:
            self.notes.append(f"cpus = {want!r}: no cpufreq on the phone, big cores unknown; "
                              "not pinned")
            return None
        top = max(freqs.values())
        big = sorted(c for c, f in freqs.items() if f == top)
        return big[-1:] if want == "biggest" else big

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

    def fingerprint(self) -> dict[str, Any]:
        """Device, runtime and settings; no serial: phones of one model share a version."""
        s = self.settings
        used = self.cpus or sorted(self.phone.info.cpus)
        info = self.phone.info.cpus
        return {
            **self.phone.device_fingerprint(),
            "runner": "adb-tflite", "tool": s.tool, "tool_hash": self.tool_hash,
            "runtime_version": s.runtime_version or None, "accelerator": s.accelerator,
            "threads": s.threads, "cpus": self.cpus, "pinned": "taskset" in self.pinning,
            "governor": sorted({info[c][1] for c in used if c in info and info[c][1]}) or None,
            "max_freq_khz": sorted({info[c][0] for c in used if c in info and info[c][0]})
            or None,
            "warmup": s.warmup, "runs": s.runs, "min_secs": s.min_secs,
            "extra_args": list(s.extra_args), "notes": self.notes,
            **({"gpu_precision": GPU_PRECISION[s.tool]} if s.accelerator == "gpu" else {}),
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
        results, _ = self.measure_cool(lambda: self._run(script_path, len(batch)))
        return results

    def op_profile(self, model: bytes) -> list[tuple[str, float]] | None:
        """Each op's name and average time (us, run order) from ``benchmark_model
        --enable_op_profiling=true``; None for a tool without an op profiler."""
        if self.settings.tool != "benchmark_model":
            return None
        folder = self.phone.new_batch_dir()
        path = posixpath.join(folder, "profile.tflite")
        self.phone.transport.push_many([(model, path, 0o644)])
        res = self.phone.transport.shell(self.model_command(
            path, folder, 0, extra=("--enable_op_profiling=true",), half=stores_float16(model)))
        try:
            return [(op.node_type, op.avg_ms * 1000) for op in parse_op_profile(res.output)]
        except ParseError as e:
            raise RunnerError(f"{self.serial}: no op profile from benchmark_model: {e}; "
                              f"its output ends: {res.output.strip()[-ERR_TAIL:]}") from None

    def _run(self, script_path: str, n: int) -> tuple[list[Result], float | None, float | None]:
        try:
            res = self.phone.transport.shell(f"sh {shlex.quote(script_path)}")
        except ConnectionLost as e:
            done = self._results(e.output, n)
            raise DeviceLost(str(e), {i: r for i, r in enumerate(done) if r is not None}) from None
        out = res.stdout
        results = self._results(out, n)
        if all(r is None for r in results):  # the script itself failed: not the models' fault
            raise RunnerError(f"{self.serial}: the batch script failed (exit {res.returncode}) "
                              f"before any model ran: {res.output.strip()[-ERR_TAIL:]}")
        return ([r if r is not None else Failure(
            f"the batch script stopped before this model (exit {res.returncode})",
            res.output[-ERR_TAIL:]) for r in results],
            self.phone.temperature_c(out, "before"), self.phone.temperature_c(out, "after"))

    def _results(self, text: str, n: int) -> list[Result | None]:
        blocks = split_batch_output(text)
        out: list[Result | None] = []
        for i in range(n):
            if i not in blocks:
                out.append(None)
                continue
            rc, body = blocks[i]
            out.append(self._result(rc, body))
        return out

    def _result(self, rc: int, body: str) -> Result:
        tool = self.settings.tool
        if rc != 0:
            why = (f"timed out after {self.settings.model_timeout_s:.0f} s" if rc == 124
                   else f"killed by signal {rc - 128}" if rc > 128 else f"exit code {rc}")
            return Failure(f"{tool} failed on this model: {why}", body)
        try:
            timing = (parse_litert_benchmark(body) if tool == "litert-benchmark"
                      else parse_benchmark_model(body))
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

    def model_command(self, model: str, folder: str, i: int, extra: Sequence[str] = (),
                      half: bool = False) -> str:
        """One model's command line, every word quoted (``extra``: more tool flags;
        ``half``: the model stores float16 weights).

        On the GPU, benchmark_model's precision follows the model's dtype: a float16 model
        runs in half precision, anything else in float32. (Its default allows precision
        loss, which would time float32 keys in fp16.) A ``--gpu_precision_loss_allowed``
        in ``extra_args`` comes later on the line and wins."""
        s, q = self.settings, shlex.quote
        if s.tool == "benchmark_model":
            args = [f"--graph={model}", f"--num_threads={s.threads}", f"--num_runs={s.runs}",
                    f"--warmup_runs={s.warmup}"]
            if s.min_secs is not None:
                args += [f"--min_secs={s.min_secs:g}", f"--warmup_min_secs={s.min_secs:g}"]
            if s.accelerator == "gpu":
                args += ["--use_gpu=true",
                         f"--gpu_precision_loss_allowed={'true' if half else 'false'}"]
        else:
            args = [f"--model={model}", f"--num_runs={s.runs}", f"--warmup_runs={s.warmup}",
                    f"--num_threads={s.threads}"]
            if s.accelerator == "gpu":
                args.append("--use_gpu")
        argv = " ".join(q(a) for a in [*self.pinning, self.remote_binary, *args, *s.extra_args,
                                       *extra])
        if s.tool == "benchmark_model":
            return f"{argv} 2>&1"  # its results are log lines on stderr
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


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
