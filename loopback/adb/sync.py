"""The ``sync:`` service of a loopback ADB device: stat, list, push and pull on paths of
this machine (SYNC.TXT, file_sync_protocol.h), one request after another."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import IO

from loopback.adb.protocol import (
    DENT_V1,
    DENT_V2,
    STAT_V1,
    STAT_V2,
    SYNC_DATA_MAX,
    SYNC_PATH_MAX,
    SYNC_REQ,
)
from loopback.adb.transport import Stream


class StreamReader:
    """Exact-size reads over the chunks of a stream."""

    def __init__(self, stream: Stream) -> None:
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


class StreamWriter:
    """Batches small sync replies into WRTE packets of up to max_payload."""

    def __init__(self, stream: Stream) -> None:
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


class SyncSession:
    """The `sync:` service: one request after another until QUIT or close.

    Each handler answers one request; returning False ends the session the way
    adbd does after a failure.
    """

    def __init__(self, resolve: Callable[[str], Path], stream: Stream) -> None:
        self.resolve = resolve  # device path -> path on this machine
        self.reader = StreamReader(stream)
        self.writer = StreamWriter(stream)

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
                request, length = SYNC_REQ.unpack(self.reader.read_exact(SYNC_REQ.size))
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
        self.writer.write(SYNC_REQ.pack(b"FAIL", len(encoded)) + encoded)
        self.writer.flush()

    def stat_v1(self, request: bytes, path: str) -> bool:
        try:
            st = os.lstat(self.resolve(path))
            record = STAT_V1.pack(
                b"STAT", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime) & 0xFFFFFFFF
            )
        except OSError:
            record = STAT_V1.pack(b"STAT", 0, 0, 0)  # v1 tells errors with all zeros
        self.writer.write(record)
        return True

    def stat_v2(self, request: bytes, path: str) -> bool:
        self.writer.write(_stat_v2(STAT_V2, request, self.resolve(path), follow=request == b"STA2"))
        return True

    def list(self, request: bytes, path: str) -> bool:
        v2 = request == b"LIS2"
        folder = self.resolve(path)
        try:
            names = [".", "..", *sorted(os.listdir(folder))]
        except OSError:
            names = []  # adbd just ends the listing
        for name in names:
            encoded = name.encode("utf-8", "surrogateescape")
            if v2:
                self.writer.write(
                    _stat_v2(DENT_V2, b"DNT2", folder / name, False, len(encoded)) + encoded
                )
                continue
            with contextlib.suppress(OSError):
                st = os.lstat(folder / name)
                self.writer.write(
                    DENT_V1.pack(
                        b"DENT",
                        st.st_mode,
                        st.st_size & 0xFFFFFFFF,
                        int(st.st_mtime) & 0xFFFFFFFF,
                        len(encoded),
                    )
                    + encoded
                )
        # DONE is a whole zeroed dent record: adb reads the full struct.
        self.writer.write(b"DONE" + bytes((DENT_V2 if v2 else DENT_V1).size - 4))
        return True

    def send(self, request: bytes, spec: str) -> bool:
        path, comma, mode_text = spec.rpartition(",")
        if not comma or not mode_text.isdigit():
            self.fail(f"bad SEND spec {spec!r}")
            return False
        mode = int(mode_text)
        target = self.resolve(path)
        error, link, mtime = _receive_file(self.reader, target, symlink=stat.S_ISLNK(mode))
        if error is None:
            error = _finish_file(target, mode, link, mtime)
        if error is not None:
            self.fail(error)
            return False
        self.writer.write(SYNC_REQ.pack(b"OKAY", 0))
        return True

    def recv(self, request: bytes, path: str) -> bool:
        try:
            with open(self.resolve(path), "rb") as file:
                while chunk := file.read(SYNC_DATA_MAX):
                    self.writer.write(SYNC_REQ.pack(b"DATA", len(chunk)) + chunk)
        except OSError as exc:
            self.fail(f"open failed: {exc.strerror}")
            return False
        self.writer.write(SYNC_REQ.pack(b"DONE", 0))
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
    reader: StreamReader, target: Path, symlink: bool
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
            chunk_id, length = SYNC_REQ.unpack(reader.read_exact(SYNC_REQ.size))
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
