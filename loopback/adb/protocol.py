"""The wire formats a loopback ADB device speaks: transport packets, shell v2 frames, sync
records (AOSP packages/modules/adb protocol.txt, shell_protocol.h, SYNC.TXT and
file_sync_protocol.h)."""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

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

HEADER = struct.Struct("<6I")  # command, arg0, arg1, data_length, data_check, magic

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

# --- shell protocol v2 (shell_protocol.h) ------------------------------------

SHELL_STDIN = 0
SHELL_STDOUT = 1
SHELL_STDERR = 2
SHELL_EXIT = 3
SHELL_CLOSE_STDIN = 4
SHELL_WINDOW_SIZE = 5
SHELL_HEADER = struct.Struct("<BI")

# --- sync protocol (SYNC.TXT, file_sync_protocol.h) -------------------------

SYNC_DATA_MAX = 64 * 1024
SYNC_PATH_MAX = 1024
SYNC_REQ = struct.Struct("<4sI")
STAT_V1 = struct.Struct("<4sIII")
DENT_V1 = struct.Struct("<4sIIII")
STAT_V2 = struct.Struct("<4sIQQIIIIQqqq")
DENT_V2 = struct.Struct("<4sIQQIIIIQqqqI")


class Packet(NamedTuple):
    """One transport message: a command, its two arguments and its payload."""

    command: int
    arg0: int
    arg1: int
    data: bytes


def checksum(data: bytes) -> int:
    """The data_check of protocol versions before A_VERSION_SKIP_CHECKSUM."""
    return sum(data) & 0xFFFFFFFF


def recv_exact(sock: socket.socket, size: int) -> bytes | None:
    """Read exactly `size` bytes; None on EOF."""
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)
