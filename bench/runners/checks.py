"""Readiness checks: what a device needs before it can measure, each with its fix.

The runners' setup and `netadapt doctor` share these functions: a runner raises the first
failed required check (``require``), doctor shows every check. Each function here reads
only what it is given (a probe's results, a config's settings), so both callers agree.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass
from typing import Any

from bench.runners.adb_transport import Server, is_local
from bench.runners.base import RunnerError

# adb states a phone cannot be used in, and what the user does about each
STATE_HELP = {
    "unauthorized": "unlock the phone and accept the \"Allow USB debugging?\" prompt",
    "offline": "replug the cable or run `adb reconnect`; check the phone is awake",
    "no permissions": "fix the USB permissions (udev rules) on the adb server's machine",
}
FIXED_GOVERNORS = ("performance", "userspace")  # governors that hold the clock still
LOW_BATTERY = 20  # percent; below it phones save power by lowering clocks


@dataclass(frozen=True)
class Check:
    """One item of readiness: ``ok``, what was found, and how to fix it when not ok.

    A failed check that is not ``required`` is a warning: the device can still sweep,
    but its numbers may be worse (an unfixed governor, a phone on battery).
    """

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True

    @property
    def status(self) -> str:
        return "ok" if self.ok else "fail" if self.required else "warn"

    @property
    def message(self) -> str:
        return f"{self.detail}: {self.fix}" if self.fix and not self.ok else self.detail

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status}


def require(check: Check, error: type[RunnerError] = RunnerError) -> Check:
    """The check, or ``error`` with its message when it failed and is required."""
    if not check.ok and check.required:
        raise error(check.message)
    return check


def adb_command(server: Server, serial: str) -> str:
    """How the user reaches this phone with adb: ``adb -s SERIAL``, plus the server when
    it is not this machine's own."""
    where = [] if is_local(server) else ["-H", server.host, "-P", str(server.port)]
    return shlex.join(["adb", *where, "-s", serial])


# -- a phone's state, as adb and getprop see it -----------------------------------------
def state_check(serial: str, server: Server, state: str) -> Check:
    if state == "device":
        return Check("adb state", True, f"{serial} on {server} is ready (device)")
    return Check("adb state", False, f"{serial} on {server} is {state}",
                 STATE_HELP.get(state, "check the cable and `adb devices`"))


def android_check(props: dict[str, str]) -> Check:
    """ABI and Android version from getprop (informational once getprop answers)."""
    if not props:
        return Check("ABI and Android", False, "getprop printed nothing",
                     "check `adb shell getprop` answers; reboot the phone if it does not")
    abis = props.get("ro.product.cpu.abilist") or props.get("ro.product.cpu.abi", "?")
    return Check("ABI and Android", True,
                 f"{abis.replace(',', ', ')}; Android {props.get('ro.build.version.release', '?')}"
                 f" (API {props.get('ro.build.version.sdk', '?')})")


# -- CPU clocks, heat and battery, from the probe ----------------------------------------
def governor_check(cpus: dict[int, tuple[int | None, str | None]]) -> Check:
    """Readable governors and frequencies, and whether the clock is held still."""
    name = "CPU governor"
    governors = sorted({g for _, g in cpus.values() if g})
    freqs = sorted({f for f, _ in cpus.values() if f})
    if not governors:
        return Check(name, False, f"not readable ({len(cpus)} CPUs, no cpufreq in "
                     "/sys/devices/system/cpu/cpu*/cpufreq)",
                     "nothing to fix without root; the fingerprint records what is readable",
                     required=False)
    ghz = "/".join(f"{f / 1e6:.2f}" for f in freqs) + " GHz max" if freqs else "max unknown"
    detail = f"{', '.join(governors)} on {len(cpus)} CPUs; {ghz}"
    if set(governors) <= set(FIXED_GOVERNORS):
        return Check(name, True, detail + " (fixed)")
    return Check(name, False, detail + " (the clock follows the load)",
                 "with root (`adb root` on a userdebug build): `adb shell 'for g in /sys/devices/system/cpu/cpu*/cpufreq/"
                 "scaling_governor; do echo performance > $g; done'`; without root keep the "
                 "config's warm-up runs and the phone cool", required=False)


def temperature_check(temp_c: float | None, limit_c: float | None, where: str) -> Check:
    """The hottest configured thermal zone against the config's [thermal] limit_c."""
    name = "temperature"
    if temp_c is None:
        return Check(name, False, f"no readable thermal zone in {where}",
                     "set [thermal] sysfs (and zones) in the device config to where the "
                     "phone keeps them; until then a hot phone is not cooled down",
                     required=False)
    if limit_c is None:
        return Check(name, False, f"{temp_c:.1f} C, no limit set",
                     "set [thermal] limit_c (e.g. 48) in the device config so that a hot "
                     "phone cools down before it measures", required=False)
    if temp_c > limit_c:
        return Check(name, False, f"{temp_c:.1f} C, over the limit of {limit_c:g} C",
                     "let it cool: screen off, out of its case, away from the charger's heat "
                     "(a sweep waits up to [thermal] cooldown_s by itself)", required=False)
    return Check(name, True, f"{temp_c:.1f} C (limit {limit_c:g} C)")


@dataclass(frozen=True)
class Battery:
    level: int | None  # percent
    status: str  # charging, discharging, not charging, full, unknown
    powered: tuple[str, ...]  # sources: ac, usb, wireless, dock

    @property
    def on_power(self) -> bool:
        return bool(self.powered) or self.status in ("charging", "full")


# `dumpsys battery` where there is one (Android), else the kernel's power_supply class
BATTERY_SNIPPET = (
    "if command -v dumpsys >/dev/null 2>&1; then dumpsys battery 2>/dev/null; else "
    "b=/sys/class/power_supply/battery; "
    "[ -r $b/capacity ] && echo \"level: $(cat $b/capacity)\"; "
    "[ -r $b/status ] && echo \"status: $(cat $b/status)\"; "
    "for s in ac usb wireless; do [ \"$(cat /sys/class/power_supply/$s/online 2>/dev/null)\" "
    "= 1 ] && echo \"$s powered: true\"; done; fi; true")
BATTERY_STATUS = {"1": "unknown", "2": "charging", "3": "discharging", "4": "not charging",
                  "5": "full"}


def parse_battery(text: str) -> Battery | None:
    """``dumpsys battery`` (or BATTERY_SNIPPET's sysfs lines) -> Battery; None if empty."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep:
            fields[key.strip().lower()] = value.strip()
    if "level" not in fields and "status" not in fields:
        return None
    level = fields.get("level", "")
    status = fields.get("status", "unknown").lower()
    powered = tuple(k.split()[0] for k, v in fields.items()
                    if k.endswith(" powered") and v.lower() == "true")
    return Battery(int(level) if level.isdigit() else None,
                   BATTERY_STATUS.get(status, status), powered)


def battery_check(battery: Battery | None) -> Check:
    name = "battery"
    if battery is None:
        return Check(name, False, "not readable (no `dumpsys battery`, no "
                     "/sys/class/power_supply/battery)",
                     "check by hand that the phone is on a charger", required=False)
    level = f"{battery.level} %" if battery.level is not None else "level unknown"
    source = f" ({', '.join(battery.powered)})" if battery.powered else ""
    detail = f"{level}, {battery.status}{source}"
    if not battery.on_power:
        return Check(name, False, detail,
                     "plug the phone into a charger or a powered USB hub: a draining "
                     "battery makes the phone save power on its clocks", required=False)
    if battery.level is not None and battery.level < LOW_BATTERY:
        return Check(name, False, detail, f"let it charge above {LOW_BATTERY} % before "
                     "sweeping: phones lower their clocks on a low battery", required=False)
    return Check(name, True, detail)
