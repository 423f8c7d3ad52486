"""The transport side of a loopback ADB device: one TCP connection from an adb server
(packets, the CNXN/AUTH handshake, the stream table) and the service streams it opens,
with the classic one-WRTE-in-flight flow control (protocol.txt)."""

from __future__ import annotations

import contextlib
import logging
import queue
import secrets
import socket
import struct
import threading
from collections.abc import Callable
from typing import Protocol

from loopback.adb.protocol import (
    A_AUTH,
    A_CLSE,
    A_CNXN,
    A_OKAY,
    A_OPEN,
    A_VERSION_MIN,
    A_VERSION_SKIP_CHECKSUM,
    A_WRTE,
    AUTH_RSAPUBLICKEY,
    AUTH_SIGNATURE,
    AUTH_TOKEN,
    HEADER,
    MAX_PAYLOAD,
    MAX_PAYLOAD_V1,
    Packet,
    checksum,
    recv_exact,
)

log = logging.getLogger(__name__)

Service = Callable[["Stream"], None]


class Device(Protocol):
    """What a connection asks of the device it serves (``LoopbackDevice``)."""

    port: int
    state: str
    protocol_version: int
    max_payload: int
    offered_keys: list[bytes]

    @property
    def serial(self) -> str: ...

    def banner(self) -> str: ...

    def service_for(self, name: str) -> Service | None: ...

    def count_bytes(self, size: int) -> None: ...

    def connection_closed(self, conn: Connection) -> None: ...


# --- streams ------------------------------------------------------------------


class Stream:
    """One OPENed service stream of a connection (our local id <-> host's id)."""

    def __init__(self, conn: Connection, local_id: int, remote_id: int) -> None:
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
                self.conn.device.count_bytes(len(chunk))
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


# --- connections ----------------------------------------------------------------


class Connection:
    """One TCP connection from an adb server: packet reader + stream table."""

    def __init__(self, device: Device, sock: socket.socket) -> None:
        self.device = device
        self.sock = sock
        self.version = A_VERSION_MIN
        self.max_payload = MAX_PAYLOAD_V1
        self.online = False
        self.awaiting_auth = False
        self._send_lock = threading.Lock()
        self._streams: dict[int, Stream] = {}
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
        check = checksum(data) if handshake or self.version < A_VERSION_SKIP_CHECKSUM else 0
        header = HEADER.pack(command, arg0, arg1, len(data), check, command ^ 0xFFFFFFFF)
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

    def _read_packet(self) -> Packet | None:
        header = recv_exact(self.sock, HEADER.size)
        if header is None:
            return None
        command, arg0, arg1, length, check, magic = HEADER.unpack(header)
        if magic != command ^ 0xFFFFFFFF or length > MAX_PAYLOAD:
            log.warning("loopback adb: bad packet header %r, dropping connection", header)
            return None
        data = recv_exact(self.sock, length) if length else b""
        if data is None:
            return None
        if self.online and self.version < A_VERSION_SKIP_CHECKSUM and check != checksum(data):
            log.warning("loopback adb: bad checksum, dropping connection")
            return None
        return Packet(command, arg0, arg1, data)

    def _dispatch(self, p: Packet) -> None:
        log.debug(
            "loopback adb %s <- %s %#x %#x %r",
            self.device.serial,
            p.command.to_bytes(4, "little"),
            p.arg0,
            p.arg1,
            p.data[:64],
        )
        if p.command == A_WRTE:
            self.device.count_bytes(len(p.data))
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

    def _on_cnxn(self, p: Packet) -> None:
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

    def _on_auth(self, p: Packet) -> None:
        if not self.awaiting_auth:
            return
        if self.device.state == "device":  # authorize() was called meanwhile
            self.go_online()
        elif p.arg0 == AUTH_SIGNATURE:
            self._send_auth_token()  # reject: host tries its next key, then its public key
        elif p.arg0 == AUTH_RSAPUBLICKEY:
            self.device.offered_keys.append(p.data)  # the user never taps "Allow"

    def _on_open(self, p: Packet) -> None:
        if not self.online:
            return
        name = p.data.rstrip(b"\0").decode("utf-8", "surrogateescape")
        service = self.device.service_for(name)
        if service is None:
            log.info("loopback adb: refusing service %r", name)
            self.send(A_CLSE, 0, p.arg0)
            return
        with self._streams_lock:
            stream = Stream(self, self._next_id, p.arg0)
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
    def _run_service(service: Service, stream: Stream) -> None:
        try:
            service(stream)
        except Exception:
            log.exception("loopback adb: service failed")
        finally:
            stream.close()

    def _stream(self, p: Packet) -> Stream | None:
        with self._streams_lock:
            stream = self._streams.get(p.arg1)
        # CLSE(0, id) is how old adb versions closed streams, so accept 0 as "any".
        if stream is None or p.arg0 not in (0, stream.remote_id):
            return None
        return stream

    def _on_okay(self, p: Packet) -> None:
        if stream := self._stream(p):
            stream._acked()

    def _on_wrte(self, p: Packet) -> None:
        if stream := self._stream(p):
            stream._deliver(p.data)

    def _on_clse(self, p: Packet) -> None:
        if stream := self._stream(p):
            stream._finish(send_clse=True)  # adbd answers a CLSE with its own

    # -- teardown

    def _forget(self, stream: Stream) -> None:
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
        self.device.connection_closed(self)

    def join(self, timeout: float) -> None:
        self._closed.wait(timeout)
