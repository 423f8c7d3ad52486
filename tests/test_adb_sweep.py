"""Farm sweeps over real adb servers: CLI end to end, several phones, phones that go away,
and agreement with the host runner."""

from __future__ import annotations

import json
import os
import statistics
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench import sweep_plan, sweep_run
from bench.agreement import agreement
from bench.devices import make_runners
from bench.runners.base import BatchItem
from bench.runners.host import HostRunner
from bench.tflite_build import build_layer
from loopback.farm import LITERT, Farm
from lut_db.spec import LayerSpec
from lut_db.store import LutStore
from netadapt_cli.main import app

pytestmark = pytest.mark.phones

cli = CliRunner()


def tiny_keys(n: int) -> list[str]:
    return [LayerSpec("conv2d", 16, 16, 8, 8 * (i + 1), kernel=(3, 3)).key for i in range(n)]


def new_version(store: LutStore, runners, keys):  # type: ignore[no-untyped-def]
    fp = runners[0].fingerprint()
    p = sweep_plan.plan(store, "loop", runners[0].backend, fp, [LayerSpec.parse(k) for k in keys])
    return p, sweep_plan.start_version(store, p, "loop", runners[0].backend, fp, {})


def test_cli_sweep_on_two_phones_behind_two_servers(farm_factory, tmp_path: Path):
    farm = farm_factory(servers=2, batch_size=25)
    db = tmp_path / "luts" / "loop.db"
    args = ["lut", "--no-calibrate", "--device", "loop", "--space", "mobilenet_v1",
            "--resolution", "16", "--grid", "512", "--classes", "10", "--lut", str(db)]
    res = cli.invoke(app, args, terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "sealed" in res.output and "2 runner(s)" in res.output
    store = LutStore.open(db)
    (v,) = store.versions()
    assert v.status == "sealed" and store.counts(v) == {"ok": 150}
    serials = {d.serial for d in farm.devices}
    assert {e["serial"] for e in store.entries(v)} == serials  # the plan was shared
    assert len(store.replicas(v)) == 2 * sweep_plan.REPLICA_SAMPLE  # the sample, on each phone
    agree = agreement(store, v)  # keys under 0.005 ms read as 0.00 ms and do not count
    assert 0 < agree["keys"] <= sweep_plan.REPLICA_SAMPLE
    assert {p["serial"] for p in agree["phones"]} == serials
    assert "invoke_overhead_us" in store.stats(v)
    assert serial_free(v.fingerprint, serials)
    shown = cli.invoke(app, ["db", "show", "--lut", f"{db}@{v.id}"], terminal_width=200)
    assert shown.exit_code == 0 and "agreement" in shown.output
    again = cli.invoke(app, args, terminal_width=200)  # resumable: nothing left to do
    assert again.exit_code == 0 and "nothing to do" in again.output
    # a calibration goes through the phone's runner like any model: whole networks
    store.close()
    cal = cli.invoke(app, ["calibrate", "--lut", str(db), "--networks", "8", "--passes", "1",
                           "--json"], terminal_width=200)
    assert cal.exit_code == 0, cal.output
    fitted = json.loads(cal.stdout)
    assert len(fitted["networks"]) == 8 and fitted["fingerprint"] == v.fingerprint


def serial_free(fingerprint: dict, serials: set[str]) -> bool:
    return not any(s in json.dumps(fingerprint) for s in serials)


def test_phone_unplugged_mid_sweep_loses_nothing(farm_factory, tmp_path: Path):
    farm = farm_factory(per_server=2, batch_size=4)
    farm.write(adb={"rejoin_timeout_s": 1})
    runners = make_runners(farm.config())
    victim = farm.devices[0]
    keys = tiny_keys(24)
    store = LutStore.open(tmp_path / "l.db", create=True)
    p, v = new_version(store, runners, keys)
    events: list[tuple[str, str]] = []
    fired = threading.Event()

    def progress(n: int, serial: str) -> None:
        if serial == victim.serial and not fired.is_set():
            fired.set()  # the victim is into its next batch: unplug it there
            threading.Timer(0.3, victim.stop).start()

    res = sweep_run.run(store, v, p.missing, runners, build_layer, 4, progress=progress,
                        on_event=lambda kind, serial, _m: events.append((kind, serial)))
    assert ("lost", victim.serial) in events and ("gone", victim.serial) in events
    assert store.counts(v) == {"ok": 24} and res.version.status == "sealed"
    assert res.per_serial[farm.devices[1].serial] > res.per_serial.get(victim.serial, 0)


def test_phone_that_drops_and_returns_rejoins(farm: Farm, tmp_path: Path):
    runners = make_runners(farm.config())
    keys = tiny_keys(12)
    store = LutStore.open(tmp_path / "l.db", create=True)
    p, v = new_version(store, runners, keys)
    farm.devices[0].kill_after_bytes = 20_000  # reset mid-way through the second batch
    events: list[str] = []
    res = sweep_run.run(store, v, p.missing, runners, build_layer, 4,
                        on_event=lambda kind, _s, _m: events.append(kind))
    assert events[:2] == ["lost", "back"]
    assert store.counts(v) == {"ok": 12} and res.measured == 12


@pytest.mark.sweep  # times the same layers on this host
def test_adb_agrees_with_host_on_bigger_layers(farm: Farm, tmp_path: Path):
    """Same keys, same core, measured alternately: ADB (litert-benchmark in its own process,
    0.01 ms resolution) against the host runner (in-process interpreter)."""
    cpu = max(os.sched_getaffinity(0))
    farm.write(cpus=[cpu], runs=30, warmup=3)
    (adb,) = make_runners(farm.config())
    host = HostRunner(threads=1, cpus=[cpu], warmup=3, runs=30, min_time_ms=0)
    specs = [  # 0.5-2 ms each on this machine
        LayerSpec("conv2d", 28, 28, 96, 96, kernel=(3, 3)),
        LayerSpec("conv2d", 28, 28, 128, 128, kernel=(3, 3)),
        LayerSpec("conv2d", 14, 14, 256, 256, kernel=(3, 3)),
        LayerSpec("conv2d", 56, 56, 64, 256), LayerSpec("conv2d", 56, 56, 128, 128),
        LayerSpec("depthwise_conv2d", 112, 112, 128, kernel=(3, 3))]
    ratios = []
    for _ in range(2):
        for spec in specs:
            item = [BatchItem(spec.key, build_layer(spec))]
            a, h = adb.measure(item)[0], host.measure(item)[0]
            assert h.latency_us >= 300, spec.key  # big enough for 0.01 ms resolution
            ratios.append(a.latency_us / h.latency_us)
    assert 0.7 <= statistics.median(ratios) <= 1.4, ratios


def test_crashing_model_is_recorded_and_the_sweep_goes_on(farm: Farm, tmp_path: Path):
    (runner,) = make_runners(farm.config())
    keys = tiny_keys(6)
    crash, garbage = keys[1], keys[4]

    def build(spec: LayerSpec) -> bytes:
        faults = {crash: b"CRASHME", garbage: b"GARBAGE"}
        return faults[spec.key] + bytes(64) if spec.key in faults else build_layer(spec)

    db = tmp_path / "luts" / "loop.db"
    store = LutStore.open(db, create=True)
    p, v = new_version(store, [runner], keys)
    failures = tmp_path / "luts" / "loop.failures"
    res = sweep_run.run(store, v, p.missing, [runner], build, 4, failure_dir=failures)
    assert (res.measured, res.failed) == (4, 2) and res.version.status == "sealed"
    failed = {f["key"]: f for f in store.failures(v)}
    assert "killed by signal 11" in failed[crash]["error"]
    assert failed[garbage]["output"].strip() == "no results here"
    saved = sorted(failures.iterdir())
    assert len(saved) == 2 and "no results here" in "".join(f.read_text() for f in saved)
    shown = cli.invoke(app, ["db", "show", "--lut", f"{db}@{v.id}"], terminal_width=250)
    assert shown.exit_code == 0 and "failures" in shown.output
    assert "killed by signal 11" in shown.output


def test_a_broken_tool_stops_the_sweep_early_and_a_resume_retries(farm: Farm, tmp_path: Path):
    """The tool cannot start on the phone (a library is missing): the sweep stops after
    20 models instead of failing all 150, says why once, and resumes once it is fixed."""
    fixed = tmp_path / "libfoo-installed"
    tool = tmp_path / "tool" / "needs-libfoo"
    tool.write_text(f"#!/bin/sh\n[ -e {fixed} ] || {{ echo 'CANNOT LINK EXECUTABLE: "
                    f"library \"libfoo.so\" not found' >&2; exit 127; }}\n"
                    f"exec {LITERT} \"$@\"\n")
    tool.chmod(0o755)
    farm.write(binary=str(tool))
    db = tmp_path / "luts" / "loop.db"
    args = ["lut", "--no-calibrate", "--device", "loop", "--space", "mobilenet_v1", "--resolution", "16",
            "--grid", "512", "--classes", "10", "--lut", str(db)]
    res = cli.invoke(app, args, terminal_width=200)
    out = " ".join(res.output.split())
    assert res.exit_code == 1 and "Traceback" not in out
    assert f"stopped early: the first {sweep_run.SAME_FAILURES_STOP} models on" in out
    assert "exit code 127" in out and out.count('library "libfoo.so" not found') == 1
    with LutStore.open(db) as store:
        (v,) = store.versions()
        counts = store.counts(v)
        assert v.status == "building" and set(counts) == {"failed"} and counts["failed"] < 150
    fixed.touch()  # the library is installed: same tool, same version, resumed
    res = cli.invoke(app, args, terminal_width=200)
    assert res.exit_code == 0, res.output
    with LutStore.open(db) as store:
        (v,) = store.versions()
        assert v.status == "sealed" and store.counts(v) == {"ok": 150}


def test_a_phone_unplugged_during_setup_is_left_out(farm_factory, monkeypatch, capsys):
    """Between discovery and setup a phone goes away: the others sweep without it."""
    import bench.discovery

    farm = farm_factory(servers=2)
    real = bench.discovery.find_devices

    def then_unplug(*args, **kwargs):  # type: ignore[no-untyped-def]
        found = real(*args, **kwargs)
        farm.devices[1].stop()
        farm.servers[1].wait_for_state(farm.devices[1].serial, ("offline", None))
        return found

    monkeypatch.setattr(bench.discovery, "find_devices", then_unplug)
    runners = make_runners(farm.config())
    assert [r.serial for r in runners] == [farm.devices[0].serial]
    err = capsys.readouterr().err
    assert f"warning: {farm.devices[1].serial} on" in err and "goes on without it" in err
