"""`LoopbackDevice`: an adbd look-alike on 127.0.0.1 that a real adb server `adb connect`s
to. Its services run on this machine: ``shell:``/``exec:`` commands through ``/bin/sh -c``
in the device root folder (``loopback.adb.shell``), and ``sync:`` paths are paths of this
machine (``loopback.adb.sync``). Tests can make it unauthorized, drop its connections
like a yanked cable, or cut them after so many bytes.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

from loopback.adb.props import default_props, write_getprop
from loopback.adb.protocol import A_VERSION, DEFAULT_FEATURES, MAX_PAYLOAD
from loopback.adb.shell import serve_process
from loopback.adb.sync import SyncSession
from loopback.adb.transport import Connection, Service, Stream

log = logging.getLogger(__name__)

DEVICE_STATES = ("device", "unauthorized")


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
        self._conns: set[Connection] = set()
        self._running = threading.Event()
        self._accept_thread: threading.Thread | None = None
        self._listener: socket.socket | None = self._bind(port or 0)
        self.port: int = self._listener.getsockname()[1]
        self.props = {**default_props(f"LOOPBACK{self.port}"), **(props or {})}
        (self.root / "bin").mkdir(parents=True, exist_ok=True)
        write_getprop(self.root / "bin", self.props)

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
        write_getprop(self.root / "bin", self.props)

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
            conn = Connection(self, sock)
            with self._lock:
                self._conns.add(conn)
            conn.thread.start()

    def _snapshot(self) -> list[Connection]:
        with self._lock:
            return list(self._conns)

    def _close_connections(self, abort: bool, timeout: float) -> None:
        conns = self._snapshot()
        for conn in conns:
            conn.shutdown(abort=abort)
        for conn in conns:
            conn.join(timeout)

    def connection_closed(self, conn: Connection) -> None:
        """Called by a connection's reader thread as it ends."""
        with self._lock:
            self._conns.discard(conn)

    def count_bytes(self, size: int) -> None:
        """Stream bytes that went through, either way: kill_after_bytes counts these."""
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

    def service_for(self, name: str) -> Service | None:
        """The service an OPEN names (sync:, exec:, shell[,v2,...]:); None refuses it."""
        if name.startswith("sync:"):
            return self._serve_sync
        if name.startswith("exec:"):
            return lambda s: self._serve_process(s, name[len("exec:") :], shell_protocol=False)
        head, colon, command = name.partition(":")
        kind, *args = head.split(",")  # e.g. "shell,v2,TERM=xterm,raw"
        if kind == "shell" and colon:
            return lambda s: self._serve_process(s, command, shell_protocol="v2" in args)
        return None

    def _serve_process(self, stream: Stream, command: str, shell_protocol: bool) -> None:
        serve_process(stream, command, shell_protocol, self.root, self.env())

    def _serve_sync(self, stream: Stream) -> None:
        SyncSession(self.resolve, stream).serve()
