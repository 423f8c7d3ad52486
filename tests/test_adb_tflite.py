"""AdbTfliteRunner over adbutils -> real adb server -> loopback device -> real litert-benchmark."""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from bench.devices import ConfigError, make_runner, make_runners
from bench.runners.adb_tflite import AdbTfliteRunner
from bench.runners.base import BatchItem, Failure, RunnerError, Timing
from bench.runners.local_files import elf_abi
from bench.runners.phone_pinning import pin_prefix
from bench.runners.phone_probe import PhoneInfo, parse_cpu_list, parse_cpus
from bench.runners.phone_thermal import zone_readings
from bench.tflite_build import build_layer
from loopback.farm import Farm, calls, printed, stand_in_tool
from lut_db.spec import LayerSpec

NASTY = "we ird $HOME; 'q' \"dq\" `t` &|"


def items(*channels: int) -> list[BatchItem]:
    specs = [LayerSpec("conv2d", 16, 16, 8, c, kernel=(3, 3)) for c in channels]
    return [BatchItem(s.key, build_layer(s)) for s in specs]


def runner(farm: Farm) -> AdbTfliteRunner:
    (r,) = make_runners(farm.config())
    return r


@pytest.mark.phones
def test_batch_is_two_round_trips_and_binary_is_pushed_once(farm: Farm):
    r = runner(farm)
    assert r.round_trips == 2  # probe, push of the binary
    results = r.measure(items(8, 16, 24, 32, 40))
    assert r.round_trips == 4  # + one push session of the models and script, + one shell
    assert all(isinstance(t, Timing) and t.runs == 5 and t.median_us > 0 for t in results)
    assert results[0].extra["temp_before_c"] is None  # the loopback has no thermal zones here
    assert r.timed_ns > 0
    fp = r.fingerprint()
    assert fp["model"] == "Loopback" and fp["tool"] == "litert-benchmark"
    assert farm.devices[0].serial not in str(fp)  # phones of one model share a version
    batches = Path(r.phone.batches_dir)
    assert any(batches.iterdir())
    r.close()
    assert not batches.exists()
    again = runner(farm)
    assert again.round_trips == 1  # same hash on the phone: probed, not pushed
    assert again.fingerprint() == fp


@pytest.mark.phones
def test_crash_and_unparseable_output_are_failures_of_that_model(farm: Farm):
    r = runner(farm)
    good = items(8)
    batch = [good[0], BatchItem("crash", b"CRASHME" + bytes(64)),
             BatchItem("garbage", b"GARBAGE" + bytes(64)), BatchItem("bad", b"not a model")]
    ok, crash, garbage, bad = r.measure(batch)
    assert isinstance(ok, Timing)
    assert isinstance(crash, Failure) and "killed by signal 11" in crash.error
    assert isinstance(garbage, Failure) and "unparseable litert-benchmark output" in garbage.error
    assert garbage.output.strip() == "no results here"
    assert isinstance(bad, Failure) and "exit code" in bad.error and bad.output


@pytest.mark.phones
def test_paths_with_spaces_and_metacharacters(farm: Farm, tmp_path: Path):
    work = tmp_path / NASTY / "{serial}"
    tool_dir = tmp_path / f"tools {NASTY}"
    tool_dir.mkdir()
    on_phone = tool_dir / "bench $x;y"
    on_phone.write_text(Path(str(farm.backend["binary"])).read_text())
    on_phone.chmod(0o755)
    farm.write(work_dir=str(work), binary=None, binary_on_device=str(on_phone))
    r = runner(farm)
    assert all(isinstance(t, Timing) for t in r.measure(items(8, 16)))
    assert not (tmp_path / "x").exists() and not Path("t").exists()
    assert Path(r.phone.work_dir).is_dir() and NASTY in r.phone.work_dir
    assert r.fingerprint()["tool_hash"]


@pytest.mark.phones
def test_missing_binary_says_how_to_fix_it(farm: Farm, tmp_path: Path):
    farm.write(binary=None, binary_on_device=str(tmp_path / "no" / "benchmark_model"))
    with pytest.raises(RunnerError, match=r"is not found on .*: push .*binary = "):
        runner(farm)
    farm.write(binary=str(tmp_path / "missing_local"), binary_on_device=None)
    with pytest.raises(ConfigError, match=r"key 'backends.tflite-cpu.binary': cannot read"):
        runner(farm)


@pytest.mark.phones
def test_wrong_abi_is_refused(farm: Farm, tmp_path: Path):
    arm = tmp_path / "benchmark_model"
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    header[18:20] = (0xB7).to_bytes(2, "little")  # AArch64
    arm.write_bytes(bytes(header))
    assert elf_abi(bytes(header)) == "arm64-v8a"
    farm.write(binary=str(arm))
    with pytest.raises(RunnerError, match="built for arm64-v8a, but .* runs x86_64"):
        runner(farm)


@pytest.mark.phones
def test_settings_are_checked(farm: Farm):
    for change, message in (({"tool": "tflite"}, "tool': expected one of"),
                            ({"threads": 0}, "threads': expected an integer >= 1"),
                            ({"cpus": "fast"}, "cpus': expected a list of CPU numbers"),
                            ({"warmpu": 3}, "warmpu': unknown setting")):
        farm.write(**change)
        with pytest.raises(ConfigError, match=f"loop.toml: key 'backends.tflite-cpu.{message}"):
            runner(farm)
        farm.backend.pop(next(iter(change)))


@pytest.mark.phones
def test_pinning_cores_and_notes(farm: Farm):
    last = max(os.sched_getaffinity(0))
    farm.write(cpus=[last])
    r = runner(farm)
    assert r.pinning[-2:] == ["taskset", format(1 << last, "x")]
    assert r.fingerprint()["pinned"] is True
    r.phone.info.tools.discard("taskset")
    pinning, notes = pin_prefix(r.phone.info.tools, r.cpus, r.settings.model_timeout_s)
    assert "taskset" not in pinning and "taskset not found" in notes[-1]
    farm.write(cpus="big")
    big = runner(farm)
    assert big.cpus is None and any("big cores unknown" in n for n in big.notes)


def test_big_cores_from_cpufreq_policies_with_offline_cores():
    cpus, online = parse_cpus("policy 1593600 schedutil 0 1 2 3\npolicy 2150400 schedutil 4 5\n"
                              "0 1593600 schedutil\n1 1593600 schedutil\n4 2150400 schedutil\n"
                              "online 0-1,4\n")
    assert cpus[5] == (2150400, "schedutil") and online == {0, 1, 4}  # 5 is offline
    info = PhoneInfo(cpus=cpus, online=online)
    assert info.big_cores() == [4, 5] and not info.is_online(5)
    old, _ = parse_cpus("0 1593600 schedutil\n2 2150400 schedutil\n3 - -\n")  # no policies
    assert old == {0: (1593600, "schedutil"), 2: (2150400, "schedutil"), 3: (None, None)}
    assert parse_cpu_list("0-2,6") == {0, 1, 2, 6}


def test_thermal_readings():
    text = ("@@NETADAPT-TEMP before\n@@T cpu0 45100\n@@T battery 31\n@@T bogus -273000\n"
            "@@NETADAPT-TEMP after\n@@T cpu0 51000\n")
    assert zone_readings(text, "before") == [("cpu0", 45.1), ("battery", 31.0)]
    assert zone_readings(text, "after") == [("cpu0", 51.0)]


@pytest.mark.phones
def test_hot_batch_is_measured_again_after_cool_down(farm: Farm, tmp_path: Path):
    zone = tmp_path / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("cpu-big\n")
    (zone / "temp").write_text("61000\n")
    farm.write(thermal={"limit_c": 50, "cooldown_s": 1.5, "poll_s": 0.1, "retries": 1,
                        "sysfs": str(tmp_path / "thermal"), "zones": ["cpu*"]})
    r = runner(farm)
    cool_down = r.phone.cool_down

    def fan_on() -> float | None:  # the phone cools down once the runner waits for it
        threading.Timer(0.3, lambda: (zone / "temp").write_text("38000\n")).start()
        return cool_down()

    r.phone.cool_down = fan_on
    before = r.round_trips
    (t,) = r.measure(items(8))
    assert t.extra["temp_before_c"] == 38.0 and t.extra["temp_after_c"] == 38.0
    assert t.extra["hot_retries"] == 1 and "hot" not in t.extra
    assert r.round_trips - before >= 4  # push, hot run, temperature polls, run again
    r.phone.cool_down = cool_down
    (zone / "temp").write_text("70000\n")  # never cools down: measured again, marked hot
    (t,) = r.measure(items(16))
    assert t.extra["hot"] is True and t.extra["hot_retries"] == 1


@pytest.mark.phones
def test_several_phones_and_no_serial_for_a_single_device_command(farm_factory):
    farm = farm_factory(per_server=2)
    config = farm.config()
    with pytest.raises(RunnerError, match="2 phones match 'loop': .*choose one with --serial"):
        make_runner(config)
    one = make_runner(config, serial=farm.devices[1].serial)
    assert one.serial == farm.devices[1].serial
    assert {r.serial for r in make_runners(config)} == {d.serial for d in farm.devices}


@pytest.mark.phones
def test_op_profile_through_benchmark_model(farm: Farm, tmp_path: Path):
    """TFLite's benchmark_model --enable_op_profiling output comes back per op, over real
    adb (the phone's tool is a stand-in printing the real tool's captured output)."""
    from bench.runners.parse import parse_op_profile

    tool = stand_in_tool(tmp_path / "bm")
    farm.write(tool="benchmark_model", binary=str(tool))
    r = runner(farm)
    expected = [(op.node_type, op.avg_ms * 1000)
                for op in parse_op_profile((tool.parent / "profile.txt").read_text())]
    assert r.op_profile(items(8)[0].model) == expected and expected
    assert "--enable_op_profiling=true" in calls(tool)[-1]
    assert r.op_profiler.startswith("benchmark_model")
    farm.write(tool="litert-benchmark")
    assert runner(farm).op_profile(items(8)[0].model) is None  # that tool has no profiler


@pytest.mark.phones
def test_gpu_precision_follows_the_model_dtype(farm: Farm, tmp_path: Path):
    """On the GPU, a float16 model runs in half precision and a float32 one in float32
    (both tools' default would time both in fp16), each tool with its own flag."""
    spec = LayerSpec("conv2d", 4, 4, 64, 64, kernel=(1, 1))
    half = replace(spec, dtype="float16")
    batch = [BatchItem(spec.key, build_layer(spec)), BatchItem(half.key, build_layer(half))]
    for kind, flag in (("tflite", "--gpu_precision_loss_allowed="), ("litert", "--gpu-precision=")):
        tool = stand_in_tool(tmp_path / kind, kind)
        farm.write(tool="benchmark_model", binary=str(tool), accelerator="gpu")
        r = runner(farm)
        assert all(isinstance(t, Timing) for t in r.measure(batch))
        runs = [[a for a in argv if a.startswith(flag)] for argv in calls(tool)[-2:]]
        assert runs == ([[flag + "false"], [flag + "true"]] if kind == "tflite"
                        else [[flag + "fp32"], [flag + "fp16"]])
        assert "fp16" in r.fingerprint()["gpu_precision"]


# --- the real tools, played by stand-ins printing their captured output ------------------

@pytest.mark.phones
def test_both_benchmark_models_are_told_apart_and_read(farm: Farm, tmp_path: Path):
    """TFLite's tool is read from its text; LiteRT's CompiledModel one from its result
    file (its text says 0.01 ms for this 8.46 us layer), one more pull per batch."""
    for kind, flavor in (("tflite", "tflite-benchmark_model"), ("litert", "litert-benchmark_model")):
        tool = stand_in_tool(tmp_path / kind, kind)
        farm.write(tool="benchmark_model", binary=str(tool))
        r = runner(farm)
        assert r.fingerprint()["tool_flavor"] == flavor
        before = r.round_trips
        (t,) = r.measure(items(8))
        assert isinstance(t, Timing) and t.mean_us == 8.46 and t.runs == 50
        if kind == "litert":
            assert t.median_us == 8.12 and t.extra["p95_us"] == 11.3 and t.warmup_runs == 10
            assert r.round_trips - before == 3  # push, shell, pull of the result files
            assert any(a.startswith("--result_file_path=") for a in calls(tool)[-1])
        else:
            assert t.median_us is None and r.round_trips - before == 2


@pytest.mark.phones
def test_extra_args_replace_the_runners_flags(farm: Farm, tmp_path: Path):
    tool = stand_in_tool(tmp_path / "bm")
    farm.write(tool="benchmark_model", binary=str(tool), extra_args=["--num_threads=4"])
    r = runner(farm)
    assert isinstance(r.measure(items(8))[0], Timing)
    threads = [[a for a in argv if a.startswith("--num_threads")] for argv in calls(tool)]
    assert threads and all(t == ["--num_threads=4"] for t in threads)  # once, the user's
    for bad, message in ((["num_threads=4"], "is not a flag"),
                         (["--runs=3", "--runs=4"], "given twice"),
                         (["--graph=x.tflite"], "--graph is set by the runner")):
        farm.write(extra_args=bad)
        with pytest.raises(ConfigError, match=f"extra_args': .*{message}"):
            runner(farm)


@pytest.mark.phones
def test_a_flag_the_tool_does_not_take_stops_setup(farm: Farm, tmp_path: Path):
    tool = stand_in_tool(tmp_path / "bm")  # TFLite's: --use_profiler is LiteRT's flag
    farm.write(tool="benchmark_model", binary=str(tool), extra_args=["--use_profiler=true"])
    with pytest.raises(RunnerError, match=r"did not take --use_profiler=true "
                                          r"\('Unconsumed cmdline flags'\).*fix extra_args"):
        runner(farm)
    assert printed("tflite_benchmark_model_unconsumed.txt").startswith(
        "WARN: Unconsumed cmdline flags: --num_threads=4")


@pytest.mark.phones
def test_a_tool_without_result_lines_stops_setup(farm: Farm, tmp_path: Path):
    tool = stand_in_tool(tmp_path / "bm", prints="INFO: STARTING!\nsomething else\n")
    farm.write(tool="benchmark_model", binary=str(tool))
    with pytest.raises(RunnerError, match="(?s)printed neither 'Inference timings in us' nor "
                                          "'========== BENCHMARK RESULTS'.*something else"):
        runner(farm)


@pytest.mark.phones
def test_a_partly_delegated_gpu_model_is_a_failure_never_a_timing(farm: Farm, tmp_path: Path):
    partial = BatchItem("partial", b"PARTIAL" + bytes(64))
    for kind, words in (("tflite", "Disallowed CPU fallback detected."),
                        ("tflite-old", "partially executed by the delegate w/ 2 delegate"),
                        ("litert", "with --require_full_delegation=true")):
        tool = stand_in_tool(tmp_path / kind, kind)
        farm.write(tool="benchmark_model", binary=str(tool), accelerator="gpu")
        r = runner(farm)
        ok, bad = r.measure([items(8)[0], partial])
        assert isinstance(ok, Timing), ok
        assert isinstance(bad, Failure) and "did not run the whole model" in bad.error
        assert words in bad.error + bad.output
        full = "--require_full_delegation=true" in calls(tool)[-1]
        assert full == (kind != "tflite-old") == r.fingerprint()["full_delegation"]
        if kind == "litert":
            assert "--use_cpu=false" in calls(tool)[-1]  # with the CPU on, the tool aborts
        if kind == "tflite-old":
            assert any("no --require_full_delegation" in n for n in r.notes)


@pytest.mark.phones
def test_a_binary_that_is_not_executable_says_chmod(farm: Farm, tmp_path: Path):
    tool = stand_in_tool(tmp_path / "bm")
    tool.chmod(0o644)
    farm.write(tool="benchmark_model", binary=None, binary_on_device=str(tool))
    with pytest.raises(RunnerError, match=r"is not executable on \S+: adb -s \S+ shell chmod 755 "):
        runner(farm)


def fake_cpus(root: Path, policies: dict[int, list[int]], online: list[int]) -> Path:
    """A sysfs with cpufreq policies (max kHz -> cores) and an online list."""
    cpu = root / "devices" / "system" / "cpu"
    for i, (freq, cores) in enumerate(sorted(policies.items())):
        pol = cpu / "cpufreq" / f"policy{cores[0]}"
        pol.mkdir(parents=True)
        (pol / "related_cpus").write_text(" ".join(map(str, cores)) + "\n")
        (pol / "cpuinfo_max_freq").write_text(f"{freq}\n")
        (pol / "scaling_governor").write_text("schedutil\n")
    (cpu / "online").write_text(",".join(map(str, online)) + "\n")
    return root


@pytest.mark.phones
def test_big_cores_come_from_the_policies_and_the_pinning_is_checked(farm: Farm, tmp_path: Path):
    mine = sorted(os.sched_getaffinity(0))
    little, big = mine[0], mine[-1]
    ghost = 63  # a big core this machine does not have: offline on the "phone"
    sysfs = fake_cpus(tmp_path / "sys", {1000: [little], 2000: sorted({big, ghost})},
                      sorted({little, big}))
    farm.write(cpus="big", adb={"sysfs": str(sysfs)})
    r = runner(farm)
    assert r.cpus == [big] and r.probe.pinned_to == [big]  # Cpus_allowed_list under taskset
    assert any(f"[{ghost}] offline" in n for n in r.notes)
    (sysfs / "devices" / "system" / "cpu" / "online").write_text(f"{little}\n")
    if big != little:
        with pytest.raises(RunnerError, match=r"the big cores .* are offline .*cpus in"):
            runner(farm)
    (sysfs / "devices" / "system" / "cpu" / "online").write_text(f"{little},{ghost}\n")
    farm.write(cpus=[ghost], adb={"sysfs": str(sysfs)})  # listed, yet taskset fails: EINVAL
    with pytest.raises(RunnerError, match=r"taskset 8000000000000000 failed on .*fix cpus"):
        runner(farm)


def fake_zones(root: Path, zones: dict[str, float]) -> Path:
    for i, (kind, celsius) in enumerate(zones.items()):
        z = root / f"thermal_zone{i}"
        z.mkdir(parents=True)
        (z / "type").write_text(kind + "\n")
        (z / "temp").write_text(f"{int(celsius * 1000)}\n")
    return root


@pytest.mark.phones
def test_thermal_zones_by_type_recorded_with_each_batch(farm: Farm, tmp_path: Path, capsys):
    zones = fake_zones(tmp_path / "thermal", {"cpu-1-0-usr": 81.0, "skin-therm": 36.5,
                                              "battery": 33.0, "xo_therm": 35.0})
    farm.write(tool="benchmark_model", binary=str(stand_in_tool(tmp_path / "bm")),
               thermal={"limit_c": 45, "sysfs": str(zones), "retries": 0})
    (t,) = runner(farm).measure(items(8))  # the hot CPU sensor is not the phone's heat
    assert t.extra["temp_after_c"] == 36.5 and "hot" not in t.extra
    assert t.extra["zones_c"]["after"] == {"skin-therm": 36.5, "battery": 33.0, "xo_therm": 35.0}
    farm.write(thermal={"limit_c": 45, "sysfs": str(zones), "retries": 0, "zones": ["cpu-*"]})
    (t,) = runner(farm).measure(items(8))  # a config that wants the cores gets them
    assert t.extra["hot"] is True and t.extra["zones_c"]["before"] == {"cpu-1-0-usr": 81.0}
    farm.write(thermal={"limit_c": 45, "sysfs": str(tmp_path / "none")})
    capsys.readouterr()
    r = runner(farm)
    assert "warning: " in capsys.readouterr().err
    assert any("heat is not watched" in n for n in r.fingerprint()["notes"])


@pytest.mark.phones
def test_the_screen_stays_awake_during_a_sweep_then_is_restored(farm: Farm):
    bin_dir = farm.devices[0].root / "bin"
    log = bin_dir / "power.log"
    for name, body in (("svc", f'echo "svc $*" >> {log}'),
                       ("settings", f'[ "$1" = get ] && {{ echo 0; exit; }}; echo "settings $*" >> {log}')):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    r = runner(farm)
    assert log.read_text() == "svc power stayon usb\n"
    r.close()
    assert log.read_text().splitlines()[-1] == "settings put global stay_on_while_plugged_in 0"
    log.unlink()
    farm.write(tool="benchmark_model", binary=None, binary_on_device="/no/benchmark_model")
    with pytest.raises(RunnerError, match="not found"):
        runner(farm)  # a setup that fails leaves the setting as it found it
    assert log.read_text().splitlines() == ["svc power stayon usb",
                                            "settings put global stay_on_while_plugged_in 0"]


@pytest.mark.phones
def test_a_phone_that_comes_back_unfit_loses_no_keys(farm: Farm, tmp_path: Path, capsys):
    from bench import sweep_plan, sweep_run
    from lut_db.store import LutStore

    tool = stand_in_tool(tmp_path / "bm")
    farm.write(tool="benchmark_model", binary=None, binary_on_device=str(tool))
    (r,) = make_runners(farm.config())
    keys = [LayerSpec("conv2d", 16, 16, 8, 8 * (i + 1), kernel=(3, 3)) for i in range(12)]
    store = LutStore.open(tmp_path / "l.db", create=True)
    fp = r.fingerprint()
    plan = sweep_plan.plan(store, "loop", r.backend, fp, keys)
    version = sweep_plan.start_version(store, plan, "loop", r.backend, fp, {})
    farm.devices[0].kill_after_bytes = 60_000  # the first batch moves ~34 kB: cut in the second

    def on_event(kind: str, _serial: str, _message: object) -> None:
        if kind == "lost":
            tool.chmod(0o644)  # it comes back with a binary that cannot run

    with pytest.raises(RunnerError):
        sweep_run.run(store, version, [k.key for k in keys], [r], build_layer, 4, on_event=on_event)
    measured = store.counts(version).get("ok", 0)
    assert 4 <= measured < 12  # the first batch (and what the cut left) stays stored
    assert "came back but cannot measure" in capsys.readouterr().err


@pytest.mark.phones
def test_the_phone_state_is_read_over_adb(farm: Farm, tmp_path: Path):
    """One round trip at each end of a run: the phone's own /proc and sysfs, parsed."""
    zone = tmp_path / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("skin-therm\n")
    (zone / "temp").write_text("61000\n")
    farm.write(thermal={"limit_c": 50, "sysfs": str(tmp_path / "thermal")})
    r = runner(farm)
    before = r.round_trips
    probe = r.state_probe()
    probe.start()
    state = probe.stop()
    assert r.round_trips - before == 2
    assert state.where == r.serial and state.wall_s >= 0 and state.load_1m is not None
    assert state.phone["temps_c"] == {"skin-therm": 61.0} and state.phone["hot"]
    assert "the phone ran hot (61.0 C)" in state.reasons()
