"""`AdbServer`: the real adb binary run as a server on a private port, with a private
HOME and key folder, so tests never touch the user's server (port 5037) or their
~/.android keys."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Collection
from pathlib import Path
from typing import Self

import adbutils
from adbutils.errors import AdbError

from loopback.adb.protocol import recv_exact


def find_adb() -> str | None:
    """The adb binary shipped with adbutils, else the one on PATH."""
    shipped = Path(adbutils.__file__).parent / "binaries" / "adb"
    if shipped.is_file() and os.access(shipped, os.X_OK):
        return str(shipped)
    return shutil.which("adb")


def free_port() -> int:
    """A free TCP port of 127.0.0.1, never the default server's."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port != 5037:  # never the default server's port
            return port


def host_request(port: int, service: str, timeout: float, reply: bool = False) -> str:
    """One smart-socket request to an adb server.

    Used instead of adbutils internally because adbutils runs `adb start-server`
    (on the default port 5037!) whenever it cannot connect.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"%04x%s" % (len(service), service.encode()))
        status = recv_exact(sock, 4)
        if status != b"OKAY":
            raise AdbError(f"{service}: {status!r}")
        if not reply:
            return ""
        length = recv_exact(sock, 4)
        payload = recv_exact(sock, int(length, 16)) if length else None
        if payload is None:
            raise AdbError(f"{service}: truncated reply")
        return payload.decode("utf-8", "replace")


_live_servers: weakref.WeakSet[AdbServer] = weakref.WeakSet()


@atexit.register
def _stop_leftover_servers() -> None:
    for server in list(_live_servers):
        server.stop()


class AdbServer:
    """A real adb server on a private port, HOME and key folder.

    It runs as `adb -P PORT nodaemon server`, a child we own, so stop() can always
    reap it even if `kill-server` fails. USB, mDNS and emulator-port scanning are
    off, so it only sees devices that are `adb connect`ed to it.
    """

    def __init__(
        self, port: int | None = None, home: Path | str | None = None, adb: str | None = None
    ) -> None:
        found = adb or find_adb()
        if found is None:
            raise FileNotFoundError("adb binary not found (adbutils binaries/ or PATH)")
        self.adb = found
        self.port = port or free_port()
        self._own_home = home is None
        self.home = Path(home) if home is not None else Path(tempfile.mkdtemp(prefix="adb-home-"))
        self.log_path = self.home / "adb-server.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        """Environment for any adb process that must talk to this server only."""
        android = self.home / ".android"
        vendor_keys = self.home / "vendor-keys"  # must exist, or adb logs errors
        android.mkdir(parents=True, exist_ok=True)
        vendor_keys.mkdir(exist_ok=True)
        env = dict(os.environ)
        for key in (
            "ANDROID_SERIAL",
            "ADB_SERVER_SOCKET",
            "ANDROID_ADB_SERVER_ADDRESS",
            "ADB_TRACE",
        ):
            env.pop(key, None)
        # ANDROID_ADB_LOG_PATH: the default /tmp/adb.UID.log is shared by every server.
        # ADB_EMU=0: else the server probes 127.0.0.1:5555-5585 for emulators.
        env.update(
            HOME=str(self.home),
            ANDROID_USER_HOME=str(android),
            ADB_VENDOR_KEYS=str(vendor_keys),
            ANDROID_ADB_SERVER_PORT=str(self.port),
            ANDROID_ADB_LOG_PATH=str(self.home / "adb-daemon.log"),
            ADB_MDNS="0",
            ADB_MDNS_AUTO_CONNECT="0",
            ADB_USB="0",
            ADB_EMU="0",
        )
        return env

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> AdbServer:
        if self.running:
            return self
        with open(self.log_path, "ab") as log_file:
            self._proc = subprocess.Popen(
                [self.adb, "-P", str(self.port), "nodaemon", "server"],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self.env(),
            )
        _live_servers.add(self)
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"adb server on port {self.port} did not start:\n{self.log_tail()}"
                )
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        _live_servers.discard(self)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError, AdbError):
                host_request(self.port, "host:kill", timeout)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._own_home:
            shutil.rmtree(self.home, ignore_errors=True)

    def run(
        self, *args: str, timeout: float = 30.0, check: bool = True, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run an adb CLI command against this server (stdin: input_text or nothing)."""
        if not self.running:
            # the CLI would silently fork a new daemon server on our port
            raise RuntimeError("adb server is not running")
        stdin = {"input": input_text} if input_text is not None else {"stdin": subprocess.DEVNULL}
        return subprocess.run(
            [self.adb, "-P", str(self.port), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            **stdin,
        )

    def client(self, timeout: float = 20.0) -> adbutils.AdbClient:
        """adbutils client of this server. Beware: adbutils runs `adb start-server`
        on the default port when it cannot connect, so only use it while running."""
        return adbutils.AdbClient(host="127.0.0.1", port=self.port, socket_timeout=timeout)

    def device(self, serial: str) -> adbutils.AdbDevice:
        return self.client().device(serial)

    def devices(self) -> dict[str, str]:
        """serial -> state, as `adb devices` lists them."""
        listing = host_request(self.port, "host:devices", timeout=5.0, reply=True)
        return dict(line.split("\t")[:2] for line in listing.splitlines() if "\t" in line)

    def wait_for_state(
        self, serial: str, state: str | None | Collection[str | None], timeout: float = 10.0
    ) -> str | None:
        """Wait until `adb devices` lists serial in state (None: not listed at all).

        state may be a collection of acceptable states; returns the one seen.
        """
        wanted = (
            set(state) if isinstance(state, Collection) and not isinstance(state, str) else {state}
        )
        deadline = time.monotonic() + timeout
        while (current := self.devices().get(serial)) not in wanted:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{serial} is {current or 'absent'}, not in {wanted}; all: {self.devices()}"
                )
            time.sleep(0.05)
        return current

    def connect(self, serial: str, state: str = "device", timeout: float = 10.0) -> None:
        """`adb connect serial`, then wait until `adb devices` lists it as state."""
        self.run("connect", serial, timeout=timeout, check=False)
        self.wait_for_state(serial, state, timeout)

    def disconnect(self, serial: str, timeout: float = 10.0) -> None:
        self.run("disconnect", serial, timeout=timeout, check=False)
        self.wait_for_state(serial, None, timeout)

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for path in (self.log_path, self.home / "adb-daemon.log"):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _answers(self) -> bool:
        try:
            host_request(self.port, "host:version", timeout=1.0, reply=True)
            return True
        except (OSError, AdbError):
            return False

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"AdbServer(port={self.port}, running={self.running})"
