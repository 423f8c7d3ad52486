"""Which phones are attached, on which adb servers, and which device config each matches.

A config recognises its phones by getprop values: ``[match]`` maps a property
(``ro.product.model``, ``ro.board.platform``, ...) to one pattern or a list of them.
Patterns are shell globs (``SM-G95?*``); a pattern starting with ``re:`` is a regular
expression matched against the whole value. Every listed property must match (one
of its patterns); a config without ``[match]`` matches no phone.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from adbutils.errors import AdbError

from bench.devices import ConfigError, DeviceConfig, config_dir, known_configs, load_config
from bench.runners.adb_transport import (
    AdbTransport,
    AdbUnreachable,
    Client,
    Server,
    is_local,
    local_server,
    parse_server,
    say_on_stderr,
    start_local_server,
)
from bench.runners.base import RunnerError
from bench.runners.checks import state_check

_PROP_LINE = re.compile(r"^\[([^\]]+)\]: \[(.*)\]$")


@dataclass
class AttachedDevice:
    """One entry of `adb devices` on one server, with its props when it is usable."""

    server: Server
    serial: str
    state: str
    props: dict[str, str] = field(default_factory=dict)
    configs: list[str] = field(default_factory=list)  # matching config names, best first
    error: str = ""

    @property
    def model(self) -> str:
        return self.props.get("ro.product.model", "")

    @property
    def soc(self) -> str:
        p = self.props
        return (p.get("ro.board.platform") or p.get("ro.soc.model") or p.get("ro.hardware")
                or "")

    @property
    def android(self) -> str:
        return self.props.get("ro.build.version.release", "")

    @property
    def abi(self) -> str:
        return self.props.get("ro.product.cpu.abi", "")

    def describe(self) -> str:
        what = ", ".join(x for x in (self.model, self.soc) if x) or "props unknown"
        return f"{self.serial} on {self.server} ({self.state}; {what})"

    def as_dict(self) -> dict[str, object]:
        return {"server": str(self.server), "serial": self.serial, "state": self.state,
                "model": self.model, "soc": self.soc, "android": self.android,
                "abi": self.abi, "configs": self.configs, "error": self.error}


def parse_getprop(text: str) -> dict[str, str]:
    """``getprop`` listing (``[key]: [value]`` lines) -> dict."""
    props = {}
    for line in text.replace("\r\n", "\n").splitlines():
        m = _PROP_LINE.match(line.strip())
        if m:
            props[m.group(1)] = m.group(2)
    return props


def pattern_matches(pattern: str, value: str) -> bool:
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], value) is not None
    return fnmatch.fnmatchcase(value, pattern)


def matches(config: DeviceConfig, props: dict[str, str]) -> bool:
    """Whether a phone with these props is one of the config's kind."""
    if config.kind != "android" or not config.match:
        return False
    return all(any(pattern_matches(p, props.get(key, "")) for p in patterns)
               for key, patterns in config.match.items())


def servers_of(config: DeviceConfig) -> list[Server]:
    """The adb servers a config looks on: its [adb] servers, else the local one."""
    try:
        return [parse_server(s) for s in config.adb_servers] or [local_server()]
    except ValueError as e:
        raise ConfigError(f"{config.path}: key 'adb.servers': {e}") from None


def all_configs(directory: Path | None = None,
                skip: Callable[[ConfigError], None] | None = None) -> list[DeviceConfig]:
    """Every config in the directory. A broken one raises its ConfigError; with ``skip``,
    it is handed to ``skip`` (to warn) and left out, so one bad file does not hide the
    devices the others match."""
    out = []
    for name in known_configs(directory or config_dir()):
        try:
            out.append(load_config(name, directory))
        except ConfigError as e:
            if skip is None:
                raise
            skip(e)
    return out


def scan(servers: Iterable[Server], configs: Sequence[DeviceConfig] = (),
         say: Callable[[str], None] = say_on_stderr
         ) -> tuple[list[AttachedDevice], dict[str, str]]:
    """Every device on every server (props read from usable ones), and unreachable servers.

    Returns (devices, {server: error}). One getprop round trip per usable device. This
    machine's own server is started when none runs (``say`` tells the user); any other
    unreachable server is an error naming it.
    """
    devices: list[AttachedDevice] = []
    unreachable: dict[str, str] = {}
    for server in dict.fromkeys(servers):
        try:
            states = _states(server, say)
        except AdbUnreachable as e:
            unreachable[str(server)] = str(e)
            continue
        for serial, state in sorted(states.items()):
            dev = AttachedDevice(server, serial, state)
            if state == "device":
                _read_props(dev)
            dev.configs = best_first([c for c in configs if matches(c, dev.props)])
            devices.append(dev)
    return devices, unreachable


def _states(server: Server, say: Callable[[str], None]) -> dict[str, str]:
    try:
        states = Client(server).states()
    except AdbUnreachable:
        if not is_local(server):
            raise
        start_local_server(server, say)
        states = Client(server).states()
    if is_local(server):
        warning = adb_version_warning(server)
        if warning:
            say(f"warning: {warning}")
    return states


_warned: set[tuple[Server, str]] = set()


def adb_version_warning(server: Server, adb: str | None = None) -> str | None:
    """Why a sweep may lose its phones: the ``adb`` a user (or a script) runs here is
    another version than this machine's server, and running it restarts the server.
    Said once per server and adb; None when they agree or either cannot be asked."""
    adb = adb or shutil.which("adb")
    if adb is None or (server, adb) in _warned:
        return None
    try:
        out = subprocess.run([adb, "version"], capture_output=True, text=True, timeout=10,
                             check=False, stdin=subprocess.DEVNULL).stdout
        theirs = Client(server).server_version()
    except (OSError, subprocess.SubprocessError, RunnerError, AdbError):
        return None
    m = re.search(r"Android Debug Bridge version \d+\.\d+\.(\d+)", out)
    if m is None or int(m.group(1)) == theirs:
        return None
    _warned.add((server, adb))
    used = os.environ.get("ADBUTILS_ADB_PATH") or "the adb that adbutils ships"
    return (f"the adb on PATH ({adb}, version 1.0.{m.group(1)}) differs from the adb server "
            f"at {server} (version 1.0.{theirs}): running it restarts the server and drops "
            f"every phone mid-sweep; put one adb first on PATH and name it in "
            f"ADBUTILS_ADB_PATH (now: {used})")


def _read_props(dev: AttachedDevice) -> None:
    try:
        res = AdbTransport(dev.server, dev.serial, timeout_s=20).shell("getprop")
        dev.props = parse_getprop(res.stdout)
    except RunnerError as e:
        dev.error = str(e)


def best_first(configs: Sequence[DeviceConfig]) -> list[str]:
    """Config names, the most specific (most match keys) first: pixel1 before generic."""
    return [c.name for c in sorted(configs, key=lambda c: (-len(c.match), c.name))]


def find_devices(config: DeviceConfig, serial: str | None = None) -> list[AttachedDevice]:
    """The usable attached phones of a config (only ``serial`` if given), or a RunnerError
    that shows what is attached and what the config wants."""
    servers = servers_of(config)
    devices, unreachable = scan(servers, [config])
    if len(unreachable) == len(servers):
        raise AdbUnreachable("; ".join(unreachable.values()))
    if serial is not None:
        chosen = [d for d in devices if d.serial == serial]
        if not chosen:
            raise RunnerError(f"no device with serial {serial!r} on {_names(servers)}; "
                              f"attached: {attached_text(devices)}")
        _check_usable(chosen, config)
        if not chosen[0].configs:
            raise RunnerError(f"{chosen[0].describe()} does not match device config "
                              f"{config.name!r} ({config.path}), which wants {wants(config)}")
        return chosen
    usable = [d for d in devices if d.state == "device" and d.configs]
    if usable:
        return usable
    _check_usable([d for d in devices if d.state != "device"], config, none_usable=True)
    raise RunnerError(f"no attached device matches {config.name!r} ({config.path}): it wants "
                      f"{wants(config)}; attached on {_names(servers)}: {attached_text(devices)}")


def _check_usable(devices: list[AttachedDevice], config: DeviceConfig,
                  none_usable: bool = False) -> None:
    """A chosen (or, with none usable, any) device that adb cannot use: say why and how."""
    for d in devices:
        state = state_check(d.serial, d.server, d.state)
        if not state.ok:
            raise RunnerError(("no usable device; " if none_usable else "") + state.message)
        if d.error:
            raise RunnerError(d.error)


def _names(servers: Sequence[Server]) -> str:
    return ", ".join(f"adb server {s}" for s in servers)


def wants(config: DeviceConfig) -> str:
    """What a config's [match] asks of a phone, for messages."""
    if not config.match:
        return "nothing ([match] is empty)"
    return " and ".join(f"{k} ~ {' | '.join(v)}" for k, v in config.match.items())


def attached_text(devices: list[AttachedDevice]) -> str:
    """What is attached, for messages."""
    if not devices:
        return "nothing (check the cable, `adb devices`, and that USB debugging is on)"
    return "; ".join(d.describe() for d in devices)
