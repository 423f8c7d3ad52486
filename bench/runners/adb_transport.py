"""ADB transport: one adb server (host:port, always explicit) and one device on it.

Only transport lives here: shell commands with their exit code, many files pushed or
pulled in ONE sync session, and a count of device round trips (each shell call and
each sync session is one), so batching can be checked. Runners build the commands;
parsers read the output.

adbutils runs ``adb start-server`` (which starts a server on the default port 5037)
whenever it cannot reach the server it was given; the client here never does: an
unreachable server is an error naming the address. Only this machine's own server
(``local_server()``) is started, explicitly, by ``start_local_server``, as `adb devices`
would start it.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import adbutils
from adbutils.errors import AdbConnectionError, AdbError, AdbTimeout

from bench.runners.base import DeviceLost, RunnerError

DEFAULT_PORT = 5037
SYNC_CHUNK = 64 * 1024  # the sync protocol's largest DATA chunk
SYNC_PATH_MAX = 1024
RC_MARK = "@@NETADAPT-RC "  # shell v1 has no exit code: the command echoes it last


class AdbUnreachable(RunnerError):
    """No adb server answers at the configured address."""


class DeviceUnusable(RunnerError):
    """The device is attached but cannot run commands (unauthorized, offline, missing)."""


@dataclass(frozen=True)
class Server:
    """An adb server address."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def local_server() -> Server:
    """This machine's adb server, where `adb` itself looks for it (env, else port 5037)."""
    host = os.environ.get("ANDROID_ADB_SERVER_HOST", "127.0.0.1")
    return Server(host, int(os.environ.get("ANDROID_ADB_SERVER_PORT", DEFAULT_PORT)))


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_local(server: Server) -> bool:
    """This machine's own adb server: the one `adb devices` starts when none runs."""
    return server.host in LOOPBACK_HOSTS and server.port == local_server().port


def say_on_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def start_local_server(server: Server, say: Callable[[str], None] = say_on_stderr,
                       timeout_s: float = 30.0) -> None:
    """Start this machine's adb server as `adb devices` does (`adb -P PORT start-server`,
    with the adb that adbutils ships unless one is on PATH), and say so."""
    if not is_local(server):
        raise AdbUnreachable(f"no adb server reachable at {server}, and it is not this "
                             "machine's: start it there with `adb -a -P PORT server`")
    try:
        argv = [adbutils.adb_path(), "-P", str(server.port), "start-server"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False,
                              stdin=subprocess.DEVNULL)
    except (AdbError, OSError, subprocess.SubprocessError) as e:
        raise AdbUnreachable(f"no adb server was running at {server} and starting one "
                             f"failed: {e}") from None
    if proc.returncode != 0:
        raise AdbUnreachable(f"no adb server was running at {server} and `adb -P {server.port} "
                             f"start-server` failed: {(proc.stdout + proc.stderr).strip()[-500:]}")
    say(f"no adb server was running at {server}: started it, as `adb devices` does")


def parse_server(text: str) -> Server:
    """``"host:port"`` (or ``"local"``) -> Server; ValueError with what was expected."""
    if text == "local":
        return local_server()
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected \"host:port\" (e.g. \"192.168.1.20:5037\") or \"local\", "
                         f"got {text!r}")
    return Server(host.strip("[]"), int(port))


class _Connection(adbutils.AdbConnection):
    def _safe_connect(self) -> socket.socket:
        return self._create_socket()  # never `adb start-server`: it would pick port 5037


class Client(adbutils.AdbClient):
    """adbutils client of one server that never starts a server of its own."""

    def __init__(self, server: Server, timeout_s: float = 30.0):
        super().__init__(host=server.host, port=server.port, socket_timeout=timeout_s)
        self.server = server

    def make_connection(self, timeout: float | None = None) -> adbutils.AdbConnection:
        try:
            conn = _Connection(self.host, self.port)
        except (AdbTimeout, AdbConnectionError) as e:
            raise AdbUnreachable(
                f"no adb server reachable at {self.server} ({e}); start one with "
                f"`adb -P {self.server.port} start-server` on that machine, or list the "
                "right \"host:port\" under [adb] servers in the device config") from None
        if timeout:
            conn.conn.settimeout(timeout)
        return conn

    def states(self) -> dict[str, str]:
        """serial -> state (device, offline, unauthorized, ...) as `adb devices` lists them."""
        return {d.serial: d.state for d in self.list()}


@dataclass(frozen=True)
class ShellResult:
    returncode: int
    stdout: str
    stderr: str = ""

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class AdbTransport:
    """Shell, push and pull on one device of one adb server, counting round trips."""

    def __init__(self, server: Server, serial: str, timeout_s: float = 600.0):
        self.server = server
        self.serial = serial
        self.timeout_s = timeout_s
        self.client = Client(server)
        self.device = self.client.device(serial)
        self.round_trips = 0
        self._features: set[str] | None = None

    def __repr__(self) -> str:
        return f"AdbTransport({self.serial!r} on {self.server})"

    # -- state -------------------------------------------------------------------------
    def state(self) -> str | None:
        """The device's state on its server (None: not listed). Not a device round trip."""
        return self.client.states().get(self.serial)

    def features(self) -> set[str]:
        if self._features is None:
            self._features = set(self._guard(self.device.get_features).split(","))
        return self._features

    # -- shell -------------------------------------------------------------------------
    def shell(self, command: str, timeout_s: float | None = None) -> ShellResult:
        """Run ``command`` (already quoted) with /system/bin/sh; one round trip.

        ``timeout_s`` bounds the silence between two chunks of output, not the whole
        command. A connection that ends without an exit code means the device went
        away: DeviceLost, carrying the output received so far (``.output``).
        """
        v2 = "shell_v2" in self.features()
        service = f"shell,v2:{command}" if v2 else f"shell:{command}; echo {RC_MARK}$?"
        self.round_trips += 1
        conn = self._open(service, timeout_s)
        try:
            return self._read_v2(conn) if v2 else self._read_v1(conn)
        except _Partial as e:
            raise self._lost("the connection closed before the command ended",
                             e.out + e.err) from None
        except (OSError, EOFError, AdbError) as e:
            raise self._lost(f"output stopped ({type(e).__name__}: {e})") from None
        finally:
            conn.close()

    def _open(self, service: str, timeout_s: float | None) -> adbutils.AdbConnection:
        def go() -> adbutils.AdbConnection:
            conn = self.device.open_transport(timeout=timeout_s or self.timeout_s)
            conn.send_command(service)
            conn.check_okay()
            return conn
        return self._guard(go)

    def _read_v2(self, conn: adbutils.AdbConnection) -> ShellResult:
        out, err = bytearray(), bytearray()
        while True:
            header = conn.read(5)
            if len(header) < 5:
                raise _Partial(out, err)
            kind, length = header[0], int.from_bytes(header[1:5], "little")
            data = conn.read(length) if length else b""
            if len(data) < length:
                raise _Partial(out + data, err)
            if kind == 1:
                out += data
            elif kind == 2:
                err += data
            elif kind == 3:
                return ShellResult(data[0] if data else 255, _text(out), _text(err))

    def _read_v1(self, conn: adbutils.AdbConnection) -> ShellResult:
        out = bytearray()
        while chunk := conn.read(SYNC_CHUNK):
            out += chunk
        text = _text(out).replace("\r\n", "\n")
        mark = text.rfind(RC_MARK)
        rc = text[mark + len(RC_MARK):].strip() if mark >= 0 else ""
        if not rc.isdigit():
            raise _Partial(out, b"")
        return ShellResult(int(rc), text[:mark])

    # -- files -------------------------------------------------------------------------
    def push_many(self, files: Sequence[tuple[bytes | Path, str, int]]) -> int:
        """Push ``(data or local path, remote path, mode)`` files in ONE sync session.

        Parent folders are created by adbd. Returns the bytes sent. A refused file is a
        RunnerError naming it (the session ends there, as adbd ends it).
        """
        if not files:
            return 0
        self.round_trips += 1
        conn = self._open("sync:", None)
        sent = 0
        try:
            for src, remote, mode in files:
                data = src.read_bytes() if isinstance(src, Path) else bytes(src)
                self._send_file(conn, data, remote, mode)
                sent += len(data)
            conn.conn.sendall(b"QUIT" + struct.pack("<I", 0))
        except (OSError, EOFError, AdbError) as e:
            raise self._lost(f"push stopped ({type(e).__name__}: {e})") from None
        finally:
            conn.close()
        return sent

    def _send_file(self, conn: adbutils.AdbConnection, data: bytes, remote: str,
                   mode: int) -> None:
        spec = f"{remote},{stat.S_IFREG | (mode & 0o777)}".encode()
        if len(spec) > SYNC_PATH_MAX:
            raise RunnerError(f"remote path too long for adb ({len(spec)} bytes): {remote!r}")
        sock = conn.conn
        sock.sendall(b"SEND" + struct.pack("<I", len(spec)) + spec)
        for i in range(0, len(data), SYNC_CHUNK):
            chunk = data[i:i + SYNC_CHUNK]
            sock.sendall(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
        sock.sendall(b"DONE" + struct.pack("<I", int(time.time())))
        reply = conn.read_exact(8)
        if reply[:4] != b"OKAY":
            message = conn.read_exact(int.from_bytes(reply[4:], "little")).decode(
                "utf-8", "replace") if reply[:4] == b"FAIL" else repr(reply)
            raise RunnerError(f"{self.serial}: pushing {remote!r} failed: {message}")

    def pull_many(self, paths: Sequence[str]) -> dict[str, bytes | None]:
        """Pull files in ONE sync session; a missing file maps to None."""
        if not paths:
            return {}
        self.round_trips += 1
        conn = self._open("sync:", None)
        out: dict[str, bytes | None] = {}
        try:
            for path in paths:
                encoded = path.encode()
                conn.conn.sendall(b"RECV" + struct.pack("<I", len(encoded)) + encoded)
                out[path] = self._recv_file(conn)
                if out[path] is None:
                    break  # adbd ends the session after a FAIL
            conn.conn.sendall(b"QUIT" + struct.pack("<I", 0))
        except (OSError, EOFError, AdbError) as e:
            raise self._lost(f"pull stopped ({type(e).__name__}: {e})") from None
        finally:
            conn.close()
        if len(out) < len(paths):  # the rest after a failed file: one more session
            out.update(self.pull_many(paths[len(out):]))
        return out

    @staticmethod
    def _recv_file(conn: adbutils.AdbConnection) -> bytes | None:
        data = bytearray()
        while True:
            header = conn.read_exact(8)
            kind, length = header[:4], int.from_bytes(header[4:], "little")
            if kind == b"DONE":
                return bytes(data)
            payload = conn.read_exact(length) if length else b""
            if kind == b"FAIL":
                return None
            if kind != b"DATA":
                raise AdbError(f"unexpected sync reply {kind!r}")
            data += payload

    # -- errors --------------------------------------------------------------------------
    def _guard(self, call):  # type: ignore[no-untyped-def]
        """Run an adbutils call; adb's refusals become DeviceUnusable or DeviceLost."""
        try:
            return call()
        except AdbUnreachable as e:
            raise DeviceLost(str(e)) from None
        except AdbError as e:
            raise self._refused(str(e)) from None
        except (OSError, EOFError) as e:
            raise self._lost(f"{type(e).__name__}: {e}") from None

    def _refused(self, message: str) -> RunnerError:
        text = message.lower()
        if "unauthorized" in text:
            return DeviceUnusable(
                f"{self.serial} on {self.server} is unauthorized: unlock the phone and accept "
                "the \"Allow USB debugging?\" prompt (then run the command again)")
        return self._lost(f"adb refused: {message}")

    def _lost(self, why: str, output: str = "") -> ConnectionLost:
        return ConnectionLost(f"{self.serial} on {self.server} went away: {why}", output)


class ConnectionLost(DeviceLost):
    """The device went away; ``output`` is what its command printed until then."""

    def __init__(self, message: str, output: str = ""):
        super().__init__(message)
        self.output = output


class _Partial(EOFError):
    """The stream ended before the exit code: carries what arrived."""

    def __init__(self, out: bytes | bytearray, err: bytes | bytearray):
        super().__init__("connection closed before the exit code")
        self.out, self.err = _text(out), _text(err)


def _text(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", "replace")
