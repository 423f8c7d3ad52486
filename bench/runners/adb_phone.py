"""One attached phone as the ADB runners see it: probed once, watched for heat, rejoined.

Everything here runs on the phone through :class:`AdbTransport`, as POSIX-sh text
in which every path is ``shlex.quote``d. The probe is ONE round trip: getprop, the
cpufreq policies (which cores share a top frequency, offline ones included), which
helper tools exist (taskset, timeout, sha256sum, svc), the hashes of files the runner
wants there, the thermal zones and the battery, the screen's stay-awake setting, and the
work folder set up. `netadapt doctor` reads the same probe (bench.runners.checks judges
it).
:class:`PhoneRunner` is what the ADB runners (adb_tflite, snpe) share.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import hashlib
import posixpath
import re
import shlex
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adbutils.errors import AdbError

from bench.devices import ConfigError, DeviceConfig
from bench.discovery import AttachedDevice, parse_getprop
from bench.machine_state import PhoneExtras, PhoneProbe, StateProbe
from bench.runners.adb_transport import (
    AdbTransport,
    AdbUnreachable,
    is_local,
    say_on_stderr,
    start_local_server,
)
from bench.runners.base import BaseRunner, DeviceLost, RunnerError, Timing
from bench.runners.checks import BATTERY_SNIPPET, Battery, parse_battery

SECTION = "@@NETADAPT-SECTION"
TEMP_MARK = "@@NETADAPT-TEMP"
TOOLS = ("taskset", "timeout", "sha256sum", "md5sum", "svc", "settings")
DEFAULT_WORK_DIR = "/data/local/tmp/netadapt"
ELF_ABIS = {0x28: "armeabi-v7a", 0xB7: "arm64-v8a", 0x03: "x86", 0x3E: "x86_64"}


# Zones that follow the phone's body, not a core under load: a CPU sensor passes any
# sensible limit within seconds of a benchmark, so limits are set on these.
DEFAULT_ZONES = ("*skin*", "*battery*", "*xo_therm*", "*xo-therm*", "*quiet_therm*",
                 "*case*", "*back_therm*", "*sdm_therm*", "*ambient*")


@dataclass(frozen=True)
class Thermal:
    """A config's [thermal] table: over ``limit_c`` a phone cools down, then re-measures."""

    limit_c: float | None = None
    cooldown_s: float = 300.0
    poll_s: float = 10.0
    retries: int = 1
    zones: tuple[str, ...] = DEFAULT_ZONES  # globs of zone types: the body, not the cores
    sysfs: str = "/sys/class/thermal"

    @classmethod
    def from_config(cls, config: DeviceConfig) -> Thermal:
        t = dict(config.thermal)
        zones = t.pop("zones", list(DEFAULT_ZONES))
        if not zones or not all(isinstance(z, str) for z in zones):
            raise ConfigError(f"{config.path}: key 'thermal.zones': expected a non-empty list "
                              "of globs of zone types (e.g. [\"*skin*\", \"battery\"])")
        t.setdefault("sysfs", posixpath.join(sysfs_of(config), "class", "thermal"))
        return cls(zones=tuple(zones), **t)


def sysfs_of(config: DeviceConfig) -> str:
    """The phone's sysfs root (``[adb] sysfs``; the loopback test phones use a folder)."""
    return str(config.raw.get("adb", {}).get("sysfs", "/sys"))


@dataclass(frozen=True)
class Policy:
    """One cpufreq policy: the cores it drives (offline ones included) and their top speed."""

    cpus: tuple[int, ...]
    max_freq_khz: int | None
    governor: str | None


@dataclass
class PhoneInfo:
    props: dict[str, str] = field(default_factory=dict)
    cpus: dict[int, tuple[int | None, str | None]] = field(default_factory=dict)
    tools: set[str] = field(default_factory=set)
    files: dict[str, tuple[str, bool] | None] = field(default_factory=dict)  # (hash, exec)
    online: set[int] | None = None  # None: the kernel does not say
    temps: list[tuple[str, float]] = field(default_factory=list)  # (zone type, C), every zone
    battery: Battery | None = None
    stay_on: str | None = None  # settings global stay_on_while_plugged_in before the sweep

    def big_cores(self) -> list[int]:
        """The cores of the highest cpuinfo_max_freq, online or not ([] if unknown)."""
        freqs = {c: f for c, (f, _) in self.cpus.items() if f}
        if not freqs:
            return []
        top = max(freqs.values())
        return sorted(c for c, f in freqs.items() if f == top)

    def is_online(self, cpu: int) -> bool:
        return self.online is None or cpu in self.online

    @property
    def abis(self) -> list[str]:
        listed = self.props.get("ro.product.cpu.abilist", "")
        return [a for a in listed.split(",") if a] or [self.props.get("ro.product.cpu.abi", "")]


def safe_serial(serial: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", serial)


class Phone:
    """An attached phone of a config: transport, probe results, temperature, rejoin."""

    def __init__(self, attached: AttachedDevice, config: DeviceConfig, work_dir: str,
                 timeout_s: float = 600.0, batches: str = "batches"):
        self.config = config
        self.serial = attached.serial
        self.server = attached.server
        self.transport = AdbTransport(attached.server, attached.serial, timeout_s)
        # {serial}: for phones sharing one filesystem (the loopback test devices)
        self.work_dir = work_dir.replace("{serial}", safe_serial(attached.serial))
        if not self.work_dir.startswith("/") or posixpath.normpath(self.work_dir) == "/":
            raise ConfigError(f"{config.path}: key 'work_dir': expected an absolute folder "
                              f"on the phone other than '/', got {work_dir!r}")
        self.thermal = Thermal.from_config(config)
        self.info = PhoneInfo()
        self._batch = 0
        self.batches_dir = posixpath.join(self.work_dir, batches)

    def new_batch_dir(self) -> str:
        self._batch += 1
        return posixpath.join(self.batches_dir, f"b{self._batch}")

    # -- probe ---------------------------------------------------------------------------
    def probe(self, files: tuple[str, ...] = (), reset: bool = True,
              stay_awake: bool = False) -> PhoneInfo:
        """One round trip: props, CPUs, tools, ``files``' hashes, temperatures, battery;
        with ``reset`` the work folder ready and empty (doctor only looks); with
        ``stay_awake`` the screen kept on while plugged in (``svc power stayon usb``)
        until ``cleanup()`` puts the old setting back."""
        script = probe_script(self.batches_dir, files, self.temps_snippet("probe"), reset,
                              sysfs_of(self.config), stay_awake)
        res = self.transport.shell(script, timeout_s=60)
        sections = split_sections(res.stdout)
        if "end" not in sections:
            raise RunnerError(f"{self.serial}: probing the phone failed (exit {res.returncode})"
                              f": {res.output.strip()[-500:]}")
        stay_on = sections.get("stayon", "").strip() or None
        if self.info.stay_on is not None:  # set up again after a rejoin: keep the first
            stay_on = self.info.stay_on
        cpus, online = parse_cpus(sections.get("cpus", ""))
        self.info = PhoneInfo(parse_getprop(sections.get("props", "")), cpus,
                              set(sections.get("tools", "").split()),
                              parse_files(sections.get("files", ""), files), online,
                              zone_readings(sections.get("temps", ""), "probe"),
                              parse_battery(sections.get("battery", "")),
                              stay_on if stay_awake else None)
        return self.info

    def thermal_note(self) -> str | None:
        """What to say when none of the configured zones can be read (heat not watched)."""
        if max_temp(self.info.temps, self.thermal.zones) is not None:
            return None
        seen = ", ".join(sorted({z for z, _ in self.info.temps})) or "none readable"
        return (f"no thermal zone of type {', '.join(self.thermal.zones)} can be read "
                f"(zones: {seen}): heat is not watched; set [thermal] zones in "
                f"{self.config.path} to globs of this phone's zone types")

    # -- temperature ----------------------------------------------------------------------
    def temps_snippet(self, label: str) -> str:
        """Script lines printing every thermal zone (type and raw value) under a label."""
        zones = shlex.quote(self.thermal.sysfs.rstrip("/") or "/") + "/thermal_zone*"
        return (f"echo '{TEMP_MARK} {label}'; for z in {zones}; do "
                '[ -r "$z/temp" ] || continue; '
                't=$(cat "$z/temp" 2>/dev/null) || continue; '
                'echo "@@T $(cat "$z/type" 2>/dev/null) $t"; done')

    def temperature_c(self, text: str, label: str) -> float | None:
        """Max temperature (C) over the configured zones in a temps_snippet's output."""
        return max_temp(zone_readings(text, label), self.thermal.zones)

    def zone_temps(self, text: str, label: str) -> dict[str, float]:
        """Each configured zone's temperature (C) in a temps_snippet's output."""
        return {z: c for z, c in zone_readings(text, label)
                if any(fnmatch.fnmatch(z, g) for g in self.thermal.zones)}

    def read_temperature(self) -> float | None:
        res = self.transport.shell(self.temps_snippet("now"), timeout_s=60)
        return self.temperature_c(res.stdout, "now")

    def is_hot(self, temp_c: float | None) -> bool:
        return self.thermal.limit_c is not None and temp_c is not None and (
            temp_c > self.thermal.limit_c)

    def cool_down(self, sleep: Callable[[float], None] = time.sleep) -> float | None:
        """Wait (bounded by cooldown_s) until the phone is under its limit; last reading."""
        deadline = time.monotonic() + self.thermal.cooldown_s
        temp = self.read_temperature()
        while self.is_hot(temp) and time.monotonic() < deadline:
            sleep(max(0.0, min(self.thermal.poll_s, deadline - time.monotonic())))
            temp = self.read_temperature()
        return temp

    # -- rejoin and clean-up ---------------------------------------------------------------
    def wait_until_back(self, timeout_s: float, stop: threading.Event) -> bool:
        """Poll the adb server until the phone is usable again (True), or give up (False).

        A phone attached over TCP ("host:port") is `adb connect`ed again, as a user would.
        """
        deadline = time.monotonic() + timeout_s
        tcp = re.fullmatch(r"[\w.\-\[\]:]+:\d+", self.serial) is not None
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                state = self.transport.state()
                if state != "device" and tcp:
                    self.transport.client.connect(self.serial, timeout=2)
                elif state == "device" and self._answers():
                    return True
            except AdbUnreachable:
                self._restart_local_server()
            except (OSError, DeviceLost, AdbError):
                pass  # the phone is still away: poll again
            stop.wait(0.5)
        return False

    def _restart_local_server(self) -> None:
        """This machine's adb server died: start it again, as adb would (USB phones then
        reappear by themselves, TCP ones are connected again on the next poll)."""
        if is_local(self.transport.server):
            with contextlib.suppress(AdbUnreachable):
                start_local_server(self.transport.server)

    def _answers(self) -> bool:
        try:
            return self.transport.shell("echo ok", timeout_s=10).stdout.strip() == "ok"
        except RunnerError:
            return False

    def cleanup(self) -> None:
        """Remove the batches folder (models, scripts, logs) and give the screen its
        stay-awake setting back; best effort."""
        command = f"rm -rf {shlex.quote(self.batches_dir)}"
        if self.info.stay_on is not None and re.fullmatch(r"\d+", self.info.stay_on):
            command += ("; settings put global stay_on_while_plugged_in "
                        f"{shlex.quote(self.info.stay_on)}")
        try:
            self.transport.shell(command, timeout_s=30)
        except RunnerError:
            pass

    # -- fingerprint parts ------------------------------------------------------------------
    def device_fingerprint(self) -> dict[str, Any]:
        p = self.info.props
        return {"model": p.get("ro.product.model"),
                "manufacturer": p.get("ro.product.manufacturer"),
                "soc": p.get("ro.board.platform") or p.get("ro.hardware"),
                "build": p.get("ro.build.fingerprint"),
                "android": p.get("ro.build.version.release"),
                "abi": p.get("ro.product.cpu.abi")}


def probe_script(batches_dir: str, files: tuple[str, ...], temps: str = "",
                 reset: bool = True, sysfs: str = "/sys", stay_awake: bool = False) -> str:
    q = shlex.quote
    cpu = q(posixpath.join(sysfs, "devices", "system", "cpu"))
    lines = [
        f"echo '{SECTION} props'; getprop",
        f"echo '{SECTION} cpus'",
        # a policy lists every core it drives (related_cpus), offline ones too; a
        # per-core cpufreq folder vanishes while that core is offline
        (f"for p in {cpu}/cpufreq/policy*; do [ -d \"$p\" ] || continue; "
         "f=$(cat \"$p/cpuinfo_max_freq\" 2>/dev/null) || f=-; "
         "g=$(cat \"$p/scaling_governor\" 2>/dev/null) || g=-; "
         "echo \"policy ${f:--} ${g:--} $(cat \"$p/related_cpus\" 2>/dev/null)\"; done"),
        (f"for c in {cpu}/cpu[0-9]*; do [ -d \"$c\" ] || continue; "
         "f=$(cat \"$c/cpufreq/cpuinfo_max_freq\" 2>/dev/null) || f=-; "
         "g=$(cat \"$c/cpufreq/scaling_governor\" 2>/dev/null) || g=-; "
         "echo \"${c##*/cpu} ${f:--} ${g:--}\"; done"),
        f"[ -r {cpu}/online ] && echo \"online $(cat {cpu}/online)\"",
        f"echo '{SECTION} tools'",
        f"for t in {' '.join(TOOLS)}; do command -v \"$t\" >/dev/null 2>&1 && echo \"$t\"; done",
        f"echo '{SECTION} files'",
    ]
    for i, path in enumerate(files):
        f = q(path)
        lines.append(f"if [ -f {f} ]; then h=$(sha256sum {f} 2>/dev/null || md5sum {f} "
                     f"2>/dev/null); x=-; [ -x {f} ] && x=x; echo \"{i} ${{h%% *}}- $x\"; "
                     f"else echo '{i} missing'; fi")
    lines += [f"echo '{SECTION} temps'", temps, f"echo '{SECTION} battery'", BATTERY_SNIPPET]
    if stay_awake:  # the old value first, so cleanup can put it back
        lines += [f"echo '{SECTION} stayon'",
                  "settings get global stay_on_while_plugged_in 2>/dev/null",
                  "svc power stayon usb >/dev/null 2>&1"]
    if reset:
        batches = q(batches_dir)
        lines.append(f"mkdir -p {batches} && rm -rf {batches}/*")
    lines.append(f"echo '{SECTION} end'")
    return "\n".join(lines) + "\n"


def split_sections(text: str) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    current = None
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.startswith(SECTION + " "):
            current = line[len(SECTION) + 1:].strip()
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return {k: "\n".join(v) for k, v in out.items()}


def parse_cpus(text: str) -> tuple[dict[int, tuple[int | None, str | None]], set[int] | None]:
    """The probe's CPU lines -> ({cpu: (cpuinfo_max_freq kHz, governor)}, online cores).

    Policies come first and cover offline cores; a core's own line (online cores only)
    fills in what no policy listed (old kernels without policy folders)."""
    cpus: dict[int, tuple[int | None, str | None]] = {}
    online: set[int] | None = None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "policy":
            freq = int(parts[1]) if parts[1].isdigit() else None
            gov = parts[2] if parts[2] != "-" else None
            for c in parts[3:]:
                if c.isdigit():
                    cpus[int(c)] = (freq, gov)
        elif len(parts) == 2 and parts[0] == "online":
            online = parse_cpu_list(parts[1])
        elif len(parts) == 3 and parts[0].isdigit() and int(parts[0]) not in cpus:
            freq = int(parts[1]) if parts[1].isdigit() else None
            cpus[int(parts[0])] = (freq, parts[2] if parts[2] != "-" else None)
    if online is not None:
        for c in online:
            cpus.setdefault(c, (None, None))
    return dict(sorted(cpus.items())), online


def parse_cpu_list(text: str) -> set[int]:
    """A kernel CPU list ("0-3,6", as in /sys/.../online or Cpus_allowed_list) -> set."""
    out: set[int] = set()
    for part in text.strip().split(","):
        lo, sep, hi = part.partition("-")
        if lo.strip().isdigit() and (not sep or hi.strip().isdigit()):
            out.update(range(int(lo), int(hi if sep else lo) + 1))
    return out


def parse_files(text: str, files: tuple[str, ...]) -> dict[str, tuple[str, bool] | None]:
    out: dict[str, tuple[str, bool] | None] = dict.fromkeys(files)
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].isdigit() and int(parts[0]) < len(files):
            out[files[int(parts[0])]] = (parts[1].rstrip("-"), parts[2] == "x")
    return out


def zone_readings(text: str, label: str) -> list[tuple[str, float]]:
    """(zone type, degrees C) under ``@@NETADAPT-TEMP label``; millidegrees converted,
    readings outside -40..150 C (unplugged or fake sensors) dropped."""
    out: list[tuple[str, float]] = []
    inside = False
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.startswith(TEMP_MARK + " "):
            inside = line[len(TEMP_MARK) + 1:].strip() == label
            continue
        if not line.startswith("@@T "):
            inside = False
            continue
        if not inside:
            continue
        zone, _, raw = line[4:].rpartition(" ")
        try:
            value = float(raw)
        except ValueError:
            continue
        celsius = value / 1000.0 if abs(value) >= 1000 else value
        if -40.0 <= celsius <= 150.0:
            out.append((zone.strip(), celsius))
    return out


def max_temp(readings: list[tuple[str, float]], zones: tuple[str, ...]) -> float | None:
    picked = [c for z, c in readings if not zones or any(fnmatch.fnmatch(z, g) for g in zones)]
    return max(picked) if picked else None


def elf_abi(data: bytes) -> str | None:
    """The Android ABI an ELF binary is built for; None for anything else (e.g. scripts)."""
    if data[:4] != b"\x7fELF" or len(data) < 20:
        return None
    order = "little" if data[5] == 1 else "big"
    machine = int.from_bytes(data[18:20], order)
    return ELF_ABIS.get(machine, f"elf-machine-{machine:#x}")


def local_hashes(data: bytes) -> set[str]:
    """What the phone's sha256sum or md5sum would print for these bytes."""
    return {hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()}


def read_local(path: str, config: DeviceConfig, key: str) -> bytes:
    p = Path(path).expanduser()
    try:
        return p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{config.path}: key '{key}': cannot read {str(p)!r} "
                          f"({e.strerror}); expected a local file to push to the phone") from None


Measured = tuple[list[Any], str]  # results, the batch script's output (temperatures in it)


class PhoneRunner(BaseRunner):
    """What the ADB runners share: discovery, one phone, hot re-measure, rejoin, clean-up.

    A subclass sets ``settings_class`` (with ``from_backend(config, backend)`` and the
    fields work_dir, batch_size, model_timeout_s) and implements ``_setup()`` (called
    again when a lost phone rejoins) and ``measure()``.
    """

    settings_class: Any = None
    batches = "batches"  # this runner's folder of batches under work_dir

    def __init__(self, config: DeviceConfig, backend: Any, attached: AttachedDevice,
                 settings: Any = None):
        self.config = config
        self.backend = backend.name
        self.settings = settings or self.settings_class.from_backend(config, backend)
        self.serial = attached.serial
        self.batch_size = self.settings.batch_size
        self.timed_ns = 0
        self.notes: list[str] = []
        adb = config.raw.get("adb", {})
        self.rejoin_timeout_s = float(adb.get("rejoin_timeout_s", 120))
        timeout = float(adb.get("command_timeout_s", self.settings.model_timeout_s + 60))
        self.phone = Phone(attached, config, self.settings.work_dir, timeout, self.batches)
        self._last_temp: float | None = None

    @classmethod
    def discover(cls, config: DeviceConfig, backend: Any,
                 serial: str | None = None) -> list[Any]:
        """One runner per attached phone matching the config (only ``serial`` if given)."""
        from bench.discovery import find_devices

        settings = cls.settings_class.from_backend(config, backend)
        cls.check_host(settings)
        runners, lost = [], []
        for d in find_devices(config, serial):
            try:
                runners.append(cls(config, backend, d, settings))
            except DeviceLost as e:  # unplugged between discovery and setup
                lost.append(e)
        if lost and not runners:
            raise lost[0]
        for e in lost:  # the others can sweep; the next run takes it again
            say_on_stderr(f"warning: {e}; the sweep goes on without it")
        return runners

    @classmethod
    def from_config(cls, config: DeviceConfig, backend: Any, serial: str | None = None) -> Any:
        """The runner of exactly one phone: several matching need a ``serial``."""
        from bench.discovery import find_devices

        settings = cls.settings_class.from_backend(config, backend)
        cls.check_host(settings)
        devices = find_devices(config, serial)
        if len(devices) > 1:
            raise RunnerError(f"{len(devices)} phones match {config.name!r}: "
                              f"{', '.join(d.serial for d in devices)}; choose one with --serial")
        return cls(config, backend, devices[0], settings)

    @classmethod
    def check_host(cls, settings: Any) -> None:
        """Refuse early what this machine lacks (e.g. an SDK), before any phone is touched."""

    def measure_cool(self, run: Callable[[], Measured]) -> tuple[list[Any], dict[str, Any]]:
        """``run()`` once, and again after a cool-down while the phone ended it hot.

        A phone left hot by the previous batch cools down before this one starts. Each
        result carries the batch's temperatures: the hottest configured zone before and
        after, and every configured zone's reading.
        """
        if self.phone.is_hot(self._last_temp):
            self._last_temp = self.phone.cool_down()
        results, out = run()
        after = self.phone.temperature_c(out, "after")
        retries = 0
        while self.phone.is_hot(after) and retries < self.phone.thermal.retries:
            retries += 1
            self.phone.cool_down()
            results, out = run()
            after = self.phone.temperature_c(out, "after")
        self._last_temp = after
        extra: dict[str, Any] = {"temp_before_c": self.phone.temperature_c(out, "before"),
                                 "temp_after_c": after, "hot_retries": retries,
                                 "zones_c": {"before": self.phone.zone_temps(out, "before"),
                                             "after": self.phone.zone_temps(out, "after")}}
        if self.phone.is_hot(after):
            extra["hot"] = True
        return [with_extra(r, extra) for r in results], extra

    def watch_heat(self) -> None:
        """After a probe: warn (and note in the fingerprint) when no zone can be read."""
        note = self.phone.thermal_note()
        if note:
            self.notes.append(note)  # the fingerprint's: no serial
            say_on_stderr(f"warning: {self.serial}: {note}")

    def rejoin(self, stop: threading.Event, timeout_s: float | None = None) -> bool:
        """After DeviceLost: wait for the phone to come back, then set it up again."""
        timeout = self.rejoin_timeout_s if timeout_s is None else timeout_s
        if not self.phone.wait_until_back(timeout, stop):
            return False
        try:
            self._setup()
        except RunnerError as e:  # back, but no longer fit to measure: say why, keep the keys
            say_on_stderr(f"warning: {self.serial} came back but cannot measure: {e}")
            return False
        return True

    def _setup(self) -> None:
        raise NotImplementedError

    def _first_setup(self) -> None:
        """``_setup()``; when it fails, the phone gets its screen setting back and keeps
        nothing of ours but the pushed tools."""
        try:
            self._setup()
        except RunnerError:
            self.phone.cleanup()
            raise

    def state_probe(self) -> StateProbe:
        """Load, CPU, steal, temperatures, governors, frequencies and battery, read on the
        phone at both ends of a run (one round trip each), temperatures and battery with
        the probe's own snippets and parsers (as `netadapt doctor` reads them)."""
        zones = self.phone.thermal.zones

        def extras(sections: Mapping[str, str]) -> PhoneExtras:
            temps: dict[str, float] = {}  # the configured zones, hottest per type
            for zone, c in zone_readings(sections.get("temps", ""), "state"):
                if not zones or any(fnmatch.fnmatch(zone, g) for g in zones):
                    temps[zone] = max(c, temps.get(zone, c))
            bat = parse_battery(sections.get("battery", ""))
            if bat is None:
                return PhoneExtras(temps)
            return PhoneExtras(temps, bat.level, bat.status, bat.on_power)

        return PhoneProbe(self.serial, self._state_text,
                          {"temps": self.phone.temps_snippet("state"),
                           "battery": BATTERY_SNIPPET},
                          extras, self.phone.thermal.limit_c)

    def _state_text(self, script: str) -> str:
        try:
            return self.phone.transport.shell(script, timeout_s=60).stdout
        except RunnerError:
            return ""  # a state not read is unknown, not a failed measurement

    @property
    def round_trips(self) -> int:
        return self.phone.transport.round_trips

    def close(self) -> None:
        self.phone.cleanup()


def with_extra(r: Any, extra: dict[str, Any]) -> Any:
    """A Timing with ``extra`` merged in (Failures pass through)."""
    if isinstance(r, Timing):
        return dataclasses.replace(r, extra={**r.extra, **extra})
    return r
