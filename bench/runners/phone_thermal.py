"""A phone's heat: the config's [thermal] table, the shell lines that read every thermal
zone, and what they print (degrees C per zone type).

Limits are set on zones that follow the phone's body: a CPU sensor passes any sensible
limit within seconds of a benchmark.
"""

from __future__ import annotations

import fnmatch
import posixpath
import shlex
from dataclasses import dataclass

from bench.devices import ConfigError, DeviceConfig

TEMP_MARK = "@@NETADAPT-TEMP"
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

    def temps_snippet(self, label: str) -> str:
        """Script lines printing every thermal zone (type and raw value) under a label."""
        zones = shlex.quote(self.sysfs.rstrip("/") or "/") + "/thermal_zone*"
        return (f"echo '{TEMP_MARK} {label}'; for z in {zones}; do "
                '[ -r "$z/temp" ] || continue; '
                't=$(cat "$z/temp" 2>/dev/null) || continue; '
                'echo "@@T $(cat "$z/type" 2>/dev/null) $t"; done')

    def temperature_c(self, text: str, label: str) -> float | None:
        """Max temperature (C) over the configured zones in a temps_snippet's output."""
        return max_temp(zone_readings(text, label), self.zones)

    def zone_temps(self, text: str, label: str) -> dict[str, float]:
        """Each configured zone's temperature (C) in a temps_snippet's output."""
        return {z: c for z, c in zone_readings(text, label)
                if any(fnmatch.fnmatch(z, g) for g in self.zones)}

    def is_hot(self, temp_c: float | None) -> bool:
        return self.limit_c is not None and temp_c is not None and temp_c > self.limit_c


def sysfs_of(config: DeviceConfig) -> str:
    """The phone's sysfs root (``[adb] sysfs``; the loopback test phones use a folder)."""
    return str(config.raw.get("adb", {}).get("sysfs", "/sys"))


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
