"""Qualcomm SNPE on a phone over ADB: the NetAdapt paper's mobile-GPU setup.

Per batch: ``snpe-tflite-to-dlc`` on this machine for every model, then ONE sync
session pushes the DLCs and the batch script, ONE shell runs ``snpe-net-run`` per
model (``--use_gpu`` / ``--use_dsp`` / CPU, ``basic`` profiling as Qualcomm's snpe_bench
times totals; ``detailed`` only for a per-layer profile), ONE sync session pulls the
SNPEDiag logs, and ``snpe-diagview`` (a host tool) turns each into the averaged total.
The SDK's Android binaries and libraries are pushed once: for the DSP, the
``hexagon-vNN`` library of the phone's SoC (the backend's ``hexagon`` table), and
``snpe-platform-validator`` is run at setup, its answer kept in the fingerprint.

Not run on real hardware here (no SDK, no Snapdragon phone): the command lines and
the parser follow SNPE's documented usage and output (see bench/runners/snpe_commands
and snpe_diagview.py); the plumbing is tested over real adb with a fake SDK of shell scripts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import posixpath
import re
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.devices import Backend, ConfigError, DeviceConfig
from bench.discovery import AttachedDevice
from bench.runners.adb_phone import DEFAULT_WORK_DIR
from bench.runners.adb_transport import ConnectionLost
from bench.runners.base import BatchItem, DeviceLost, Failure, Result, RunnerError, Timing
from bench.runners.checks import Check, require
from bench.runners.local_files import elf_abi
from bench.runners.parse import ParseError
from bench.runners.phone_runner import PhoneRunner
from bench.runners.snpe_commands import (
    NET_RUN,
    PERF_PROFILES,
    RUNTIME_FLAGS,
    VALIDATOR,
    DeviceSdk,
    NetRunJob,
    SdkLayout,
    SnpeSdkMissing,
    convert_cmd,
    diagview_cmd,
    find_sdk,
    host_env,
    job_paths,
    net_run_env,
    net_run_script,
    sdk_layout,
    split_batch_output,
)
from bench.runners.snpe_diagview import parse_snpe_diagview

HOST_TOOL_TIMEOUT_S = 300


class SnpeMissing(RunnerError):
    """No usable SNPE SDK on this machine (the message says how to point to one)."""


@dataclass(frozen=True)
class SnpeSettings:
    """A ``runner = "snpe"`` backend's settings, checked."""

    snpe_root: str | None = None  # else env SNPE_ROOT
    runtime: str = "gpu"
    perf_profile: str = "burst"
    profiling_level: str = "basic"
    runs: int = 50
    hexagon: Any = None  # SoC (ro.board.platform) -> Hexagon version, e.g. {sm8550 = "v73"}
    work_dir: str = DEFAULT_WORK_DIR
    batch_size: int = 50
    extra_args: tuple[str, ...] = ()
    model_timeout_s: float = 300.0

    @classmethod
    def from_backend(cls, config: DeviceConfig, backend: Backend) -> SnpeSettings:
        s = dict(backend.settings)
        where = f"{config.path}: key 'backends.{backend.name}."
        known = [f.name for f in dataclasses.fields(cls)]
        checks: dict[str, tuple[Any, str]] = {
            "snpe_root": (lambda v: isinstance(v, str), "a folder path"),
            "runtime": (lambda v: v in RUNTIME_FLAGS, f"one of {', '.join(RUNTIME_FLAGS)}"),
            "perf_profile": (lambda v: v in PERF_PROFILES, f"one of {', '.join(PERF_PROFILES)}"),
            "profiling_level": (lambda v: v in ("basic", "moderate", "linting"),
                                "basic or moderate (detailed slows every layer: it is for "
                                + "per-layer profiles only), or linting on the DSP"),
            "hexagon": (lambda v: isinstance(v, dict) and all(
                isinstance(a, str) and a.startswith("v") for a in v.values()),
                'a table of SoC = "vNN" (e.g. { sm8550 = "v73" })'),
            "runs": (lambda v: _positive_int(v), "a positive integer"),
            "batch_size": (lambda v: _positive_int(v), "a positive integer"),
            "work_dir": (lambda v: isinstance(v, str) and v.startswith("/"), "an absolute path"),
            "extra_args": (lambda v: isinstance(v, list) and all(isinstance(a, str) for a in v),
                           "a list of strings"),
            "model_timeout_s": (lambda v: isinstance(v, (int, float)) and v > 0, "seconds"),
        }
        for key, value in s.items():
            if key not in known:
                raise ConfigError(f"{where}{key}': unknown setting (known: {', '.join(known)})")
            ok, expected = checks[key]
            if not ok(value):
                raise ConfigError(f"{where}{key}': expected {expected}, got {value!r}")
        if s.get("profiling_level") == "linting" and s.get("runtime", cls.runtime) != "dsp":
            raise ConfigError(f"{where}profiling_level': linting profiles the DSP (HTP) only; "
                              "use basic for this runtime")
        s["extra_args"] = tuple(s.get("extra_args", ()))
        return cls(**s)


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def sdk_of(settings: SnpeSettings) -> Path:
    try:
        return find_sdk(settings.snpe_root or None, need_dsp=settings.runtime == "dsp")
    except SnpeSdkMissing as e:
        raise SnpeMissing(str(e)) from None


def sdk_check(settings: SnpeSettings) -> Check:
    """The SNPE SDK on this machine (snpe_root, else SNPE_ROOT), as the runner finds it."""
    try:
        root = sdk_of(settings)
    except SnpeMissing as e:
        how = SnpeSdkMissing.how
        return Check("SNPE SDK", False, str(e).removesuffix(".").removesuffix(how).rstrip(":; "),
                     how)
    where = "snpe_root" if settings.snpe_root else "SNPE_ROOT"
    return Check("SNPE SDK", True, f"{root} ({where})")


def net_run_check(layout: SdkLayout, abis: list[str], serial: str) -> Check:
    """The SDK's snpe-net-run is built for the phone's ABI."""
    net_run = layout.android_bin / NET_RUN
    abi = elf_abi(net_run.read_bytes()[:64])
    if abi is not None and abi not in abis:
        return Check("snpe-net-run", False, f"{net_run} is built for {abi}, but {serial} runs "
                     f"{', '.join(abis)}", "use an SNPE SDK with a build for that ABI")
    return Check("snpe-net-run", True, f"{net_run} ({abi or 'not ELF: a script?'})")


class SnpeRunner(PhoneRunner):
    """Converts, pushes and profiles batches of models with SNPE on one phone."""

    settings_class = SnpeSettings

    def __init__(self, config: DeviceConfig, backend: Backend, attached: AttachedDevice,
                 settings: SnpeSettings | None = None):
        super().__init__(config, backend, attached, settings)
        self.sdk = sdk_of(self.settings)
        self.layout = sdk_layout(self.sdk)
        self.env = host_env(self.sdk)
        self._first_setup()

    @classmethod
    def check_host(cls, settings: SnpeSettings) -> None:
        require(sdk_check(settings), SnpeMissing)  # no SDK: say so before touching any phone

    # -- setup -------------------------------------------------------------------------
    @property
    def remote_sdk(self) -> DeviceSdk:
        root = posixpath.join(self.phone.work_dir, "snpe")
        dsp = posixpath.join(root, "dsp") if self.settings.runtime == "dsp" else None
        return DeviceSdk(posixpath.join(root, "bin"), posixpath.join(root, "lib"), dsp)

    def _sdk_files(self, dsp_lib: Path | None) -> list[tuple[Path, str, int]]:
        """(local, remote, mode) of the SDK parts the phone needs."""
        r = self.remote_sdk
        dirs = [(self.layout.android_bin, r.bin_dir, 0o755), (self.layout.android_lib,
                                                               r.lib_dir, 0o644)]
        if r.dsp_lib_dir and dsp_lib is not None:
            dirs.append((dsp_lib, r.dsp_lib_dir, 0o644))
        return [(f, posixpath.join(remote, f.name), mode) for local, remote, mode in dirs
                for f in sorted(local.iterdir()) if f.is_file()]

    def _dsp_lib(self) -> Path | None:
        """The SDK's DSP library for this phone's SoC (the backend's ``hexagon`` table)."""
        if self.settings.runtime != "dsp":
            return None
        soc = self.phone.device_fingerprint()["soc"] or "?"
        where = f"[backends.{self.backend}] of {self.config.path}"
        arch = (self.settings.hexagon or {}).get(soc)
        lib = self.layout.dsp_lib(arch)
        if lib is not None and lib.name == "dsp":  # SNPE 1.x: one library for every SoC
            return lib
        if arch is None:
            raise RunnerError(f"{self.serial}'s SoC {soc!r} is not in the hexagon table of "
                              f"{where}: add {soc} = \"vNN\" (its Hexagon DSP version; the SDK "
                              f"has {', '.join(self.layout.dsp_archs) or 'none'})")
        if lib is None:
            raise RunnerError(f"SNPE SDK {self.sdk} has no lib/hexagon-{arch}/unsigned for "
                              f"{soc} (it has {', '.join(self.layout.dsp_archs) or 'none'}); "
                              f"use an SDK that supports {soc}, or fix hexagon in {where}")
        return lib

    def _setup(self) -> None:
        """Probe (one round trip); push the SDK's Android parts unless the stamp matches;
        ask snpe-platform-validator about the runtime when the SDK has it."""
        self.notes = []
        stamp_path = posixpath.join(self.phone.work_dir, "snpe", "stamp")
        info = self.phone.probe((stamp_path,), stay_awake=True)
        self.watch_heat()
        require(net_run_check(self.layout, info.abis, self.serial))
        self.dsp_lib = self._dsp_lib()
        files = self._sdk_files(self.dsp_lib)
        stamp = _stamp(files)
        have = info.files.get(stamp_path)
        if have is None or have[0] not in (hashlib.sha256(stamp).hexdigest(),
                                           hashlib.md5(stamp).hexdigest()):
            self.phone.transport.push_many([*files, (stamp, stamp_path, 0o644)])
        self.stamp = hashlib.sha256(stamp).hexdigest()
        self.validator = self.validate_platform()

    def validate_platform(self) -> list[str] | None:
        """snpe-platform-validator's answer for the runtime (None: the SDK has none);
        a runtime it finds missing is a RunnerError with its words."""
        if not (self.layout.android_bin / VALIDATOR).is_file():
            return None
        r, q = self.remote_sdk, shlex.quote
        env = " ".join(net_run_env(r))
        argv = [posixpath.join(r.bin_dir, VALIDATOR), "--runtime", self.settings.runtime,
                "--coreVersion", "--libVersion", "--testRuntime"]
        res = self.phone.transport.shell(f"{env} {' '.join(q(a) for a in argv)} 2>&1",
                                         timeout_s=120)
        lines = [line.strip() for line in res.output.splitlines() if line.strip()]
        if res.returncode != 0 or any(re.search(r"\b(fail|not (available|supported))",
                                                line, re.IGNORECASE) for line in lines):
            raise RunnerError(f"snpe-platform-validator says the {self.settings.runtime} runtime "
                              f"cannot run on {self.serial} (exit {res.returncode}): "
                              f"{' | '.join(lines[-6:])}; use another runtime in "
                              f"[backends.{self.backend}] of {self.config.path}")
        return lines[-12:]

    def fingerprint(self) -> dict[str, Any]:
        s = self.settings
        return {**self.phone.device_fingerprint(), "runner": "snpe",
                "sdk": self.sdk.name, "sdk_stamp": self.stamp, "runtime": s.runtime,
                "perf_profile": s.perf_profile, "profiling_level": s.profiling_level,
                "runs": s.runs, "extra_args": list(s.extra_args),
                "dsp_lib": self.dsp_lib.parent.name if self.dsp_lib is not None else None,
                "platform_validator": self.validator, "notes": self.notes}

    # -- measuring ---------------------------------------------------------------------
    def measure(self, batch: Sequence[BatchItem]) -> list[Result]:
        if not batch:
            return []
        with tempfile.TemporaryDirectory(prefix="netadapt-snpe-") as tmp:
            converted = [self._convert(it, Path(tmp), i) for i, it in enumerate(batch)]
            jobs = {i: c for i, c in enumerate(converted) if not isinstance(c, Failure)}
            results: list[Result] = [c if isinstance(c, Failure) else Failure("not run")
                                     for c in converted]
            if jobs:
                measured, _ = self.measure_cool(lambda: self._run(jobs, Path(tmp)))
                for i, r in zip(jobs, measured):
                    results[i] = r
        return results

    def _convert(self, item: BatchItem, tmp: Path, i: int) -> tuple[Path, int] | Failure:
        """tflite -> dlc on this machine: (dlc path, input bytes) or a Failure."""
        tflite, dlc = tmp / f"m{i}.tflite", tmp / f"m{i}.dlc"
        tflite.write_bytes(item.model)
        try:
            name, shape = input_of(item.model)
        except (ValueError, RuntimeError) as e:
            return Failure(f"not a loadable .tflite model: {e}")
        argv = convert_cmd(self.sdk, tflite, dlc, name, shape)
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True,
                              timeout=HOST_TOOL_TIMEOUT_S, check=False)
        if proc.returncode != 0 or not dlc.is_file():
            return Failure(f"snpe-tflite-to-dlc failed (exit {proc.returncode})",
                           proc.stdout + proc.stderr)
        size = 4
        for d in shape:
            size *= int(d)
        return dlc, size

    def op_profile(self, model: bytes) -> list[tuple[str, float]] | None:
        """Each layer's name and time (us) from one run at ``detailed`` profiling; None on
        the DSP, whose layer times are cycles."""
        if self.settings.runtime == "dsp":
            return None
        with tempfile.TemporaryDirectory(prefix="netadapt-snpe-") as tmp:
            converted = self._convert(BatchItem("profile", model), Path(tmp), 0)
            if isinstance(converted, Failure):
                raise RunnerError(f"{self.serial}: {converted.error}: {converted.output[-500:]}")
            (r,), _ = self._run({0: converted}, Path(tmp), "detailed")
        if isinstance(r, Failure):
            raise RunnerError(f"{self.serial}: no per-layer profile: {r.error}")
        return [(name or f"layer {i}", value) for i, name, value, unit, _ in r.extra["layers"]
                if unit == "us"]

    def _run(self, jobs: dict[int, tuple[Path, int]], tmp: Path,
             profiling_level: str | None = None) -> tuple[list[Result], str]:
        folder = self.phone.new_batch_dir()
        names = {i: f"m{i}.dlc" for i in jobs}
        script = "\n".join([
            self.phone.thermal.temps_snippet("before"),
            net_run_script(folder, self.remote_sdk,
                           [NetRunJob(names[i], size) for i, (_, size) in jobs.items()],
                           self.settings.runtime, self.settings.perf_profile,
                           profiling_level or self.settings.profiling_level, self.settings.runs,
                           self.settings.extra_args),
            self.phone.thermal.temps_snippet("after")])
        script_path = posixpath.join(folder, "run.sh")
        self.phone.transport.push_many(
            [(dlc, posixpath.join(folder, names[i]), 0o644) for i, (dlc, _) in jobs.items()]
            + [(script.encode(), script_path, 0o644)])
        try:
            res = self.phone.transport.shell(f"sh {shlex.quote(script_path)}")
        except ConnectionLost as e:
            raise DeviceLost(str(e)) from None
        blocks = split_batch_output(res.stdout)
        order = list(jobs)
        logs = self.phone.transport.pull_many(
            [job_paths(folder, k).diag_log for k, _ in enumerate(order)
             if blocks.get(k, (1, ""))[0] == 0])
        results = [self._result(blocks.get(k), logs.get(job_paths(folder, k).diag_log), tmp, k)
                   for k, _ in enumerate(order)]
        return results, res.stdout

    def _result(self, block: tuple[int, str] | None, log: bytes | None, tmp: Path,
                k: int) -> Result:
        if block is None:
            return Failure("the batch script stopped before this model")
        rc, body = block
        if rc != 0:
            return Failure(f"snpe-net-run failed on this model (exit {rc})", body)
        if log is None:
            return Failure("snpe-net-run left no SNPEDiag log (profiling off?)", body)
        path = tmp / f"diag{k}.log"
        path.write_bytes(log)
        proc = subprocess.run(diagview_cmd(self.sdk, path), env=self.env, capture_output=True,
                              text=True, timeout=HOST_TOOL_TIMEOUT_S, check=False)
        try:
            profile = parse_snpe_diagview(proc.stdout)
        except ParseError as e:
            return Failure(f"unparseable snpe-diagview output: {e}", proc.stdout + proc.stderr)
        mean = profile.total_inference_us
        self.timed_ns += int(mean * self.settings.runs * 1000)
        layers = [[t.index, profile.layer_names.get(t.index), t.value, t.unit, t.runtime]
                  for t in profile.layer_times]
        return Timing(median_us=None, mean_us=mean, std_us=0.0, min_us=mean, max_us=mean,
                      runs=self.settings.runs, extra={
                          "forward_us": profile.forward_us, "init_us": profile.init_us,
                          "layers": layers, **profile.extra})


def input_of(model: bytes) -> tuple[str, list[int]]:
    """The single input's name and shape of a .tflite model (for the converter's -d)."""
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_content=model).get_input_details()
    if len(details) != 1:
        raise ValueError(f"expected one input, the model has {len(details)}")
    return details[0]["name"], [int(d) for d in details[0]["shape"]]


def _stamp(files: list[tuple[Path, str, int]]) -> bytes:
    """What identifies the pushed SDK parts: names, sizes and mtimes."""
    lines = [f"{remote} {local.stat().st_size} {int(local.stat().st_mtime)}"
             for local, remote, _ in files]
    return ("\n".join(lines) + "\n").encode()
