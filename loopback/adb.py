"""A loopback ADB device and a private adb server, for the tests and benchmarks.

`LoopbackDevice` speaks the adbd side of the ADB transport protocol over TCP on
127.0.0.1 (what `adb connect 127.0.0.1:PORT` talks to). Its services run on this
machine: `shell:`/`exec:` commands run through `/bin/sh -c` in the device root
folder, and `sync:` paths are paths of this machine.

`AdbServer` runs the real adb binary as a server on a private port, with a
private HOME/key folder, so tests never touch the user's server (port 5037) or
their ~/.android keys.

References: AOSP packages/modules/adb protocol.txt, SYNC.TXT, shell_protocol.h
and file_sync_protocol.h.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import logging
import os
import platform
import queue
import secrets
import shlex
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, NamedTuple, Self

import adbutils
import pytest
from adbutils.errors import AdbError

__all__ = [
    "AdbServer",
    "LoopbackDevice",
    "default_props",
    "find_adb",
    "host_abi",
]

log = logging.getLogger(__name__)

# --- transport protocol (protocol.txt) -------------------------------------

A_CNXN = 0x4E584E43
A_AUTH = 0x48545541
A_OPEN = 0x4E45504F
A_OKAY = 0x59414B4F
A_CLSE = 0x45534C43
A_WRTE = 0x45545257

A_VERSION_MIN = 0x01000000
A_VERSION_SKIP_CHECKSUM = 0x01000001  # from this version on, data_check may be 0
A_VERSION = 0x01000001

MAX_PAYLOAD_V1 = 4 * 1024  # what a peer may send before CNXN negotiates more
MAX_PAYLOAD = 1024 * 1024

AUTH_TOKEN = 1
AUTH_SIGNATURE = 2
AUTH_RSAPUBLICKEY = 3

_HEADER = struct.Struct("<6I")  # command, arg0, arg1, data_length, data_check, magic

# No sendrecv_v2*: adb would then push with compression, which we don't implement.
# No delayed_ack: we ack every WRTE with OKAY, the classic flow control.
DEFAULT_FEATURES: tuple[str, ...] = (
    "shell_v2",
    "cmd",
    "stat_v2",
    "ls_v2",
    "fixed_push_mkdir",
    "fixed_push_symlink_timestamp",
)

DEVICE_STATES = ("device", "unauthorized")

# --- shell protocol v2 (shell_protocol.h) ------------------------------------

SHELL_STDIN = 0
SHELL_STDOUT = 1
SHELL_STDERR = 2
SHELL_EXIT = 3
SHELL_CLOSE_STDIN = 4
SHELL_WINDOW_SIZE = 5
_SHELL_HEADER = struct.Struct("<BI")

# --- sync protocol (SYNC.TXT, file_sync_protocol.h) -------------------------

SYNC_DATA_MAX = 64 * 1024
SYNC_PATH_MAX = 1024
_SYNC_REQ = struct.Struct("<4sI")
_STAT_V1 = struct.Struct("<4sIII")
_DENT_V1 = struct.Struct("<4sIIII")
_STAT_V2 = struct.Struct("<4sIQQIIIIQqqq")
_DENT_V2 = struct.Struct("<4sIQQIIIIQqqqI")


class _Packet(NamedTuple):
    command: int
    arg0: int
    arg1: int
    data: bytes


def _checksum(data: bytes) -> int:
    return sum(data) & 0xFFFFFFFF


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    """Read exactly `size` bytes; None on EOF."""
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def host_abi() -> str:
    """Android ABI name of this machine's CPU."""
    machine = platform.machine().lower()
    return {
        "x86_64": "x86_64",
        "amd64": "x86_64",
        "aarch64": "arm64-v8a",
        "arm64": "arm64-v8a",
        "i386": "x86",
        "i686": "x86",
    }.get(machine, "armeabi-v7a" if machine.startswith("arm") else machine)


def default_props(serialno: str) -> dict[str, str]:
    """getprop values a LoopbackDevice reports unless overridden."""
    abi = host_abi()
    return {
        "ro.product.name": "loopback",
        "ro.product.model": "Loopback",
        "ro.product.device": "loopback",
        "ro.product.brand": "netadapt",
        "ro.product.manufacturer": "netadapt",
        "ro.board.platform": "loopback",
        "ro.hardware": "loopback",
        "ro.product.cpu.abi": abi,
        "ro.product.cpu.abilist": abi,
        "ro.build.version.release": "14",
        "ro.build.version.sdk": "34",
        "ro.build.type": "userdebug",
        "ro.build.fingerprint": "netadapt/loopback/loopback:14/LOOP.0/1:userdebug/test-keys",
        "ro.serialno": serialno,
    }


def _getprop_script(props: Mapping[str, str]) -> str:
    """A /bin/sh `getprop` printing `props` the way Android's getprop does."""
    listing = " ".join(shlex.quote(f"[{k}]: [{v}]") for k, v in sorted(props.items()))
    cases = "".join(
        f"  {shlex.quote(k)}) printf '%s\\n' {shlex.quote(v)} ;;\n"
        for k, v in sorted(props.items())
    )
    return (
        "#!/bin/sh\n"
        "# getprop emulation written by LoopbackDevice\n"
        'if [ "$#" -eq 0 ]; then\n'
        f"  printf '%s\\n' {listing}\n"
        "  exit 0\n"
        "fi\n"
        'case "$1" in\n'
        f"{cases}"
        "  *) printf '%s\\n' \"${2-}\" ;;\n"
        "esac\n"
    )


# --- streams ------------------------------------------------------------------


class _Stream:
    """One OPENed service stream of a connection (our local id <-> host's id)."""

    def __init__(self, conn: _Connection, local_id: int, remote_id: int) -> None:
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self.closed = threading.Event()
        self._inbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._write_ready = threading.Event()
        self._write_ready.set()  # after our OKAY to OPEN we may send one WRTE
        self._write_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._on_close: list[Callable[[], None]] = []

    def write(self, data: bytes) -> bool:
        """Send data as WRTE packets, one in flight at a time; False once closed."""
        with self._write_lock:
            step = self.conn.max_payload
            for offset in range(0, len(data), step):
                if not self._wait_writable():
                    return False
                self._write_ready.clear()
                chunk = data[offset : offset + step]
                if not self.conn.send(A_WRTE, self.local_id, self.remote_id, chunk):
                    return False
                self.conn.device._count_bytes(len(chunk))
        return not self.closed.is_set()

    def read(self) -> bytes | None:
        """Next chunk written by the host (acked on consumption); None at close."""
        chunk = self._inbox.get()
        if chunk is None:
            self._inbox.put(None)  # keep EOF sticky for later readers
            return None
        # Acking when consumed (not when received) is the flow control.
        self.conn.send(A_OKAY, self.local_id, self.remote_id)
        return chunk

    def on_close(self, callback: Callable[[], None]) -> None:
        self._on_close.append(callback)

    def close(self) -> None:
        """Close from our side (service finished): CLSE to the host."""
        self._finish(send_clse=True)

    # Called by the connection's reader thread:

    def _deliver(self, data: bytes) -> None:
        self._inbox.put(data)

    def _acked(self) -> None:
        self._write_ready.set()

    def _wait_writable(self) -> bool:
        while not self._write_ready.wait(0.2):
            if self.closed.is_set():
                return False
        return not self.closed.is_set()

    def _finish(self, send_clse: bool) -> None:
        with self._close_lock:
            if self.closed.is_set():
                return
            self.closed.set()
        self.conn._forget(self)
        if send_clse:
            self.conn.send(A_CLSE, self.local_id, self.remote_id)
        self._inbox.put(None)
        self._write_ready.set()
        for callback in self._on_close:
            callback()


class _StreamReader:
    """Exact-size reads over the chunks of a stream."""

    def __init__(self, stream: _Stream) -> None:
        self._stream = stream
        self._buf = bytearray()

    def read_exact(self, size: int) -> bytes:
        while len(self._buf) < size:
            chunk = self._stream.read()
            if chunk is None:
                raise EOFError
            self._buf += chunk
        out = bytes(self._buf[:size])
        del self._buf[:size]
        return out


class _StreamWriter:
    """Batches small sync replies into WRTE packets of up to max_payload."""

    def __init__(self, stream: _Stream) -> None:
        self._stream = stream
        self._buf = bytearray()

    def write(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) >= self._stream.conn.max_payload:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            data, self._buf = bytes(self._buf), bytearray()
            if not self._stream.write(data):
                raise EOFError


# --- connections ----------------------------------------------------------------


class _Connection:
    """One TCP connection from an adb server: packet reader + stream table."""

    def __init__(self, device: LoopbackDevice, sock: socket.socket) -> None:
        self.device = device
        self.sock = sock
        self.version = A_VERSION_MIN
        self.max_payload = MAX_PAYLOAD_V1
        self.online = False
        self.awaiting_auth = False
        self._send_lock = threading.Lock()
        self._streams: dict[int, _Stream] = {}
        self._streams_lock = threading.Lock()
        self._next_id = 1
        self._abort = False
        self._closing = False  # once set, nothing more goes out
        self._closed = threading.Event()
        self.thread = threading.Thread(
            target=self._serve, name=f"adb-conn-{device.port}", daemon=True
        )

    # -- sending

    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> bool:
        """Send one packet; False if the connection is gone."""
        handshake = command in (A_CNXN, A_AUTH)  # sent before the peer knows our version
        check = _checksum(data) if handshake or self.version < A_VERSION_SKIP_CHECKSUM else 0
        header = _HEADER.pack(command, arg0, arg1, len(data), check, command ^ 0xFFFFFFFF)
        if self._closing:
            return False
        try:
            with self._send_lock:
                self.sock.sendall(header + data)
        except OSError:
            self.shutdown()
            return False
        return True

    # -- receiving

    def _serve(self) -> None:
        try:
            while (packet := self._read_packet()) is not None:
                self._dispatch(packet)
        except OSError:
            pass
        finally:
            self._teardown()

    def _read_packet(self) -> _Packet | None:
        header = _recv_exact(self.sock, _HEADER.size)
        if header is None:
            return None
        command, arg0, arg1, length, check, magic = _HEADER.unpack(header)
        if magic != command ^ 0xFFFFFFFF or length > MAX_PAYLOAD:
            log.warning("loopback adb: bad packet header %r, dropping connection", header)
            return None
        data = _recv_exact(self.sock, length) if length else b""
        if data is None:
            return None
        if self.online and self.version < A_VERSION_SKIP_CHECKSUM and check != _checksum(data):
            log.warning("loopback adb: bad checksum, dropping connection")
            return None
        return _Packet(command, arg0, arg1, data)

    def _dispatch(self, p: _Packet) -> None:
        log.debug(
            "loopback adb %s <- %s %#x %#x %r",
            self.device.serial,
            p.command.to_bytes(4, "little"),
            p.arg0,
            p.arg1,
            p.data[:64],
        )
        if p.command == A_WRTE:
            self.device._count_bytes(len(p.data))
        handler = {
            A_CNXN: self._on_cnxn,
            A_AUTH: self._on_auth,
            A_OPEN: self._on_open,
            A_OKAY: self._on_okay,
            A_WRTE: self._on_wrte,
            A_CLSE: self._on_clse,
        }.get(p.command)
        if handler is not None:
            handler(p)

    def _on_cnxn(self, p: _Packet) -> None:
        self._close_streams()  # a CNXN (re)starts the session
        self.version = min(p.arg0, self.device.protocol_version)
        self.max_payload = max(MAX_PAYLOAD_V1, min(p.arg1, self.device.max_payload))
        if self.device.state == "unauthorized":
            self.online = False
            self.awaiting_auth = True
            self._send_auth_token()
        else:
            self.go_online()

    def go_online(self) -> None:
        self.awaiting_auth = False
        self.online = True
        self.send(A_CNXN, self.version, self.max_payload, self.device.banner().encode())

    def _send_auth_token(self) -> None:
        self.send(A_AUTH, AUTH_TOKEN, 0, secrets.token_bytes(20))

    def _on_auth(self, p: _Packet) -> None:
        if not self.awaiting_auth:
            return
        if self.device.state == "device":  # authorize() was called meanwhile
            self.go_online()
        elif p.arg0 == AUTH_SIGNATURE:
            self._send_auth_token()  # reject: host tries its next key, then its public key
        elif p.arg0 == AUTH_RSAPUBLICKEY:
            self.device.offered_keys.append(p.data)  # the user never taps "Allow"

    def _on_open(self, p: _Packet) -> None:
        if not self.online:
            return
        name = p.data.rstrip(b"\0").decode("utf-8", "surrogateescape")
        service = self.device._service_for(name)
        if service is None:
            log.info("loopback adb: refusing service %r", name)
            self.send(A_CLSE, 0, p.arg0)
            return
        with self._streams_lock:
            stream = _Stream(self, self._next_id, p.arg0)
            self._next_id += 1
            self._streams[stream.local_id] = stream
        self.send(A_OKAY, stream.local_id, stream.remote_id)
        threading.Thread(
            target=self._run_service,
            args=(service, stream),
            name=f"adb-svc-{name[:20]}",
            daemon=True,
        ).start()

    @staticmethod
    def _run_service(service: Callable[[_Stream], None], stream: _Stream) -> None:
        try:
            service(stream)
        except Exception:
            log.exception("loopback adb: service failed")
        finally:
            stream.close()

    def _stream(self, p: _Packet) -> _Stream | None:
        with self._streams_lock:
            stream = self._streams.get(p.arg1)
        # CLSE(0, id) is how old adb versions closed streams, so accept 0 as "any".
        if stream is None or p.arg0 not in (0, stream.remote_id):
            return None
        return stream

    def _on_okay(self, p: _Packet) -> None:
        if stream := self._stream(p):
            stream._acked()

    def _on_wrte(self, p: _Packet) -> None:
        if stream := self._stream(p):
            stream._deliver(p.data)

    def _on_clse(self, p: _Packet) -> None:
        if stream := self._stream(p):
            stream._finish(send_clse=True)  # adbd answers a CLSE with its own

    # -- teardown

    def _forget(self, stream: _Stream) -> None:
        with self._streams_lock:
            self._streams.pop(stream.local_id, None)

    def _close_streams(self) -> None:
        with self._streams_lock:
            streams = list(self._streams.values())
        for stream in streams:
            stream._finish(send_clse=False)

    def shutdown(self, abort: bool = False) -> None:
        """Make the reader thread exit; abort=True ends with a TCP RST (yanked cable)."""
        self._abort = self._abort or abort
        self._closing = True
        with contextlib.suppress(OSError):
            # SHUT_RD wakes the reader without sending a FIN, so the RST is the only goodbye.
            self.sock.shutdown(socket.SHUT_RD if abort else socket.SHUT_RDWR)

    def _teardown(self) -> None:
        self.online = False
        self._close_streams()
        with contextlib.suppress(OSError):
            if self._abort:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.close()
        self._closed.set()
        self.device._forget(self)

    def join(self, timeout: float) -> None:
        self._closed.wait(timeout)


# --- the device ---------------------------------------------------------------------


class LoopbackDevice:
    """An adbd look-alike on 127.0.0.1:port whose shell and files are this machine's.

    Args:
        root: device root folder; cwd of shell commands; `root/bin` is put first in PATH.
        props: getprop values, merged over `default_props()`.
        state: "device", or "unauthorized" (answers CNXN with AUTH and never accepts).
        port: TCP port; None picks a free one (reserved at construction).
        features: feature list advertised in the CNXN banner.
        max_payload: largest WRTE payload we accept/send (negotiated down with adb).
        protocol_version: highest transport version we speak; A_VERSION_MIN makes
            both sides checksum every packet, A_VERSION lets them skip it.
        kill_after_bytes: drop() all connections once this many stream bytes
            (both directions) went through; one-shot, also settable later.
    """

    def __init__(
        self,
        root: Path | str,
        props: Mapping[str, str] | None = None,
        state: str = "device",
        port: int | None = None,
        *,
        features: Sequence[str] = DEFAULT_FEATURES,
        max_payload: int = MAX_PAYLOAD,
        protocol_version: int = A_VERSION,
        kill_after_bytes: int | None = None,
    ) -> None:
        if state not in DEVICE_STATES:
            raise ValueError(f"state must be one of {DEVICE_STATES}, not {state!r}")
        self.root = Path(root).resolve()
        self.state = state
        self.features = list(features)
        self.max_payload = max_payload
        self.protocol_version = protocol_version
        self.offered_keys: list[bytes] = []  # public keys adb offered while unauthorized
        self._lock = threading.Lock()
        self._bytes = 0
        self._kill_after_bytes = kill_after_bytes
        self._conns: set[_Connection] = set()
        self._running = threading.Event()
        self._accept_thread: threading.Thread | None = None
        self._listener: socket.socket | None = self._bind(port or 0)
        self.port: int = self._listener.getsockname()[1]
        self.props = {**default_props(f"LOOPBACK{self.port}"), **(props or {})}
        (self.root / "bin").mkdir(parents=True, exist_ok=True)
        self._write_getprop()

    # -- public API

    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def kill_after_bytes(self) -> int | None:
        return self._kill_after_bytes

    @kill_after_bytes.setter
    def kill_after_bytes(self, limit: int | None) -> None:
        """Counting starts now: after `limit` more stream bytes all connections are reset."""
        with self._lock:
            self._kill_after_bytes = limit
            self._bytes = 0

    @property
    def connection_count(self) -> int:
        with self._lock:
            return len(self._conns)

    def start(self) -> LoopbackDevice:
        if self._running.is_set():
            return self
        if self._listener is None:
            self._listener = self._bind(self.port)
        self._listener.listen(8)
        self._listener.settimeout(0.1)  # poll, since close() does not wake accept()
        self._running.set()
        self._accept_thread = threading.Thread(
            target=self._accept_loop,
            args=(self._listener,),
            name=f"adb-accept-{self.port}",
            daemon=True,
        )
        self._accept_thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening and close every connection (adb sees the device go offline)."""
        self._running.clear()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
            self._accept_thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._close_connections(abort=False, timeout=timeout)

    def drop(self, timeout: float = 5.0) -> None:
        """Reset all connections abruptly (a yanked cable); keep listening for adb to reconnect."""
        self._close_connections(abort=True, timeout=timeout)

    def authorize(self) -> None:
        """Simulate the user tapping "Allow": pending unauthorized connections go online."""
        self.state = "device"
        for conn in self._snapshot():
            if conn.awaiting_auth:
                conn.go_online()

    def set_prop(self, key: str, value: str) -> None:
        self.props[key] = value
        self._write_getprop()

    def banner(self) -> str:
        fields = "".join(
            f"{k}={self.props.get(k, '')};"
            for k in ("ro.product.name", "ro.product.model", "ro.product.device")
        )
        return f"device::{fields}features={','.join(self.features)}"

    def env(self) -> dict[str, str]:
        """Environment of shell commands: host env with root/bin first in PATH."""
        env = dict(os.environ)
        env["PATH"] = f"{self.root / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}"
        return env

    def resolve(self, path: str) -> Path:
        """Device path -> host path (absolute paths are the host's own)."""
        return self.root / path if not os.path.isabs(path) else Path(path)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LoopbackDevice({self.serial}, state={self.state!r}, root={str(self.root)!r})"

    # -- networking

    @staticmethod
    def _bind(port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        return sock

    def _accept_loop(self, listener: socket.socket) -> None:
        while self._running.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock)
            with self._lock:
                self._conns.add(conn)
            conn.thread.start()

    def _snapshot(self) -> list[_Connection]:
        with self._lock:
            return list(self._conns)

    def _close_connections(self, abort: bool, timeout: float) -> None:
        conns = self._snapshot()
        for conn in conns:
            conn.shutdown(abort=abort)
        for conn in conns:
            conn.join(timeout)

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._conns.discard(conn)

    def _count_bytes(self, size: int) -> None:
        with self._lock:
            self._bytes += size
            limit = self._kill_after_bytes
            tripped = limit is not None and self._bytes >= limit
            if tripped:
                self._kill_after_bytes = None
        if tripped:
            log.info("loopback adb %s: kill_after_bytes reached, dropping", self.serial)
            # no drop(): it would wait for the reader thread we may be running on
            for conn in self._snapshot():
                conn.shutdown(abort=True)

    # -- services

    def _service_for(self, name: str) -> Callable[[_Stream], None] | None:
        if name.startswith("sync:"):
            return self._serve_sync
        if name.startswith("exec:"):
            return lambda s: self._serve_process(s, name[len("exec:") :], shell_protocol=False)
        head, colon, command = name.partition(":")
        kind, *args = head.split(",")  # e.g. "shell,v2,TERM=xterm,raw"
        if kind == "shell" and colon:
            return lambda s: self._serve_process(s, command, shell_protocol="v2" in args)
        return None

    def _write_getprop(self) -> None:
        path = self.root / "bin" / "getprop"
        path.write_text(_getprop_script(self.props))
        path.chmod(0o755)

    def _serve_process(self, stream: _Stream, command: str, shell_protocol: bool) -> None:
        """shell:/exec: (stdout+stderr merged) or shell,v2: (framed, with exit code)."""
        argv = ["/bin/sh", "-c", command] if command else ["/bin/sh"]
        proc = subprocess.Popen(
            argv,
            cwd=self.root,
            env=self.env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if shell_protocol else subprocess.STDOUT,
            start_new_session=True,
        )
        stream.on_close(lambda: _kill_group(proc))
        assert proc.stdin is not None and proc.stdout is not None
        outputs = [(proc.stdout, SHELL_STDOUT)]
        if shell_protocol:
            assert proc.stderr is not None
            outputs.append((proc.stderr, SHELL_STDERR))
        pumps = [
            _thread(_pump_output, stream, pipe, packet_id if shell_protocol else None)
            for pipe, packet_id in outputs
        ]
        _thread(_pump_input, stream, proc.stdin, shell_protocol)
        for pump in pumps:
            pump.join()
        code = proc.wait()
        for pipe, _ in outputs:
            pipe.close()
        if shell_protocol:
            exit_code = 128 - code if code < 0 else code  # killed by signal N -> 128+N, like sh
            stream.write(_SHELL_HEADER.pack(SHELL_EXIT, 1) + bytes([exit_code & 0xFF]))

    def _serve_sync(self, stream: _Stream) -> None:
        _SyncSession(self, stream).serve()


# --- service helpers ----------------------------------------------------------------


def _thread(target: Callable[..., None], *args: object) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """The host closed the stream: end the command and its children, like a hangup."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)


def _pump_output(stream: _Stream, pipe: IO[bytes], packet_id: int | None) -> None:
    """Copy a pipe to the stream, framed as shell-v2 packets when packet_id is set."""
    overhead = _SHELL_HEADER.size if packet_id is not None else 0
    size = min(stream.conn.max_payload - overhead, SYNC_DATA_MAX)
    while data := _read_some(pipe, size):
        if packet_id is not None:
            data = _SHELL_HEADER.pack(packet_id, len(data)) + data
        if not stream.write(data):
            return


def _read_some(pipe: IO[bytes], size: int) -> bytes:
    try:
        return os.read(pipe.fileno(), size)  # whatever is there, not `size` bytes
    except (OSError, ValueError):
        return b""


def _pump_input(stream: _Stream, stdin: IO[bytes], shell_protocol: bool) -> None:
    """Copy host writes to the command's stdin; shell v2 frames stdin and close-stdin."""
    frames = bytearray()
    is_open = True
    while (chunk := stream.read()) is not None:
        if not shell_protocol:
            is_open = is_open and _feed(stdin, chunk)
            continue
        frames += chunk
        while len(frames) >= _SHELL_HEADER.size:
            packet_id, length = _SHELL_HEADER.unpack_from(frames)
            end = _SHELL_HEADER.size + length
            if len(frames) < end:
                break
            payload = bytes(frames[_SHELL_HEADER.size : end])
            del frames[:end]
            if packet_id == SHELL_STDIN and is_open:
                is_open = _feed(stdin, payload)
            elif packet_id == SHELL_CLOSE_STDIN:
                is_open = False
                _close_quietly(stdin)
            # SHELL_WINDOW_SIZE and unknown ids: nothing to do without a pty.
    _close_quietly(stdin)


def _feed(stdin: IO[bytes], data: bytes) -> bool:
    try:
        stdin.write(data)
        stdin.flush()
        return True
    except (OSError, ValueError):  # the command exited or closed its stdin
        return False


def _close_quietly(stdin: IO[bytes]) -> None:
    with contextlib.suppress(OSError, ValueError):
        stdin.close()


class _SyncSession:
    """The `sync:` service: one request after another until QUIT or close.

    Each handler answers one request; returning False ends the session the way
    adbd does after a failure.
    """

    def __init__(self, device: LoopbackDevice, stream: _Stream) -> None:
        self.device = device
        self.reader = _StreamReader(stream)
        self.writer = _StreamWriter(stream)

    def serve(self) -> None:
        handlers: dict[bytes, Callable[[bytes, str], bool]] = {
            b"STAT": self.stat_v1,
            b"LST2": self.stat_v2,
            b"STA2": self.stat_v2,
            b"LIST": self.list,
            b"LIS2": self.list,
            b"SEND": self.send,
            b"RECV": self.recv,
        }
        with contextlib.suppress(EOFError):
            while True:
                request, length = _SYNC_REQ.unpack(self.reader.read_exact(_SYNC_REQ.size))
                if request == b"QUIT":
                    return
                handler = handlers.get(request)
                if handler is None or length > SYNC_PATH_MAX:
                    self.fail(f"bad sync request {request!r} ({length} bytes)")
                    return
                path = self.reader.read_exact(length).decode("utf-8", "surrogateescape")
                keep_going = handler(request, path)
                self.writer.flush()
                if not keep_going:
                    return

    def fail(self, message: str) -> None:
        encoded = message.encode()
        self.writer.write(_SYNC_REQ.pack(b"FAIL", len(encoded)) + encoded)
        self.writer.flush()

    def stat_v1(self, request: bytes, path: str) -> bool:
        try:
            st = os.lstat(self.device.resolve(path))
            record = _STAT_V1.pack(
                b"STAT", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime) & 0xFFFFFFFF
            )
        except OSError:
            record = _STAT_V1.pack(b"STAT", 0, 0, 0)  # v1 tells errors with all zeros
        self.writer.write(record)
        return True

    def stat_v2(self, request: bytes, path: str) -> bool:
        self.writer.write(
            _stat_v2(_STAT_V2, request, self.device.resolve(path), follow=request == b"STA2")
        )
        return True

    def list(self, request: bytes, path: str) -> bool:
        v2 = request == b"LIS2"
        folder = self.device.resolve(path)
        try:
            names = [".", "..", *sorted(os.listdir(folder))]
        except OSError:
            names = []  # adbd just ends the listing
        for name in names:
            encoded = name.encode("utf-8", "surrogateescape")
            if v2:
                self.writer.write(
                    _stat_v2(_DENT_V2, b"DNT2", folder / name, False, len(encoded)) + encoded
                )
                continue
            with contextlib.suppress(OSError):
                st = os.lstat(folder / name)
                self.writer.write(
                    _DENT_V1.pack(
                        b"DENT",
                        st.st_mode,
                        st.st_size & 0xFFFFFFFF,
                        int(st.st_mtime) & 0xFFFFFFFF,
                        len(encoded),
                    )
                    + encoded
                )
        # DONE is a whole zeroed dent record: adb reads the full struct.
        self.writer.write(b"DONE" + bytes((_DENT_V2 if v2 else _DENT_V1).size - 4))
        return True

    def send(self, request: bytes, spec: str) -> bool:
        path, comma, mode_text = spec.rpartition(",")
        if not comma or not mode_text.isdigit():
            self.fail(f"bad SEND spec {spec!r}")
            return False
        mode = int(mode_text)
        target = self.device.resolve(path)
        error, link, mtime = _receive_file(self.reader, target, symlink=stat.S_ISLNK(mode))
        if error is None:
            error = _finish_file(target, mode, link, mtime)
        if error is not None:
            self.fail(error)
            return False
        self.writer.write(_SYNC_REQ.pack(b"OKAY", 0))
        return True

    def recv(self, request: bytes, path: str) -> bool:
        try:
            with open(self.device.resolve(path), "rb") as file:
                while chunk := file.read(SYNC_DATA_MAX):
                    self.writer.write(_SYNC_REQ.pack(b"DATA", len(chunk)) + chunk)
        except OSError as exc:
            self.fail(f"open failed: {exc.strerror}")
            return False
        self.writer.write(_SYNC_REQ.pack(b"DONE", 0))
        return True


def _stat_v2(
    layout: struct.Struct, record_id: bytes, path: Path, follow: bool, *extra: int
) -> bytes:
    """A stat_v2/dent_v2 record; errors travel as errno with zeroed fields."""
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except OSError as exc:
        return layout.pack(record_id, exc.errno or errno.EIO, *([0] * 10), *extra)
    return layout.pack(
        record_id,
        0,
        st.st_dev,
        st.st_ino,
        st.st_mode,
        st.st_nlink,
        st.st_uid,
        st.st_gid,
        st.st_size,
        int(st.st_atime),
        int(st.st_mtime),
        int(st.st_ctime),
        *extra,
    )


def _receive_file(
    reader: _StreamReader, target: Path, symlink: bool
) -> tuple[str | None, bytes, int]:
    """Consume the DATA.../DONE of a SEND into target (or memory, for a symlink).

    Returns (error, symlink target, mtime). The data is always drained, so the
    host gets its FAIL after DONE, as with adbd.
    """
    error: str | None = None
    link = bytearray()
    file: IO[bytes] | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not symlink:
            file = open(target, "wb")  # noqa: SIM115 - closed in the finally below
    except OSError as exc:
        error = f"couldn't create file: {exc.strerror}"
    try:
        while True:
            chunk_id, length = _SYNC_REQ.unpack(reader.read_exact(_SYNC_REQ.size))
            if chunk_id == b"DONE":
                return error, bytes(link), length  # DONE's length field is the mtime
            if chunk_id != b"DATA" or length > SYNC_DATA_MAX:
                return f"bad SEND chunk {chunk_id!r} ({length} bytes)", b"", 0
            data = reader.read_exact(length)
            if symlink:
                link += data
            elif file is not None and error is None:
                try:
                    file.write(data)
                except OSError as exc:
                    error = f"write failed: {exc.strerror}"
    finally:
        if file is not None:
            file.close()


def _finish_file(target: Path, mode: int, link: bytes, mtime: int) -> str | None:
    try:
        if stat.S_ISLNK(mode):
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            os.symlink(link, target)
            os.utime(target, (mtime, mtime), follow_symlinks=False)
        else:
            target.chmod(mode & 0o777)
            os.utime(target, (mtime, mtime))
    except OSError as exc:
        return f"couldn't finish {target}: {exc.strerror}"
    return None


# --- adb server -----------------------------------------------------------------------


def find_adb() -> str | None:
    """The adb binary shipped with adbutils, else the one on PATH."""
    shipped = Path(adbutils.__file__).parent / "binaries" / "adb"
    if shipped.is_file() and os.access(shipped, os.X_OK):
        return str(shipped)
    return shutil.which("adb")


def _free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port != 5037:  # never the default server's port
            return port


def _host_request(port: int, service: str, timeout: float, reply: bool = False) -> str:
    """One smart-socket request to an adb server.

    Used instead of adbutils internally because adbutils runs `adb start-server`
    (on the default port 5037!) whenever it cannot connect.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"%04x%s" % (len(service), service.encode()))
        status = _recv_exact(sock, 4)
        if status != b"OKAY":
            raise AdbError(f"{service}: {status!r}")
        if not reply:
            return ""
        length = _recv_exact(sock, 4)
        payload = _recv_exact(sock, int(length, 16)) if length else None
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
        self.port = port or _free_port()
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
                _host_request(self.port, "host:kill", timeout)
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
        listing = _host_request(self.port, "host:devices", timeout=5.0, reply=True)
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
            _host_request(self.port, "host:version", timeout=1.0, reply=True)
            return True
        except (OSError, AdbError):
            return False

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"AdbServer(port={self.port}, running={self.running})"


# --- pytest fixtures ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def adb_path() -> str:
    """Path of the adb binary; skips the test when there is none."""
    found = find_adb()
    if found is None:
        pytest.skip("adb binary not available")
    return found


@pytest.fixture
def adb_server_factory(
    adb_path: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., AdbServer]]:
    """Call it to start extra private adb servers; all are stopped after the test."""
    servers: list[AdbServer] = []

    def make(**kwargs: object) -> AdbServer:
        home = tmp_path_factory.mktemp("adb-home")
        server = AdbServer(home=home, adb=adb_path, **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server.start()

    yield make
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def adb_server(adb_server_factory: Callable[..., AdbServer]) -> AdbServer:
    """A started private adb server."""
    return adb_server_factory()


@pytest.fixture
def loopback_device_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., LoopbackDevice]]:
    """Call it (LoopbackDevice arguments minus root) to start devices; all stopped after."""
    devices: list[LoopbackDevice] = []

    def make(
        props: Mapping[str, str] | None = None, state: str = "device", **kwargs: object
    ) -> LoopbackDevice:
        root = tmp_path_factory.mktemp("device-root")
        device = LoopbackDevice(root, props, state, **kwargs)  # type: ignore[arg-type]
        devices.append(device)
        return device.start()

    yield make
    for device in reversed(devices):
        device.stop()


@pytest.fixture
def loopback_device(
    loopback_device_factory: Callable[..., LoopbackDevice], adb_server: AdbServer
) -> LoopbackDevice:
    """A started LoopbackDevice already `adb connect`ed to `adb_server`."""
    device = loopback_device_factory()
    adb_server.connect(device.serial)
    return device


@pytest.fixture
def loopback_adb_device(
    loopback_device: LoopbackDevice, adb_server: AdbServer
) -> adbutils.AdbDevice:
    """adbutils handle on `loopback_device` through `adb_server`."""
    return adb_server.device(loopback_device.serial)
