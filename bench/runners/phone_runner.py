"""What the ADB runners (adb_tflite, snpe) share: discovery of the phones a config
matches, one :class:`~bench.runners.adb_phone.Phone` each, batches measured again when
they end hot, the phone's state read around a run, rejoin after a drop-out, clean-up."""

from __future__ import annotations

import dataclasses
import fnmatch
import threading
from collections.abc import Callable, Mapping
from typing import Any

from bench.devices import DeviceConfig
from bench.discovery import AttachedDevice
from bench.machine_state import PhoneExtras, PhoneProbe, StateProbe
from bench.runners.adb_phone import Phone
from bench.runners.adb_transport import say_on_stderr
from bench.runners.base import BaseRunner, DeviceLost, RunnerError, Timing
from bench.runners.checks import BATTERY_SNIPPET, parse_battery
from bench.runners.phone_thermal import zone_readings

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
        thermal = self.phone.thermal
        if thermal.is_hot(self._last_temp):
            self._last_temp = self.phone.cool_down()
        results, out = run()
        after = thermal.temperature_c(out, "after")
        retries = 0
        while thermal.is_hot(after) and retries < thermal.retries:
            retries += 1
            self.phone.cool_down()
            results, out = run()
            after = thermal.temperature_c(out, "after")
        self._last_temp = after
        extra: dict[str, Any] = {"temp_before_c": thermal.temperature_c(out, "before"),
                                 "temp_after_c": after, "hot_retries": retries,
                                 "zones_c": {"before": thermal.zone_temps(out, "before"),
                                             "after": thermal.zone_temps(out, "after")}}
        if thermal.is_hot(after):
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
                          {"temps": self.phone.thermal.temps_snippet("state"),
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
