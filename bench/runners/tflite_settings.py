"""A ``runner = "adb-tflite"`` backend's settings, checked when the config is read, and
where its benchmark tool lives on the phone (``tool_check``: the runner's setup and
`netadapt doctor` judge it the same way)."""

from __future__ import annotations

import dataclasses
import posixpath
import shlex
from dataclasses import dataclass
from typing import Any

from bench.devices import Backend, ConfigError, DeviceConfig
from bench.runners.adb_phone import DEFAULT_WORK_DIR, Phone
from bench.runners.checks import Check, adb_command
from bench.runners.local_files import elf_abi
from bench.runners.tool_flags import RunSpec, parse_extra_args

TOOLS = ("benchmark_model", "litert-benchmark")
ACCELERATORS = ("cpu", "gpu")  # the CPU, or the stock GPU delegate
RUNNER_OWNS = ("graph", "model", "result_file_path")  # flags extra_args may not replace


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
        _check(s, where, "accelerator", lambda v: v in ACCELERATORS,
               f"one of {', '.join(ACCELERATORS)}")
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

    def run_spec(self, half: bool, full_delegation: bool, result_file: str | None = None,
                 op_profile: bool = False) -> RunSpec:
        """One run's settings (``half``: the model stores float16 weights)."""
        return RunSpec(threads=self.threads, runs=self.runs, warmup=self.warmup,
                       min_secs=self.min_secs, gpu=self.accelerator == "gpu", half=half,
                       full_delegation=full_delegation, result_file=result_file,
                       op_profile=op_profile)


def _check(s: dict[str, Any], where: str, key: str, ok: Any, expected: str) -> None:
    if key in s and not ok(s[key]):
        raise ConfigError(f"{where}{key}': expected {expected}, got {s[key]!r}")


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

