"""`netadapt devices`, config matching and device discovery over real adb servers."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.devices import ConfigError, load_config, parse_config
from bench.discovery import find_devices, matches, parse_getprop
from bench.runners.base import RunnerError
from loopback.adb.server import AdbServer, free_port, host_request
from loopback.farm import Farm, loop_toml
from netadapt_cli.main import app

cli = CliRunner()


def config_of(match: dict[str, object]) -> object:
    body = "\n".join(f'"{k}" = {json.dumps(v)}' for k, v in match.items())
    toml = (f'kind = "android"\n[match]\n{body}\n[backends.cpu]\nrunner = "adb-tflite"\n')
    import tomllib

    return parse_config(tomllib.loads(toml), Path("t.toml"))


def test_matching_globs_regexes_and_all_keys():
    s8 = {"ro.product.model": "SM-G950U", "ro.board.platform": "msm8998"}
    assert matches(config_of({"ro.product.model": ["SM-G950*", "SM-G955*"],
                              "ro.board.platform": "msm8998"}), s8)
    assert not matches(config_of({"ro.product.model": "SM-G950*",
                                  "ro.board.platform": "universal8895"}), s8)
    assert matches(config_of({"ro.product.model": "re:SM-G95[05][A-Z]"}), s8)
    assert not matches(config_of({"ro.product.model": "re:SM-G95"}), s8)  # whole value
    assert not matches(config_of({}), s8)


def test_shipped_configs_recognise_their_phones():
    pixel = {"ro.product.model": "Pixel XL", "ro.board.platform": "msm8996",
             "ro.product.cpu.abi": "arm64-v8a"}
    assert matches(load_config("pixel1"), pixel)
    assert not matches(load_config("galaxy_s8"), pixel)
    assert matches(load_config("generic_android"), pixel)
    assert load_config("galaxy_s8").backend().runner == "snpe"
    assert set(load_config("galaxy_s8").backends) == {"snpe-gpu", "tflite-cpu", "tflite-gpu"}


def test_bad_config_names_file_key_and_expectation(tmp_path: Path):
    import tomllib

    bad = [('[match]\n"ro.product.model" = 3\n',
            "key 'match.ro.product.model': expected a pattern"),
           ('[adb]\nservers = "x"\n', "key 'adb.servers'"),
           ('[thermal]\nlimit = 40\n', "unknown key 'thermal.limit'"),
           ('typo = 1\n', "unknown key 'typo'")]
    for text, message in bad:
        toml = text + '[backends.cpu]\nrunner = "adb-tflite"\n'
        with pytest.raises(ConfigError, match=f"x.toml: {message}"):
            parse_config(tomllib.loads(toml), tmp_path / "x.toml")


def test_parse_getprop():
    text = "[ro.product.model]: [Pixel]\r\n[empty]: []\nnoise\n[a.b]: [x: [y]]\n"
    assert parse_getprop(text) == {"ro.product.model": "Pixel", "empty": "", "a.b": "x: [y]"}


@pytest.mark.phones
def test_devices_lists_the_loopback_phone(farm: Farm):
    res = cli.invoke(app, ["devices", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    (dev,) = doc["devices"]
    assert dev["serial"] == farm.devices[0].serial
    assert (dev["state"], dev["model"], dev["soc"], dev["android"]) == (
        "device", "Loopback", "loopback", "14")
    assert dev["configs"] == ["loop"]
    table = cli.invoke(app, ["devices"], terminal_width=200)
    assert table.exit_code == 0
    assert farm.devices[0].serial in table.output and "loop" in table.output


@pytest.mark.phones
def test_a_broken_config_is_left_out_of_devices_with_a_warning(farm: Farm, configs: Path):
    """Before, one broken TOML in the config directory failed the whole listing."""
    (configs / "toaster.toml").write_text('kind = "toaster"\n[backends.cpu]\nrunner = "host"\n')
    res = CliRunner().invoke(app, ["devices", "--json"])
    assert res.exit_code == 0, res.output
    assert [d["configs"] for d in json.loads(res.stdout)["devices"]] == [["loop"]]
    assert "warning: left out:" in res.stderr and "toaster.toml: key 'kind'" in res.stderr
    res = CliRunner().invoke(app, ["devices", "--config", "toaster"])
    assert res.exit_code == 1 and "toaster.toml: key 'kind'" in res.output  # asked for: an error


@pytest.mark.phones
def test_devices_shows_unauthorized_and_offline(farm: Farm, loopback_device_factory):
    server = farm.servers[0]
    locked = loopback_device_factory(state="unauthorized")
    server.connect(locked.serial, state="unauthorized")
    farm.devices[0].stop()
    server.wait_for_state(farm.devices[0].serial, ("offline", None))
    doc = json.loads(cli.invoke(app, ["devices", "--json", "--config", "loop"]).output)
    states = {d["serial"]: d["state"] for d in doc["devices"]}
    assert states[locked.serial] == "unauthorized"
    assert states.get(farm.devices[0].serial, "offline") == "offline"


def test_an_unreachable_server_that_is_not_ours_is_one_clear_error(configs: Path, monkeypatch):
    """Not this machine's server (another port stands in for another machine): never
    started, an error naming it."""
    port = free_port()
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(free_port()))
    (configs / "far.toml").write_text(loop_toml("far", [f"127.0.0.1:{port}"], {}))
    res = cli.invoke(app, ["devices", "--config", "far"])
    assert res.exit_code == 1
    assert f"no adb server reachable at 127.0.0.1:{port}" in res.output
    assert "Traceback" not in res.output and "started" not in res.output


@pytest.fixture
def no_local_server(monkeypatch, tmp_path: Path):
    """This machine's adb server is on a private port where none runs yet, with a private
    HOME and no USB/mDNS/emulator scanning (the env our test servers get); whatever
    starts there is killed afterwards."""
    idle = AdbServer(home=tmp_path / "adb-home")  # not started: only its port and env
    for key, value in idle.env().items():
        monkeypatch.setenv(key, value)
    yield idle
    subprocess.run([idle.adb, "-P", str(idle.port), "kill-server"], env=idle.env(),
                   capture_output=True, timeout=30, check=False)


def test_devices_starts_the_local_server_as_adb_does(configs: Path, no_local_server):
    port = no_local_server.port
    (configs / "here.toml").write_text(loop_toml("here", [], {}))  # [] = the local server
    with pytest.raises(OSError):
        host_request(port, "host:version", timeout=2)  # none runs yet
    res = cli.invoke(app, ["devices", "--config", "here"])
    assert res.exit_code == 0, res.output
    assert f"no adb server was running at 127.0.0.1:{port}: started it" in res.output
    assert "no devices attached" in res.output
    assert host_request(port, "host:version", timeout=5, reply=True)  # it runs now
    res = cli.invoke(app, ["devices", "--config", "here"])
    assert res.exit_code == 0 and "started" not in res.output


@pytest.mark.phones
def test_no_matching_device_shows_attached_and_wanted(farm: Farm):
    (farm.config_dir / "other.toml").write_text(loop_toml(
        "other", [f"127.0.0.1:{farm.servers[0].port}"], {}, model="Pixel 9"))
    with pytest.raises(RunnerError) as info:
        find_devices(load_config("other"))
    message = str(info.value)
    assert "no attached device matches 'other'" in message
    assert "ro.product.model ~ Pixel 9" in message
    assert f"{farm.devices[0].serial} on 127.0.0.1:{farm.servers[0].port} (device; Loopback"\
        in message


@pytest.mark.phones
def test_unknown_serial_and_unauthorized_phone(farm: Farm, loopback_device_factory):
    with pytest.raises(RunnerError, match="no device with serial 'nope'"):
        find_devices(farm.config(), serial="nope")
    locked = loopback_device_factory(state="unauthorized")
    farm.servers[0].connect(locked.serial, state="unauthorized")
    with pytest.raises(RunnerError, match="is unauthorized: unlock the phone"):
        find_devices(farm.config(), serial=locked.serial)
    farm.devices[0].stop()
    farm.servers[0].wait_for_state(farm.devices[0].serial, ("offline", None))
    with pytest.raises(RunnerError, match="no usable device; .* is (unauthorized|offline)"):
        find_devices(farm.config())


@pytest.mark.phones
def test_lut_with_no_matching_phone_exits_cleanly(farm: Farm):
    (farm.config_dir / "other.toml").write_text(loop_toml(
        "other", [f"127.0.0.1:{farm.servers[0].port}"], {}, model="Pixel 9"))
    res = cli.invoke(app, ["lut", "--no-calibrate", "--device", "other", "--lut", str(farm.tmp / "o.db")],
                     terminal_width=300)
    assert res.exit_code == 1
    assert "no attached device matches 'other'" in res.output
    assert "Traceback" not in res.output


def test_lut_with_no_adb_server_exits_cleanly(configs: Path, monkeypatch, tmp_path: Path):
    port = free_port()
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(free_port()))  # 'far' is not ours
    (configs / "far.toml").write_text(loop_toml("far", [f"127.0.0.1:{port}"], {}))
    res = cli.invoke(app, ["lut", "--no-calibrate", "--device", "far", "--lut", str(tmp_path / "f.db")],
                     terminal_width=300)
    assert res.exit_code == 1 and f"no adb server reachable at 127.0.0.1:{port}" in res.output
    assert not (tmp_path / "f.db").exists()


@pytest.mark.phones
def test_an_adb_of_another_version_on_path_is_warned_about(farm: Farm, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture):
    from bench.discovery import adb_version_warning, scan
    from bench.runners.adb_transport import local_server

    other = tmp_path / "path" / "adb"
    other.parent.mkdir()
    other.write_text("#!/bin/sh\necho 'Android Debug Bridge version 1.0.39'\n"
                     "echo 'Version 28.0.2-debian'\n")
    other.chmod(0o755)
    monkeypatch.setenv("PATH", f"{other.parent}:{os.environ['PATH']}")
    scan([local_server()])  # the farm's server is this machine's (ANDROID_ADB_SERVER_PORT)
    err = capsys.readouterr().err
    assert f"warning: the adb on PATH ({other}, version 1.0.39) differs from the adb server" in err
    assert "ADBUTILS_ADB_PATH" in err
    scan([local_server()])
    assert "warning" not in capsys.readouterr().err  # said once
    same = farm.servers[0].adb  # the server's own binary: no warning
    assert adb_version_warning(local_server(), same) is None
