"""One attached phone as the ADB runners see it: probed once, watched for heat, rejoined.

Everything here runs on the phone through :class:`AdbTransport`. The probe is ONE round
trip (``bench.runners.phone_probe``); the temperatures come from the config's [thermal]
zones (``bench.runners.phone_thermal``). ``bench.runners.phone_runner.PhoneRunner``, what
the ADB runners share, drives one of these.
"""

from __future__ import annotations

import contextlib
import posixpath
import re
import shlex
import threading
import time
from collections.abc import Callable
from typing import Any

from adbutils.errors import AdbError

from bench.devices import ConfigError, DeviceConfig
from bench.discovery import AttachedDevice
from bench.runners.adb_transport import (
    AdbTransport,
    AdbUnreachable,
    is_local,
    start_local_server,
)
from bench.runners.base import DeviceLost, RunnerError
from bench.runners.phone_probe import SECTION, PhoneInfo, probe_script
from bench.runners.phone_thermal import Thermal, max_temp, sysfs_of
from bench.shell_sections import split_sections

DEFAULT_WORK_DIR = "/data/local/tmp/netadapt"


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
        script = probe_script(self.batches_dir, files, self.thermal.temps_snippet("probe"),
                              reset, sysfs_of(self.config), stay_awake)
        res = self.transport.shell(script, timeout_s=60)
        sections = split_sections(res.stdout, SECTION)
        if "end" not in sections:
            raise RunnerError(f"{self.serial}: probing the phone failed (exit {res.returncode})"
                              f": {res.output.strip()[-500:]}")
        stay_on = sections.get("stayon", "").strip() or None
        if self.info.stay_on is not None:  # set up again after a rejoin: keep the first
            stay_on = self.info.stay_on
        self.info = PhoneInfo.from_sections(sections, files, stay_on if stay_awake else None)
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
    def read_temperature(self) -> float | None:
        res = self.transport.shell(self.thermal.temps_snippet("now"), timeout_s=60)
        return self.thermal.temperature_c(res.stdout, "now")

    def cool_down(self, sleep: Callable[[float], None] = time.sleep) -> float | None:
        """Wait (bounded by cooldown_s) until the phone is under its limit; last reading."""
        deadline = time.monotonic() + self.thermal.cooldown_s
        temp = self.read_temperature()
        while self.thermal.is_hot(temp) and time.monotonic() < deadline:
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

