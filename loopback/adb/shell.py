"""The shell of a loopback ADB device: ``shell:``/``exec:`` commands run by ``/bin/sh -c``
on this machine, their pipes copied to and from the stream (framed as shell v2 packets,
exit code included, when adb asks for ``shell,v2:``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

from loopback.adb.protocol import (
    SHELL_CLOSE_STDIN,
    SHELL_EXIT,
    SHELL_HEADER,
    SHELL_STDERR,
    SHELL_STDIN,
    SHELL_STDOUT,
    SYNC_DATA_MAX,
)
from loopback.adb.transport import Stream


def serve_process(
    stream: Stream, command: str, shell_protocol: bool, cwd: Path, env: Mapping[str, str]
) -> None:
    """shell:/exec: (stdout+stderr merged) or shell,v2: (framed, with exit code)."""
    argv = ["/bin/sh", "-c", command] if command else ["/bin/sh"]
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
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
        stream.write(SHELL_HEADER.pack(SHELL_EXIT, 1) + bytes([exit_code & 0xFF]))


def _thread(target: Callable[..., None], *args: object) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """The host closed the stream: end the command and its children, like a hangup."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)


def _pump_output(stream: Stream, pipe: IO[bytes], packet_id: int | None) -> None:
    """Copy a pipe to the stream, framed as shell-v2 packets when packet_id is set."""
    overhead = SHELL_HEADER.size if packet_id is not None else 0
    size = min(stream.conn.max_payload - overhead, SYNC_DATA_MAX)
    while data := _read_some(pipe, size):
        if packet_id is not None:
            data = SHELL_HEADER.pack(packet_id, len(data)) + data
        if not stream.write(data):
            return


def _read_some(pipe: IO[bytes], size: int) -> bytes:
    try:
        return os.read(pipe.fileno(), size)  # whatever is there, not `size` bytes
    except (OSError, ValueError):
        return b""


def _pump_input(stream: Stream, stdin: IO[bytes], shell_protocol: bool) -> None:
    """Copy host writes to the command's stdin; shell v2 frames stdin and close-stdin."""
    frames = bytearray()
    is_open = True
    while (chunk := stream.read()) is not None:
        if not shell_protocol:
            is_open = is_open and _feed(stdin, chunk)
            continue
        frames += chunk
        while len(frames) >= SHELL_HEADER.size:
            packet_id, length = SHELL_HEADER.unpack_from(frames)
            end = SHELL_HEADER.size + length
            if len(frames) < end:
                break
            payload = bytes(frames[SHELL_HEADER.size : end])
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
