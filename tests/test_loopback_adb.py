"""adbutils -> real adb server -> LoopbackDevice, end to end."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import adbutils
import pytest
from adbutils.errors import AdbError

from loopback.adb.device import LoopbackDevice
from loopback.adb.props import host_abi
from loopback.adb.protocol import A_VERSION_MIN
from loopback.adb.server import AdbServer

pytestmark = pytest.mark.phones

Factory = Callable[..., LoopbackDevice]

# Spaces and shell metacharacters, to prove paths are never passed through a shell.
NASTY_NAME = "we ird $HOME; rm -rf x 'q' \"dq\" `t` &|.bin"


def test_device_is_listed_with_its_banner(adb_server: AdbServer, loopback_device: LoopbackDevice):
    assert adb_server.devices() == {loopback_device.serial: "device"}
    listing = adb_server.run("devices", "-l").stdout
    assert "product:loopback model:Loopback device:loopback" in listing
    features = adb_server.device(loopback_device.serial).get_features().split(",")
    assert "shell_v2" in features and "stat_v2" in features
    assert not [f for f in features if f.startswith("sendrecv_v2")]


def test_shell_merges_stderr_and_runs_in_root(
    loopback_adb_device: adbutils.AdbDevice, loopback_device: LoopbackDevice
):
    assert loopback_adb_device.shell("echo hi; echo err >&2") == "hi\nerr"
    assert loopback_adb_device.shell("pwd") == str(loopback_device.root)
    script = loopback_device.root / "bin" / "hello"
    script.write_text('#!/bin/sh\necho "hello $1"\n')
    script.chmod(0o755)
    assert loopback_adb_device.shell(["hello", "a b"]) == "hello a b"


def test_shell2_exit_codes_and_stderr(loopback_adb_device: adbutils.AdbDevice):
    ok = loopback_adb_device.shell2("echo out", v2=True)
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "out\n", "")
    failed = loopback_adb_device.shell2("echo out; echo oops >&2; exit 3", v2=True)
    assert (failed.returncode, failed.stdout, failed.stderr) == (3, "out\n", "oops\n")
    killed = loopback_adb_device.shell2("kill -9 $$", v2=True)
    assert killed.returncode == 128 + 9
    # without v2 adbutils appends `; echo X4EXIT:$?` to a raw shell: (exit N) keeps it reachable
    assert loopback_adb_device.shell2("(exit 4)").returncode == 4


def test_exec_out_is_binary_clean(loopback_adb_device: adbutils.AdbDevice):
    with loopback_adb_device.open_transport() as conn:
        conn.send_command("exec:head -c 300000 /dev/zero | tr '\\0' '\\377'")
        conn.check_okay()
        data = conn.read_until_close(encoding=None)
    assert data == b"\xff" * 300000


def test_cli_shell_stdin_and_exit_code(adb_server: AdbServer, loopback_device: LoopbackDevice):
    # adb's own client speaks shell v2: stdin packets, close-stdin, split stdout/stderr
    result = adb_server.run(
        "-s",
        loopback_device.serial,
        "shell",
        "cat; echo e >&2; exit 5",
        check=False,
        input_text="from stdin\n",
    )
    assert (result.returncode, result.stdout, result.stderr) == (5, "from stdin\n", "e\n")


def test_getprop(loopback_device_factory: Factory, adb_server: AdbServer):
    device = loopback_device_factory(
        props={"ro.product.model": "Pixel 8", "weird.key": "a'b\"c $x"}
    )
    adb_server.connect(device.serial)
    d = adb_server.device(device.serial)
    assert d.prop.model == "Pixel 8"
    assert d.getprop("ro.product.cpu.abi") == host_abi()
    assert d.getprop("ro.board.platform") == "loopback"
    assert d.getprop("weird.key") == "a'b\"c $x"
    assert d.getprop("no.such.prop") == ""
    assert "[ro.product.model]: [Pixel 8]" in d.shell("getprop").splitlines()
    device.set_prop("ro.build.version.release", "15")
    assert d.getprop("ro.build.version.release") == "15"
    assert "model:Pixel_8" in adb_server.run("devices", "-l").stdout


def test_push_pull_large_file(loopback_adb_device: adbutils.AdbDevice, tmp_path: Path):
    payload = os.urandom(5 * 1024 * 1024 + 123)
    src, back = tmp_path / "big.bin", tmp_path / "back.bin"
    src.write_bytes(payload)
    remote = tmp_path / "device" / "sub" / "big.bin"  # parent folders are created, as on adbd
    assert loopback_adb_device.sync.push(src, str(remote), mode=0o640) == len(payload)
    assert remote.read_bytes() == payload
    assert stat.S_IMODE(remote.stat().st_mode) == 0o640
    loopback_adb_device.sync.pull(str(remote), back)
    assert back.read_bytes() == payload


def test_push_pull_nasty_path(loopback_adb_device: adbutils.AdbDevice, tmp_path: Path):
    remote = tmp_path / "dir with space" / NASTY_NAME
    loopback_adb_device.sync.push(b"tricky\x00bytes", str(remote))
    assert remote.read_bytes() == b"tricky\x00bytes"
    assert loopback_adb_device.sync.read_bytes(str(remote)) == b"tricky\x00bytes"


def test_cli_push_pull_directory_with_nasty_names(
    adb_server: AdbServer, loopback_device: LoopbackDevice, tmp_path: Path
):
    # adb's CLI goes through STA2/LST2/LIS2/SEND/RECV, unlike adbutils
    local = tmp_path / "local"
    (local / "sub").mkdir(parents=True)
    (local / NASTY_NAME).write_bytes(os.urandom(200_000))
    (local / "sub" / "small.txt").write_text("small")
    remote = tmp_path / "remote $dir"
    adb_server.run("-s", loopback_device.serial, "push", str(local), str(remote))
    assert (remote / NASTY_NAME).read_bytes() == (local / NASTY_NAME).read_bytes()
    pulled = tmp_path / "pulled"
    adb_server.run("-s", loopback_device.serial, "pull", str(remote), str(pulled))
    assert (pulled / NASTY_NAME).read_bytes() == (local / NASTY_NAME).read_bytes()
    assert (pulled / "sub" / "small.txt").read_text() == "small"


def test_sync_stat_and_list(loopback_adb_device: adbutils.AdbDevice, tmp_path: Path):
    (tmp_path / "a.txt").write_text("12345")
    (tmp_path / "folder").mkdir()
    info = loopback_adb_device.sync.stat(str(tmp_path / "a.txt"))
    assert stat.S_ISREG(info.mode) and info.size == 5 and info.mtime is not None
    assert stat.S_ISDIR(loopback_adb_device.sync.stat(str(tmp_path / "folder")).mode)
    assert not loopback_adb_device.sync.exists(str(tmp_path / "missing"))
    names = {entry.path for entry in loopback_adb_device.sync.list(str(tmp_path))}
    assert {"a.txt", "folder"} <= names


def test_sync_errors(loopback_adb_device: adbutils.AdbDevice, tmp_path: Path):
    with pytest.raises(AdbError, match="No such file"):
        loopback_adb_device.sync.read_bytes(str(tmp_path / "missing"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(AdbError):  # a file where a folder should be
        loopback_adb_device.sync.push(b"data", str(tmp_path / "file" / "child"))


def test_unknown_service_is_refused(loopback_adb_device: adbutils.AdbDevice):
    with loopback_adb_device.open_transport() as conn:
        conn.send_command("no-such-service:")
        with pytest.raises(AdbError):
            conn.check_okay()
    assert loopback_adb_device.shell("echo still fine") == "still fine"


def test_parallel_streams(loopback_adb_device: adbutils.AdbDevice):
    def run(i: int) -> str:
        return loopback_adb_device.shell(f"echo {i}; head -c 100000 /dev/zero | wc -c")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, range(24)))
    assert results == [f"{i}\n100000" for i in range(24)]


def test_checksummed_old_protocol(
    loopback_device_factory: Factory, adb_server: AdbServer, tmp_path: Path
):
    device = loopback_device_factory(protocol_version=A_VERSION_MIN, max_payload=4096)
    adb_server.connect(device.serial)
    d = adb_server.device(device.serial)
    assert d.shell2("head -c 50000 /dev/zero | wc -c", v2=True).stdout == "50000\n"
    payload = os.urandom(300_000)
    d.sync.push(payload, str(tmp_path / "p.bin"))
    assert d.sync.read_bytes(str(tmp_path / "p.bin")) == payload


def test_unauthorized_device(loopback_device_factory: Factory, adb_server: AdbServer):
    device = loopback_device_factory(state="unauthorized")
    adb_server.connect(device.serial, state="unauthorized")
    refused = adb_server.run("-s", device.serial, "shell", "echo hi", check=False)
    assert refused.returncode != 0 and "unauthorized" in refused.stderr
    # after its signature is refused, adb offers its public key (arrives just after AUTH)
    deadline = time.monotonic() + 5
    while not device.offered_keys and time.monotonic() < deadline:
        time.sleep(0.02)
    assert device.offered_keys
    device.authorize()  # the user taps "Allow"
    adb_server.wait_for_state(device.serial, "device")
    assert adb_server.device(device.serial).shell("echo hi") == "hi"


def test_stopped_device_goes_offline(adb_server: AdbServer, loopback_device: LoopbackDevice):
    loopback_device.stop()
    adb_server.wait_for_state(loopback_device.serial, ("offline", None))
    adb_server.disconnect(loopback_device.serial)
    assert adb_server.devices() == {}


def test_drop_mid_transfer_then_adb_reconnects(
    adb_server: AdbServer,
    loopback_device: LoopbackDevice,
    loopback_adb_device: adbutils.AdbDevice,
    tmp_path: Path,
):
    loopback_device.kill_after_bytes = 1_000_000
    with pytest.raises((AdbError, OSError)):
        loopback_adb_device.sync.push(os.urandom(4_000_000), str(tmp_path / "cut.bin"))
    # the listener stays up, so adb's reconnect brings the device back by itself; adb may
    # not have noticed the reset yet, so retry rather than trust a "device" seen too early
    deadline = time.monotonic() + 10
    while True:
        try:
            assert loopback_adb_device.shell("echo back") == "back"
            break
        except AdbError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_restart_on_same_port(adb_server: AdbServer, loopback_device: LoopbackDevice):
    loopback_device.stop()
    adb_server.wait_for_state(loopback_device.serial, ("offline", None))
    loopback_device.start()
    adb_server.connect(loopback_device.serial)
    assert adb_server.device(loopback_device.serial).shell("echo again") == "again"


def test_two_servers_each_with_own_device(
    adb_server_factory: Callable[..., AdbServer], loopback_device_factory: Factory
):
    first, second = adb_server_factory(), adb_server_factory()
    assert first.port != second.port and 5037 not in (first.port, second.port)
    one = loopback_device_factory(props={"ro.product.model": "One"})
    two = loopback_device_factory(props={"ro.product.model": "Two"})
    first.connect(one.serial)
    second.connect(two.serial)
    assert first.devices() == {one.serial: "device"}
    assert second.devices() == {two.serial: "device"}
    assert first.device(one.serial).prop.model == "One"
    assert second.device(two.serial).prop.model == "Two"
