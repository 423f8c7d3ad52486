"""`netadapt doctor`: whether each device can sweep, and what to fix where it cannot.

The checks are the runners' own: a phone is probed by the probe a sweep starts with
(without emptying its work folder), judged by the functions the runners' setup raises
from (bench.runners.checks, tflite_settings.tool_check, snpe.sdk_check, host.affinity_check),
and its one-layer model runs through the runner a sweep would use. What doctor adds is
only the order, and that it goes on past the first problem.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench import quiet
from bench.devices import Backend, ConfigError, DeviceConfig, host_runner_settings, load_config
from bench.discovery import AttachedDevice, all_configs, attached_text, scan, servers_of, wants
from bench.machine_state import OTHER_CORES_BUSY, HostProbe, MachineState
from bench.runners.adb_phone import Phone
from bench.runners.adb_transport import Server, local_server, say_on_stderr
from bench.runners.base import BatchItem, Failure, RunnerError, runner_class
from bench.runners.checks import (
    FIXED_GOVERNORS,
    Check,
    adb_command,
    android_check,
    battery_check,
    governor_check,
    state_check,
    temperature_check,
)
from bench.runners.local_files import read_local
from bench.runners.phone_thermal import max_temp
from bench.runners.tflite_settings import TfliteSettings, remote_binary, tool_check
from bench.tflite_build import build_layer
from lut_db.errors import UserError
from lut_db.spec import LayerSpec

# The model every backend runs once: small, and an op every runtime has.
ONE_LAYER = LayerSpec("conv2d", 16, 16, 8, 16, kernel=(3, 3))
LAYER_TEXT = "a 3x3 conv, 16x16x8 -> 16 channels"
RUN_TIMEOUT_S = 60.0  # a tool that hangs on one small layer is broken
QUIET_PROBE_S = 2.0  # one layer timed back to back: ten 0.2 s windows for its spread
OUTPUT_TAIL = 300  # characters of a failed tool's output shown


@dataclass
class DeviceReport:
    """One device (this machine, or a phone by serial) and its checks, in order."""

    name: str
    description: str
    config: str | None
    checks: list[Check] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        """It can sweep: no required check failed (warnings allowed)."""
        return all(c.ok or not c.required for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "config": self.config,
                "ready": self.ready, "checks": [c.as_dict() for c in self.checks]}


@dataclass
class Report:
    """Everything doctor found; ``ready``: the device asked about (or all) can sweep."""

    asked: str | None
    servers: list[Check]
    devices: list[DeviceReport]
    ready: bool

    def as_dict(self) -> dict[str, Any]:
        return {"device": self.asked, "ready": self.ready,
                "servers": [c.as_dict() for c in self.servers],
                "devices": [d.as_dict() for d in self.devices]}


def doctor(device: str | None = None, serial: str | None = None, backend: str | None = None,
           run: bool = True, say: Callable[[str], None] = say_on_stderr) -> Report:
    """Check ``device`` (a config name; None: this machine and every attached phone).

    ``serial``: only that phone; ``backend``: the one whose problems count (default: the
    config's own; the others' are warnings); ``run``: run the one-layer model.
    An unknown config name is a ConfigError; anything found on a device is a check.
    """
    if device is not None:
        config = load_config(device)
        if config.kind == "host":
            host = host_report(config, backend, run)
            return Report(device, [], [host], host.ready)
        return _phones_of(config, serial, backend, run, say)
    configs = all_configs()
    reports = [] if serial else [host_report(_host_config(configs), None, run)]
    servers = list(dict.fromkeys([local_server(), *(s for c in configs for s in servers_of(c))]))
    server_checks, attached = _scan(servers, configs, say)
    by_name = {c.name: c for c in configs}
    for d in attached:
        if serial in (None, d.serial):
            reports.append(phone_report(d, by_name[d.configs[0]] if d.configs else None,
                                        None, run))
    if serial and not any(r.name == serial for r in reports):
        reports.append(_missing(serial, f"no phone with serial {serial!r}", attached))
    return Report(None, server_checks, reports,
                  all(r.ready for r in reports) and all(c.ok for c in server_checks))


def _host_config(configs: list[DeviceConfig]) -> DeviceConfig:
    hosts = [c for c in configs if c.kind == "host"]
    return next((c for c in hosts if c.name == "host"), hosts[0] if hosts else load_config("host"))


def _phones_of(config: DeviceConfig, serial: str | None, backend: str | None, run: bool,
               say: Callable[[str], None]) -> Report:
    """The phones of one config: ready when every usable one is (as a sweep takes them all)."""
    chosen_backend = config.backend(backend).name  # unknown: the user's error, before any phone
    server_checks, attached = _scan(servers_of(config), [config], say)
    chosen = [d for d in attached if serial in (None, d.serial)]
    usable = [d for d in chosen if d.state == "device" and config.name in d.configs]
    shown = usable or [d for d in chosen if d.state != "device" or serial is not None]
    reports = [phone_report(d, config if config.name in d.configs else None, backend, run,
                            wanted=config) for d in shown]
    if not reports:
        what = (f"no phone with serial {serial!r}" if serial else
                f"no attached phone matches {config.name!r} (it wants {wants(config)})")
        missing = _missing(config.name, what, attached)
        missing.checks += sdk_checks(config, chosen_backend)  # what needs no phone, up front
        reports.append(missing)
    return Report(config.name, server_checks, reports,
                  bool(usable) and all(r.ready for r in reports))


def _missing(name: str, what: str, attached: list[AttachedDevice]) -> DeviceReport:
    return DeviceReport(name, "not attached", None, [Check(
        "attached", False, f"{what}; attached: {attached_text(attached)}",
        "plug it in, turn on USB debugging and accept the prompt; `netadapt devices` shows "
        "what is attached and which config each phone matches")])


def sdk_checks(config: DeviceConfig, chosen: str) -> list[Check]:
    """The SDKs the config's backends need on this machine (the chosen one's required)."""
    from bench.runners.snpe import SnpeSettings, sdk_check

    out = []
    for name, b in config.backends.items():
        if b.runner == "snpe":
            try:
                check = sdk_check(SnpeSettings.from_backend(config, b))
            except ConfigError as e:
                check = Check("settings", False, str(e), f"fix [backends.{name}]")
            out.append(dataclasses.replace(check, name=f"{name}: {check.name}",
                                           required=check.required and name == chosen))
    return out


def _scan(servers: list[Server], configs: list[DeviceConfig], say: Callable[[str], None]
          ) -> tuple[list[Check], list[AttachedDevice]]:
    attached, unreachable = scan(servers, configs, say)
    checks = []
    for s in servers:
        name = f"adb server {s}"
        if str(s) in unreachable:
            users = ", ".join(c.name for c in configs if s in servers_of(c) and c.adb_servers)
            checks.append(Check(name, False, unreachable[str(s)], (
                f"start it on that machine (`adb -a -P {s.port} server`), or fix [adb] "
                f"servers in {users}") if users else "run `adb start-server` here"))
        else:
            n = sum(d.server == s for d in attached)
            checks.append(Check(name, True, f"reachable, {n} device(s)"))
    return checks, attached


# -- this machine --------------------------------------------------------------------------
def host_report(config: DeviceConfig, backend: str | None, run: bool) -> DeviceReport:
    """Linux, CPU affinity, LiteRT, the clock, one layer timed by the host runner, and
    whether the machine is quiet enough to measure."""
    from bench.runners.host import affinity_check, default_cpus, litert_check

    report = DeviceReport("host", f"this machine ({platform.machine()})", config.name)
    add = report.checks.append
    system = platform.system()
    add(Check("Linux", system == "Linux", f"{system} {platform.release()}",
              "run the tool on Linux (a VM, WSL2 or a container): it needs fcntl locks and "
              "CPU affinity"))
    b = config.backend(backend)
    try:
        settings = host_runner_settings(b.settings, config.path)
    except ConfigError as e:
        add(Check(f"{b.name}: settings", False, str(e), f"fix [backends.{b.name}]"))
        return report
    cpus = settings.get("cpus") or (default_cpus() if hasattr(os, "sched_getaffinity") else [])
    affinity = affinity_check(cpus)
    add(affinity)
    add(litert_check())
    if affinity.ok:
        add(_host_clock(cpus))
    if run and report.ready:
        add(_run_layer(f"LiteRT ({b.name})", lambda: _host_runner(config, b.name)))
        add(host_quiet())
    return report


def host_quiet(seconds: float = QUIET_PROBE_S) -> Check:
    """Is this machine quiet enough to measure: the load, other processes' CPU and steal
    over ``bench.quiet``'s probe, one layer's spread over it, and (where sysfs gives an
    L3) how much of the shared L3 is ours. A warning, not a failure: it can sweep, but
    what it measures now comes out slower and wanders."""
    state = HostProbe()
    state.start()
    p = quiet.probe(seconds)
    return quiet_check(p, state.stop())


def quiet_check(p: dict[str, Any], s: MachineState) -> Check:
    """The "quiet" check from a ``bench.quiet`` probe and the machine's state over it."""
    return Check("quiet", quiet.is_quiet(p) and not s.busy, _quiet_text(p, s),
                 "other work, or the VM's neighbours, share its cores and caches: latencies "
                 "measured now come out slower and wander (`netadapt lut` and `measure` "
                 "store this state with their numbers); measure when it is quiet",
                 required=False)


def _quiet_text(p: dict[str, Any], s: MachineState) -> str:
    """The probe's numbers with their limits, then what other processes take."""
    if s.other_cpu_cores is None:
        return quiet.describe(p, limits=True)
    return (f"{quiet.describe(p, limits=True)}; other processes {s.other_cpu_cores:.2f} cores "
            f"(under {OTHER_CORES_BUSY}), steal {100 * (s.steal_share or 0):.1f} %")


def _host_runner(config: DeviceConfig, backend: str) -> Any:
    from bench.devices import make_runner

    return make_runner(config, backend, warmup=1, runs=3, min_time_ms=0.0, passes=1)


def _host_clock(cpus: list[int]) -> Check:
    from bench.runners.host import read_sys

    base = f"/sys/devices/system/cpu/cpu{cpus[0]}/cpufreq"
    governor = read_sys(f"{base}/scaling_governor")
    if governor is None:
        return Check("CPU governor", True, "no cpufreq here (a virtual machine?): the "
                     "hypervisor sets the clock; measure on a quiet machine")
    khz = read_sys(f"{base}/cpuinfo_max_freq") or ""
    detail = f"{governor} on CPU {cpus[0]}" + (
        f"; {int(khz) / 1e6:.2f} GHz max" if khz.isdigit() else "")
    if governor in FIXED_GOVERNORS:
        return Check("CPU governor", True, detail + " (fixed)")
    return Check("CPU governor", False, detail + " (the clock follows the load)",
                 "`sudo cpupower frequency-set -g performance` while you measure",
                 required=False)


# -- a phone -------------------------------------------------------------------------------
def phone_report(d: AttachedDevice, config: DeviceConfig | None, backend: str | None,
                 run: bool, wanted: DeviceConfig | None = None) -> DeviceReport:
    """adb state, ABI and Android, the config and its backends, then one probe: clocks,
    heat, battery and each backend's tool (one layer run through the runner)."""
    what = ", ".join(x for x in (d.model, d.soc) if x)
    report = DeviceReport(d.serial, f"{what or 'unknown'} on adb server {d.server}",
                          config.name if config else None)
    add = report.checks.append
    add(state_check(d.serial, d.server, d.state))
    if d.state != "device":
        return report
    if d.error:
        add(Check("getprop", False, d.error, "check `adb shell getprop` answers"))
        return report
    add(android_check(d.props))
    if config is None:
        add(_no_config(d, wanted))
        return report
    chosen = config.backend(backend).name
    backends = ", ".join(f"{n} ({b.runner}{', default' if n == config.default_backend else ''})"
                         for n, b in config.backends.items())
    add(Check("config", True, f"{config.name} ({config.path}); backends: {backends}"))
    phones: dict[str, tuple[Phone, str | None]] = {}
    broken: dict[str, Check] = {}
    for n, b in config.backends.items():
        try:
            phones[n] = _phone(d, config, b)
        except ConfigError as e:
            broken[n] = Check("settings", False, str(e), f"fix [backends.{n}]")
    if not phones:
        add(dataclasses.replace(broken[chosen], name=f"{chosen}: settings"))
        return report
    files = tuple(dict.fromkeys(f for _, f in phones.values() if f))
    first = next(iter(phones.values()))[0]
    try:
        info = first.probe(files, reset=False)
    except RunnerError as e:
        add(Check("probe", False, str(e), "check the phone answers `adb shell`"))
        return report
    add(governor_check(info.cpus))
    add(temperature_check(max_temp(info.temps, first.thermal.zones), first.thermal.limit_c,
                          first.thermal.sysfs))
    add(battery_check(info.battery))
    for name, b in sorted(config.backends.items(), key=lambda nb: nb[0] != chosen):
        if name in broken:
            checks = [broken[name]]
        else:
            phone = phones[name][0]
            phone.info = info
            checks = backend_checks(config, b, d, phone, run)
        for c in checks:
            add(dataclasses.replace(c, name=f"{name}: {c.name}",
                                    required=c.required and name == chosen))
    return report


def _no_config(d: AttachedDevice, wanted: DeviceConfig | None) -> Check:
    model = d.model or "MODEL"
    detail = (f"{d.serial} does not match {wanted.name!r} (it wants {wants(wanted)})"
              if wanted else f"no device config matches {model}")
    return Check("config", False, detail,
                 "copy device_configs/generic_android.toml to device_configs/NAME.toml and set "
                 f"[match] \"ro.product.model\" = \"{model}\" (docs/farm.md, Adding a phone)")


def _phone(d: AttachedDevice, config: DeviceConfig, b: Backend) -> tuple[Phone, str | None]:
    """The Phone a backend's runner would make, and the file its probe should hash."""
    if b.runner == "adb-tflite":
        s = TfliteSettings.from_backend(config, b)
        phone = Phone(d, config, s.work_dir)
        return phone, remote_binary(s, phone.work_dir)
    if b.runner == "snpe":
        from bench.runners.snpe import SnpeSettings

        return Phone(d, config, SnpeSettings.from_backend(config, b).work_dir), None
    raise ConfigError(f"{config.path}: key 'backends.{b.name}.runner': {b.runner!r} does not "
                      "run on a phone (adb-tflite or snpe)")


def backend_checks(config: DeviceConfig, b: Backend, d: AttachedDevice, phone: Phone,
                   run: bool) -> list[Check]:
    """A backend's tool (or SDK), then one layer through its runner when the tool is there."""
    cls = runner_class(b.runner)
    settings = cls.settings_class.from_backend(config, b)
    if b.runner == "adb-tflite":
        try:
            local = (read_local(settings.binary, config, f"backends.{b.name}.binary")
                     if settings.binary else None)
        except ConfigError as e:
            return [Check("benchmark tool", False, str(e), "fix the path, or push the tool "
                          "and set binary_on_device")]
        checks = [tool_check(settings, local, phone, b.name)]
        tool = settings.tool
    else:
        from bench.runners.snpe import net_run_check, sdk_check, sdk_of
        from bench.runners.snpe_commands import sdk_layout

        checks = [sdk_check(settings)]
        if checks[0].ok:
            checks.append(net_run_check(sdk_layout(sdk_of(settings)), phone.info.abis,
                                        d.serial))
        tool = "snpe-net-run"
    if run and all(c.ok for c in checks):
        quick = dataclasses.replace(settings, model_timeout_s=min(settings.model_timeout_s,
                                                                  RUN_TIMEOUT_S))
        # its own batches folder: a sweep running on the phone keeps its files
        own = type(cls.__name__, (cls,), {"batches": "doctor-batches"})
        checks.append(_run_layer(tool, lambda: _no_cooling(own(config, b, d, quick)),
                                 f"{adb_command(d.server, d.serial)} shell"))
    return checks


def _no_cooling(runner: Any) -> Any:
    """Doctor reports heat (temperature_check); it does not wait for a phone to cool."""
    runner.phone.thermal = dataclasses.replace(runner.phone.thermal, limit_c=None)
    return runner


def _run_layer(tool: str, make: Callable[[], Any], shell: str = "") -> Check:
    """One conv layer measured through a runner: the tool starts and its output parses."""
    name = "one-layer run"
    try:
        with make() as runner:
            (result,) = runner.measure([BatchItem(ONE_LAYER.key, build_layer(ONE_LAYER))])
    except UserError as e:
        return Check(name, False, str(e), "fix what the message names, then run doctor again")
    if isinstance(result, Failure):
        tail = " ".join(result.output.split())[-OUTPUT_TAIL:]
        how = f"run it by hand ({shell} ...) and read its error" if shell else \
            "read its error"
        return Check(name, False, f"{result.error}" + (f"; output ends: {tail}" if tail else ""),
                     f"{how}: a build for another ABI or Android, or a missing library, "
                     "fails here")
    return Check(name, True, f"{tool}: {result.latency_us / 1000:.3f} ms for {LAYER_TEXT}")
