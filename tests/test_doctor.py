"""`netadapt doctor`: this machine, and the loopback phone in good and broken states.

The phone tests check that doctor and a sweep's setup say the same thing: doctor's failed
item is the exact message the runner raises, since both come from one check function.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench import quiet
from bench.devices import make_runners
from bench.doctor import quiet_check
from bench.machine_state import MachineState
from bench.runners.adb_phone import safe_serial
from bench.runners.base import RunnerError
from bench.runners.checks import battery_check, governor_check, parse_battery
from loopback.adb.server import free_port
from loopback.farm import Farm
from netadapt_cli.main import app

cli = CliRunner()

DUMPSYS = """#!/bin/sh
# dumpsys of a phone {state}
[ "$1" = battery ] || exit 1
echo "Current Battery Service state:"
echo "  AC powered: false"
echo "  USB powered: {usb}"
echo "  Wireless powered: false"
echo "  status: {status}"
echo "  level: {level}"
"""


def doctor(*args: str, code: int = 0) -> dict:
    res = cli.invoke(app, ["doctor", "--json", *args])
    assert res.exit_code == code, res.output
    return json.loads(res.stdout)


def checks(report: dict, name: str) -> dict[str, dict]:
    (device,) = [d for d in report["devices"] if d["name"] == name]
    return {c["name"]: c for c in device["checks"]}


def runner_error(farm: Farm) -> str:
    with pytest.raises(RunnerError) as info:
        make_runners(farm.config())
    return str(info.value)


# -- the pure checks -------------------------------------------------------------------------
def test_battery_from_dumpsys_and_sysfs():
    dumpsys = ("Current Battery Service state:\n  AC powered: false\n  USB powered: true\n"
               "  Wireless powered: false\n  status: 2\n  health: 2\n  level: 85\n")
    assert parse_battery(dumpsys) == parse_battery("level: 85\nstatus: Charging\nusb powered: "
                                                   "true\n")
    b = parse_battery(dumpsys)
    assert (b.level, b.status, b.powered) == (85, "charging", ("usb",))
    assert battery_check(b).status == "ok"
    drain = battery_check(parse_battery("level: 60\nstatus: 3\n"))
    assert drain.status == "warn" and "charger" in drain.fix
    assert battery_check(parse_battery("level: 9\nstatus: 2\nac powered: true")).status == "warn"
    assert parse_battery("") is None and battery_check(None).status == "warn"


def test_governor_fixed_or_following_the_load():
    fixed = governor_check({0: (1593600, "performance"), 4: (2150400, "performance")})
    assert fixed.ok and "1.59/2.15 GHz" in fixed.detail
    moving = governor_check({0: (1593600, "schedutil"), 1: (1593600, "performance")})
    assert moving.status == "warn" and "scaling_governor" in moving.fix
    assert governor_check({0: (None, None)}).status == "warn"


# -- this machine ----------------------------------------------------------------------------
@pytest.mark.sweep
def test_host_is_ready(configs: Path):
    report = doctor("--device", "host")
    assert report["ready"] is True and report["servers"] == []
    items = checks(report, "host")
    for name in ("Linux", "CPU affinity", "LiteRT", "one-layer run"):
        assert items[name]["status"] == "ok", items[name]
    assert "ms for a 3x3 conv" in items["one-layer run"]["detail"]
    # whether it is quiet enough to measure: a warning at worst, its numbers with limits
    assert items["quiet"]["status"] in ("ok", "warn") and not items["quiet"]["required"]
    assert "(quiet: under 0.3)" in items["quiet"]["detail"]
    table = cli.invoke(app, ["doctor", "--device", "host", "--no-run"], terminal_width=200)
    assert table.exit_code == 0 and "host: ready to sweep" in table.output


def test_quiet_check_names_what_is_busy_with_its_limit():
    """The "quiet" check on scripted probes: each number against its limit, a warning
    (the machine can still sweep) whose fix says why its latencies would wander."""
    calm = {"load_1m": 0.1, "noise": 0.01, "l3_slowdown": 1.05,
            "l3_layers": [s.key for s in quiet.l3_layers(32 * 1024)]}
    state = MachineState("host", 2.0, 2, 0.1, 2.0, other_cpu_cores=0.0, steal_share=0.0)
    ok = quiet_check(calm, state)
    assert ok.status == "ok" and ok.detail == (
        "load 0.10 (quiet: under 0.3); one layer's 0.2 s means spread 1.0 % (under 3 %); "
        "the shared L3: a 16 MB layer 1.05x slower per byte than a 4 MB one (under 1.3); "
        "other processes 0.00 cores (under 0.25), steal 0.0 %")
    for busy in ({**calm, "l3_slowdown": 1.8}, {**calm, "noise": 0.08}):
        check = quiet_check(busy, state)
        assert check.status == "warn" and "wander" in check.fix
    neighbours = MachineState("host", 2.0, 2, 0.1, 2.0, other_cpu_cores=0.9, steal_share=0.0)
    assert quiet_check(calm, neighbours).status == "warn"
    no_l3 = {k: v for k, v in calm.items() if not k.startswith("l3")}  # sysfs tells no L3
    assert quiet_check(no_l3, state).ok and "L3" not in quiet_check(no_l3, state).detail


def test_host_that_cannot_pin_says_how_to_fix_it(configs: Path):
    (configs / "pinned.toml").write_text('kind = "host"\n[backends.cpu]\nrunner = "host"\n'
                                         "cpus = [4096]\n")
    items = checks(doctor("--device", "pinned", code=3), "host")
    assert items["CPU affinity"]["status"] == "fail"
    assert "cannot pin to CPU(s) [4096]" in items["CPU affinity"]["detail"]
    assert "fix cpus" in items["CPU affinity"]["fix"]
    assert "one-layer run" not in items  # nothing runs on a device that cannot sweep


def test_unknown_device_or_backend_is_a_user_error(configs: Path):
    res = cli.invoke(app, ["doctor", "--device", "nope"])
    assert res.exit_code == 1 and "known devices: fast, host" in res.output
    assert "Traceback" not in res.output
    # a backend the runners know, but not this config's: the config says which it has
    res = cli.invoke(app, ["doctor", "--json", "--device", "host", "--backend", "tflite-gpu"])
    error = json.loads(res.stdout)["error"]
    assert res.exit_code == 1 and "has no backend 'tflite-gpu'; it has: tflite-cpu" in error
    # a name no runner knows: a usage error listing the names
    res = cli.invoke(app, ["doctor", "--device", "host", "--backend", "gpu"])
    assert res.exit_code == 2 and "'gpu' is not one of 'tflite-cpu', 'tflite-gpu'" in res.output
    res = cli.invoke(app, ["doctor", "--backend", "tflite-cpu"])
    assert res.exit_code == 2 and "--backend goes with --device" in res.output


def test_what_needs_no_phone_is_said_up_front(configs: Path, monkeypatch: pytest.MonkeyPatch):
    """No phone, an adb server that does not answer, and no SNPE SDK: all three said."""
    monkeypatch.delenv("SNPE_ROOT", raising=False)
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(free_port()))  # never started
    port = free_port()
    (configs / "s8.toml").write_text(
        f'kind = "android"\n[match]\n"ro.product.model" = "SM-G950*"\n[adb]\n'
        f'servers = ["127.0.0.1:{port}"]\n[backends.snpe-gpu]\nrunner = "snpe"\n')
    report = doctor("--device", "s8", code=3)
    (server,) = report["servers"]
    assert not server["ok"] and f"no adb server reachable at 127.0.0.1:{port}" in server["detail"]
    assert f"-P {port} server" in server["fix"] and "s8" in server["fix"]
    items = checks(report, "s8")
    assert "no attached phone matches 's8'" in items["attached"]["detail"]
    assert items["snpe-gpu: SNPE SDK"]["status"] == "fail"
    assert "SNPE_ROOT" in items["snpe-gpu: SNPE SDK"]["fix"]


# -- the loopback phone ----------------------------------------------------------------------
@pytest.mark.phones
def test_loopback_phone_is_ready(farm: Farm):
    serial = farm.devices[0].serial
    work = Path(str(farm.backend["work_dir"]).replace("{serial}", safe_serial(serial)))
    sweeping = work / "batches" / "b1" / "m0.tflite"  # a sweep's batch on the phone
    sweeping.parent.mkdir(parents=True)
    sweeping.write_bytes(b"model")
    everything = doctor("--no-run")  # this machine and every attached phone
    assert everything["ready"] is True
    assert {d["name"] for d in everything["devices"]} == {"host", serial}
    assert all(c["ok"] for c in everything["servers"])
    report = doctor("--device", "loop")
    items = checks(report, serial)
    for name in ("adb state", "ABI and Android", "config", "tflite-cpu: benchmark tool",
                 "tflite-cpu: one-layer run"):
        assert items[name]["status"] == "ok", items[name]
    assert "Android 14 (API 34)" in items["ABI and Android"]["detail"]
    assert "loop (" in items["config"]["detail"]
    assert "tflite-cpu (adb-tflite, default)" in items["config"]["detail"]
    assert "litert-benchmark: " in items["tflite-cpu: one-layer run"]["detail"]
    for name in ("CPU governor", "temperature", "battery"):  # this VM has none: warnings
        assert items[name]["status"] in ("ok", "warn"), items[name]
    assert sweeping.read_bytes() == b"model"  # doctor ran its layer in a folder of its own
    assert not (work / "doctor-batches").exists()


@pytest.mark.phones
def test_heat_and_battery_are_warnings_with_fixes(farm: Farm, tmp_path: Path):
    zone = tmp_path / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("skin-therm\n")  # a body zone: CPU zones are not watched
    (zone / "temp").write_text("52000\n")
    farm.write(thermal={"limit_c": 48, "sysfs": str(tmp_path / "thermal")})
    dumpsys = farm.devices[0].root / "bin" / "dumpsys"
    dumpsys.write_text(DUMPSYS.format(state="on battery", usb="false", status=3, level=64))
    dumpsys.chmod(0o755)
    items = checks(doctor("--device", "loop", "--no-run"), farm.devices[0].serial)
    assert items["temperature"]["status"] == "warn"
    assert "52.0 C, over the limit of 48 C" in items["temperature"]["detail"]
    assert items["battery"]["status"] == "warn" and "charger" in items["battery"]["fix"]
    assert "tflite-cpu: one-layer run" not in items  # --no-run
    (zone / "temp").write_text("40000\n")
    dumpsys.write_text(DUMPSYS.format(state="charging", usb="true", status=2, level=90))
    items = checks(doctor("--device", "loop", "--no-run"), farm.devices[0].serial)
    assert items["temperature"] == {**items["temperature"], "status": "ok",
                                    "detail": "40.0 C (limit 48 C)"}
    assert items["battery"]["detail"] == "90 %, charging (usb)"


@pytest.mark.phones
def test_binary_missing_or_not_executable(farm: Farm, tmp_path: Path):
    missing = tmp_path / "no" / "benchmark_model"
    farm.write(binary=None, binary_on_device=str(missing))
    items = checks(doctor("--device", "loop", code=3), farm.devices[0].serial)
    tool = items["tflite-cpu: benchmark tool"]
    assert tool["status"] == "fail" and "is not found on" in tool["detail"]
    assert f"push litert-benchmark {missing}" in tool["fix"]
    assert f"{tool['detail']}: {tool['fix']}" == runner_error(farm)  # the sweep's own words
    assert "tflite-cpu: one-layer run" not in items
    missing.parent.mkdir()
    missing.write_text("#!/bin/sh\n")
    items = checks(doctor("--device", "loop", code=3), farm.devices[0].serial)
    tool = items["tflite-cpu: benchmark tool"]
    assert "is not executable" in tool["detail"] and f"chmod 755 {missing}" in tool["fix"]
    assert f"{tool['detail']}: {tool['fix']}" == runner_error(farm)


@pytest.mark.phones
def test_wrong_abi(farm: Farm, tmp_path: Path):
    arm = tmp_path / "benchmark_model"
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    header[18:20] = (0xB7).to_bytes(2, "little")  # AArch64, on an x86_64 "phone"
    arm.write_bytes(bytes(header))
    farm.write(binary=str(arm))
    items = checks(doctor("--device", "loop", code=3), farm.devices[0].serial)
    tool = items["tflite-cpu: benchmark tool"]
    assert "is built for arm64-v8a, but" in tool["detail"] and "build of" in tool["fix"]
    assert f"{tool['detail']}: {tool['fix']}" == runner_error(farm)
    res = cli.invoke(app, ["doctor", "--device", "loop"], terminal_width=250)
    assert res.exit_code == 3 and "cannot sweep" in res.output and "FAIL" in res.output


@pytest.mark.phones
def test_phone_offline_or_unauthorized(farm: Farm, loopback_device_factory):
    phone = farm.devices[0]
    phone.stop()
    farm.servers[0].wait_for_state(phone.serial, ("offline", None))
    report = doctor("--device", "loop", code=3)
    (device,) = report["devices"]
    (check,) = [c for c in device["checks"] if not c["ok"]]
    assert check["name"] in ("adb state", "attached")  # adb lists it offline, or forgot it
    assert "offline" in check["detail"] or "no attached phone matches 'loop'" in check["detail"]
    assert check["fix"]
    assert doctor("--serial", "nope", code=3)["devices"][0]["checks"][0]["name"] == "attached"
    locked = loopback_device_factory(state="unauthorized")
    farm.servers[0].connect(locked.serial, state="unauthorized")
    state = checks(doctor("--device", "loop", "--serial", locked.serial, code=3),
                   locked.serial)["adb state"]
    assert "is unauthorized" in state["detail"] and "Allow USB debugging" in state["fix"]


@pytest.mark.phones
def test_only_the_chosen_backend_has_to_work(farm: Farm, monkeypatch: pytest.MonkeyPatch):
    """An SNPE backend without its SDK is a warning, unless it is the one asked for."""
    monkeypatch.delenv("SNPE_ROOT", raising=False)
    with (farm.config_dir / "loop.toml").open("a") as f:
        f.write('[backends.snpe-gpu]\nrunner = "snpe"\n')
    items = checks(doctor("--device", "loop", "--no-run"), farm.devices[0].serial)
    sdk = items["snpe-gpu: SNPE SDK"]
    assert sdk["status"] == "warn" and "No Qualcomm SNPE SDK configured" in sdk["detail"]
    assert sdk["fix"].startswith("set SNPE_ROOT")
    items = checks(doctor("--device", "loop", "--backend", "snpe-gpu", "--no-run", code=3),
                   farm.devices[0].serial)
    assert items["snpe-gpu: SNPE SDK"]["status"] == "fail"
    assert items["tflite-cpu: benchmark tool"]["status"] == "ok"


@pytest.mark.phones
def test_a_tool_that_cannot_run_shows_its_output(farm: Farm, tmp_path: Path):
    broken = tmp_path / "benchmark_model"
    broken.write_text("#!/bin/sh\necho 'CANNOT LINK EXECUTABLE: libtflite.so not found' >&2\n"
                      "exit 1\n")
    broken.chmod(0o755)
    farm.write(binary=None, binary_on_device=str(broken))
    items = checks(doctor("--device", "loop", code=3), farm.devices[0].serial)
    assert items["tflite-cpu: benchmark tool"]["status"] == "ok"
    run = items["tflite-cpu: one-layer run"]
    assert run["status"] == "fail" and "exit code 1" in run["detail"]
    assert "CANNOT LINK EXECUTABLE" in run["detail"] and "shell" in run["fix"]
