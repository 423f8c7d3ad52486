"""Device configs (one TOML per device kind) -> DeviceConfig objects -> runners.

A config names its backends (``BackendName``: ``tflite-cpu``, ``tflite-gpu``,
``snpe-gpu``, ...), each with a runner kind and that runner's settings. Every error names
the file, the key and what was expected, since users write these files by hand.
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from bench.runners.base import RUNNERS, Runner, runner_class
from lut_db.errors import UserError
from lut_db.linux import require_linux

CONFIG_DIR = Path(__file__).resolve().parent.parent / "device_configs"
KINDS = ("host", "android")


class ConfigError(UserError, ValueError):
    """A device config that is missing, unreadable or invalid."""


class BackendName(StrEnum):
    """What the runners run on, by name: the values ``--backend`` takes. A config's
    ``[backends.NAME]`` tables name some of them (``DeviceConfig.backend`` says which)."""

    TFLITE_CPU = "tflite-cpu"  # the host runner; adb-tflite on the phone's CPU
    TFLITE_GPU = "tflite-gpu"  # adb-tflite, accelerator = "gpu" (the TFLite GPU delegate)
    SNPE_CPU = "snpe-cpu"  # snpe, runtime = "cpu" (and so on for each SNPE runtime)
    SNPE_GPU = "snpe-gpu"
    SNPE_DSP = "snpe-dsp"
    SNPE_AIP = "snpe-aip"


@dataclass(frozen=True)
class Backend:
    name: str
    runner: str
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceConfig:
    name: str
    path: Path
    kind: str
    description: str
    backends: dict[str, Backend]
    default_backend: str
    match: dict[str, list[str]] = field(default_factory=dict)
    adb_servers: tuple[str, ...] = ()
    thermal: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def backend(self, name: str | None = None) -> Backend:
        name = str(name or self.default_backend)  # a BackendName reads as its value
        if name not in self.backends:
            raise ConfigError(f"{self.path}: device {self.name!r} has no backend {name!r}; "
                              f"it has: {', '.join(self.backends)}")
        return self.backends[name]


def config_dir() -> Path:
    return Path(os.environ.get("NETADAPT_CONFIGS", CONFIG_DIR))


def known_configs(directory: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (directory or config_dir()).glob("*.toml"))


def load_config(name: str, directory: Path | None = None) -> DeviceConfig:
    """A config by device name (``device_configs/<name>.toml``) or by path to a TOML file."""
    directory = directory or config_dir()
    path = Path(name) if name.endswith(".toml") else directory / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(known_configs(directory)) or "none"
        raise ConfigError(f"unknown device {name!r}: no {path} (known devices: {known})")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: malformed TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file (TOML): {e}") from None
    return parse_config(data, path)


TOP_KEYS = ("name", "kind", "description", "default_backend", "backends", "match", "adb",
            "thermal")


def parse_config(data: dict[str, Any], path: Path) -> DeviceConfig:
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(TOP_KEYS)})")
    name = _get(data, path, "name", str, path.stem)
    kind = _get(data, path, "kind", str, "android")
    if kind not in KINDS:
        raise ConfigError(f"{path}: key 'kind': expected one of {', '.join(KINDS)}, got {kind!r}")
    raw_backends = _get(data, path, "backends", dict)
    if not raw_backends:
        raise ConfigError(f"{path}: key 'backends': expected at least one [backends.NAME] table")
    backends = {}
    for bname, b in raw_backends.items():
        if not isinstance(b, dict):
            raise ConfigError(f"{path}: key 'backends.{bname}': expected a table")
        runner = _get(b, path, "runner", str, where=f"backends.{bname}.")
        if runner not in RUNNERS:
            raise ConfigError(f"{path}: key 'backends.{bname}.runner': expected one of "
                              f"{', '.join(sorted(RUNNERS))}, got {runner!r}")
        settings = {k: v for k, v in b.items() if k not in ("runner", "default")}
        backends[bname] = Backend(bname, runner, settings)
    defaults = [n for n, b in raw_backends.items() if b.get("default")]
    default = _get(data, path, "default_backend", str, defaults[0] if defaults
                   else next(iter(backends)))
    if default not in backends:
        raise ConfigError(f"{path}: key 'default_backend': {default!r} is not one of the "
                          f"backends ({', '.join(backends)})")
    match = _match_table(_get(data, path, "match", dict, {}), path)
    adb = _checked_table(_get(data, path, "adb", dict, {}), path, "adb", ADB_KEYS)
    servers = adb.get("servers", [])
    if not isinstance(servers, list) or not all(isinstance(s, str) for s in servers):
        raise ConfigError(f"{path}: key 'adb.servers': expected a list of \"host:port\" strings")
    thermal = _checked_table(_get(data, path, "thermal", dict, {}), path, "thermal", THERMAL_KEYS)
    return DeviceConfig(name, path, kind, _get(data, path, "description", str, ""), backends,
                        default, match, tuple(servers), thermal, data)


# Optional tables of an android config: key -> (accepted types, what the message says).
ADB_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "servers": ((list,), 'a list of "host:port" strings'),
    "rejoin_timeout_s": ((int, float), "seconds to wait for a lost phone to come back"),
    "command_timeout_s": ((int, float), "seconds of silence before a phone counts as hung"),
    "sysfs": ((str,), "the phones' sysfs folder (default /sys)"),
}
THERMAL_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "limit_c": ((int, float), "degrees Celsius above which the phone counts as hot"),
    "cooldown_s": ((int, float), "the longest wait for a hot phone to cool down, seconds"),
    "poll_s": ((int, float), "seconds between temperature reads while cooling down"),
    "retries": ((int,), "how often a batch that ended hot is measured again"),
    "zones": ((list,), "globs of thermal zone types to watch (default: skin, battery, xo)"),
    "sysfs": ((str,), "the thermal zones' folder on the phone"),
}


def _checked_table(table: dict[str, Any], path: Path, name: str,
                   known: dict[str, tuple[tuple[type, ...], str]]) -> dict[str, Any]:
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"{path}: unknown key '{name}.{key}' (known: {', '.join(known)})")
        types, what = known[key]
        if not isinstance(value, types) or isinstance(value, bool):
            raise ConfigError(f"{path}: key '{name}.{key}': expected {what}, got {value!r}")
    return table


def _match_table(match: dict[str, Any], path: Path) -> dict[str, list[str]]:
    out = {}
    for key, value in match.items():
        patterns = [value] if isinstance(value, str) else value
        if not isinstance(patterns, list) or not patterns or not all(
                isinstance(p, str) for p in patterns):
            raise ConfigError(f"{path}: key 'match.{key}': expected a pattern string or a "
                              f"list of them (globs, or \"re:REGEX\"), got {value!r}")
        out[key] = patterns
    return out


_MISSING = object()


def _get(d: dict[str, Any], path: Path, key: str, typ: type, default: Any = _MISSING,
         where: str = "") -> Any:
    if key not in d:
        if default is _MISSING:
            raise ConfigError(f"{path}: missing key '{where}{key}' ({typ.__name__} expected)")
        return default
    value = d[key]
    if not isinstance(value, typ):
        raise ConfigError(f"{path}: key '{where}{key}': expected {typ.__name__}, "
                          f"got {type(value).__name__} {value!r}")
    return value


def host_runner_settings(settings: dict[str, Any], path: Path) -> dict[str, Any]:
    """Settings of a host backend, checked: threads, cpus, warmup, runs, min_time_ms,
    passes, batch_size."""
    allowed = {"threads": int, "cpus": (list, str), "warmup": int, "runs": int,
               "min_time_ms": (int, float), "passes": int, "batch_size": int}
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if key not in allowed:
            raise ConfigError(f"{path}: unknown host backend setting {key!r} "
                              f"(known: {', '.join(allowed)})")
        if not isinstance(value, allowed[key]) or isinstance(value, bool):
            raise ConfigError(f"{path}: key {key!r}: expected {_kind(allowed[key])}, "
                              f"got {value!r}")
        out[key] = value
    if out.get("cpus") == "last":
        out.pop("cpus")
    elif isinstance(out.get("cpus"), str) or not all(
            isinstance(c, int) and not isinstance(c, bool) for c in out.get("cpus", [])):
        raise ConfigError(f"{path}: key 'cpus': expected a list of CPU numbers or \"last\"")
    for key, least in (("threads", 1), ("runs", 1), ("warmup", 0), ("min_time_ms", 0),
                       ("passes", 1), ("batch_size", 1)):
        if key in out and out[key] < least:
            raise ConfigError(f"{path}: key {key!r}: expected at least {least}, got {out[key]}")
    return out


def _kind(types: type | tuple[type, ...]) -> str:
    """TOML's words for Python types: "an integer", "a number", "a list or a string"."""
    words = {int: "an integer", float: "a number", str: "a string", list: "a list"}
    kinds = types if isinstance(types, tuple) else (types,)
    if set(kinds) == {int, float}:
        return "a number"
    return " or ".join(words.get(k, k.__name__) for k in kinds)


def make_runner(config: DeviceConfig, backend: str | None = None, **overrides: Any) -> Runner:
    """A runner for one of the config's backends (host now; phones through adb/snpe runners)."""
    b = config.backend(backend)
    cls = runner_class(b.runner)
    if b.runner == "host":
        settings = {**host_runner_settings(b.settings, config.path), **overrides}
        runner = cls(**settings)
        runner.backend = b.name
        return runner
    return cls.from_config(config, b, **overrides)


def make_runners(config: DeviceConfig, backend: str | None = None,
                 serial: str | None = None) -> list[Runner]:
    """One runner per attached device matching the config (the host is always attached)."""
    b = config.backend(backend)
    if b.runner == "host":
        return [make_runner(config, backend)]
    return list(runner_class(b.runner).discover(config, b, serial=serial))


@contextlib.contextmanager
def open_runners(config: DeviceConfig | str, backend: str | None = None,
                 serial: str | None = None) -> Iterator[list[Runner]]:
    """The runners of every attached device matching ``config`` (a config or its name),
    closed on exit."""
    require_linux()
    cfg = load_config(config) if isinstance(config, str) else config
    runners = make_runners(cfg, backend, serial=serial)
    try:
        yield runners
    finally:
        for r in runners:
            r.close()

