"""bench.runners.adb_transport against a real adb server and a loopback device."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import adbutils
import pytest

from bench.runners import adb_transport
from bench.runners.adb_transport import (
    AdbTransport,
    AdbUnreachable,
    Client,
    ConnectionLost,
    DeviceUnusable,
    Server,
    is_local,
    parse_server,
    start_local_server,
)
from loopback.adb.device import LoopbackDevice
from loopback.adb.protocol import DEFAULT_FEATURES
from loopback.adb.server import AdbServer, free_port

NASTY = "we ird $HOME; rm -rf x 'q' \"dq\" `t` &|.bin"


def transport(server: AdbServer, device: LoopbackDevice) -> AdbTransport:
    return AdbTransport(Server("127.0.0.1", server.port), device.serial, timeout_s=20)


@pytest.mark.phones
def test_shell_v2_exit_code_and_round_trips(adb_server, loopback_device):
    t = transport(adb_server, loopback_device)
    res = t.shell("echo out; echo err >&2; exit 3")
    assert (res.returncode, res.stdout, res.stderr) == (3, "out\n", "err\n")
    assert t.shell("true").returncode == 0
    assert t.round_trips == 2


@pytest.mark.phones
def test_shell_v1_exit_code(adb_server, loopback_device_factory):
    old = loopback_device_factory(features=[f for f in DEFAULT_FEATURES if f != "shell_v2"])
    adb_server.connect(old.serial)
    t = transport(adb_server, old)
    assert "shell_v2" not in t.features()
    res = t.shell("echo hi; (exit 5)")
    assert (res.returncode, res.stdout) == (5, "hi\n")


@pytest.mark.phones
def test_push_and_pull_many_in_one_session_each(adb_server, loopback_device, tmp_path: Path):
    t = transport(adb_server, loopback_device)
    folder = tmp_path / "remote dir $x"
    files = [(b"a" * 200_000, str(folder / NASTY), 0o644),
             (b"#!/bin/sh\necho run\n", str(folder / "sub" / "tool"), 0o755)]
    assert t.push_many(files) == 200_000 + 19
    assert (folder / NASTY).read_bytes() == b"a" * 200_000
    assert (folder / "sub" / "tool").stat().st_mode & 0o777 == 0o755
    pulled = t.pull_many([str(folder / NASTY), str(folder / "missing"), str(folder / "sub/tool")])
    assert pulled[str(folder / NASTY)] == b"a" * 200_000
    assert pulled[str(folder / "missing")] is None
    assert pulled[str(folder / "sub/tool")].startswith(b"#!/bin/sh")
    assert t.round_trips == 1 + 2  # one push session; the failed pull ends a session


def test_unreachable_server_never_starts_one(monkeypatch):
    def no_spawn(*args, **kwargs):
        raise AssertionError(f"tried to run {args}")

    monkeypatch.setattr(adbutils._adb.subprocess, "run", no_spawn)
    port = free_port()
    with pytest.raises(AdbUnreachable, match=f"no adb server reachable at 127.0.0.1:{port}"):
        Client(Server("127.0.0.1", port)).states()


def test_only_this_machines_server_is_ever_started(monkeypatch):
    def no_spawn(*args, **kwargs):
        raise AssertionError(f"tried to run {args}")

    monkeypatch.setattr(adb_transport.subprocess, "run", no_spawn)
    port, other = free_port(), free_port()
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(port))
    assert is_local(Server("127.0.0.1", port)) and is_local(Server("localhost", port))
    assert not is_local(Server("127.0.0.1", other)) and not is_local(Server("10.0.0.2", port))
    with pytest.raises(AdbUnreachable, match="10.0.0.2:.*not this machine's"):
        start_local_server(Server("10.0.0.2", port))


def test_parse_server():
    assert parse_server("10.0.0.2:5038") == Server("10.0.0.2", 5038)
    for bad in ("10.0.0.2", "host:port", ":5037", "h:99999"):
        with pytest.raises(ValueError, match="host:port"):
            parse_server(bad)


@pytest.mark.phones
def test_unauthorized_device_says_what_to_do(adb_server, loopback_device_factory):
    device = loopback_device_factory(state="unauthorized")
    adb_server.connect(device.serial, state="unauthorized")
    with pytest.raises(DeviceUnusable, match="Allow USB debugging"):
        transport(adb_server, device).shell("echo hi")


@pytest.mark.phones
def test_device_dropped_mid_command_keeps_partial_output(adb_server, loopback_device):
    t = transport(adb_server, loopback_device)
    threading.Timer(0.7, loopback_device.drop).start()
    t0 = time.monotonic()
    with pytest.raises(ConnectionLost) as info:
        t.shell("echo first; sleep 0.2; echo second; sleep 30; echo never")
    assert time.monotonic() - t0 < 15
    assert info.value.output == "first\nsecond\n"
