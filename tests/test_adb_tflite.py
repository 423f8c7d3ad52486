"""AdbTfliteRunner over adbutils -> real adb server -> loopback device -> real litert-benchmark."""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from bench.devices import ConfigError, make_runner, make_runners
from bench.runners.adb_phone import elf_abi, parse_cpus, zone_readings
from bench.runners.adb_tflite import AdbTfliteRunner
from bench.runners.base import BatchItem, Failure, RunnerError, Timing
from bench.tflite_build import build_layer
from lut_db.spec import LayerSpec
from tests.adb_farm import Farm
from tests.loopback_adb import *

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
    r.pinning = r._pin_prefix()
    assert "taskset" not in r.pinning and "taskset not found" in r.notes[-1]
    farm.write(cpus="big")
    big = runner(farm)
    assert big.cpus is None and "big cores unknown" in big.notes[0]  # no cpufreq here


def test_big_cores_from_cpufreq():
    cpus = parse_cpus("0 1593600 schedutil\n1 1593600 schedutil\n2 2150400 schedutil\n"
                      "3 2150400 schedutil\n4 - -\n")
    assert cpus[2] == (2150400, "schedutil") and cpus[4] == (None, None)
    top = max(f for f, _ in cpus.values() if f)
    assert [c for c, (f, _) in cpus.items() if f == top] == [2, 3]


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
    """benchmark_model's --enable_op_profiling output comes back per op, over real adb.

    No real benchmark_model runs here: the phone's tool is a sh script that prints a
    captured profile when asked for one (and fails otherwise), so the flag, the quoting
    and the parse are what is tested."""
    from bench.runners.parse import parse_op_profile

    captured = Path(__file__).parent / "fixtures" / "outputs" / \
        "benchmark_model_xnnpack_op_profiling.txt"
    tool = tmp_path / "bm"
    tool.write_text("#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = --enable_op_profiling=true ] "
                    f"&& exec cat {captured}; done\necho 'not asked for a profile'; exit 3\n")
    tool.chmod(0o755)
    farm.write(tool="benchmark_model", binary=str(tool))
    r = runner(farm)
    expected = [(op.node_type, op.avg_ms * 1000)
                for op in parse_op_profile(captured.read_text())]
    assert r.op_profile(items(8)[0].model) == expected and expected
    assert r.op_profiler.startswith("benchmark_model")
    farm.write(tool="litert-benchmark")
    assert runner(farm).op_profile(items(8)[0].model) is None  # that tool has no profiler


@pytest.mark.phones
def test_gpu_precision_follows_the_model_dtype(farm: Farm, tmp_path: Path):
    """On the GPU delegate, a float16 model runs in half precision and a float32 one in
    float32 (benchmark_model's default would time both in fp16). The phone's tool is a sh
    script that prints a captured benchmark_model result only when it gets
    --use_gpu=true and the precision flag it expects for the model's file size class."""
    captured = Path(__file__).parent / "fixtures" / "outputs" / "benchmark_model_old_average.txt"
    tool = tmp_path / "bm"
    tool.write_text(
        "#!/bin/sh\ngpu=; p=\nfor a in \"$@\"; do case \"$a\" in\n"
        "  --use_gpu=true) gpu=1 ;;\n  --gpu_precision_loss_allowed=*) p=${a#*=} ;;\n"
        "  --graph=*) g=${a#*=} ;;\nesac; done\n"
        "[ -n \"$gpu\" ] || { echo 'no --use_gpu'; exit 4; }\n"
        # the float16 model here is the smaller file: its weights are half as big
        "if [ $(wc -c < \"$g\") -lt 12000 ]; then want=true; else want=false; fi\n"
        "[ \"$p\" = \"$want\" ] || { echo \"precision $p, wanted $want\"; exit 5; }\n"
        f"exec cat {captured}\n")
    tool.chmod(0o755)
    farm.write(tool="benchmark_model", binary=str(tool), accelerator="gpu")
    r = runner(farm)
    spec = LayerSpec("conv2d", 4, 4, 64, 64, kernel=(1, 1))
    half = replace(spec, dtype="float16")
    models = [build_layer(spec), build_layer(half)]
    assert len(models[1]) < 12000 < len(models[0])
    results = r.measure([BatchItem(spec.key, models[0]), BatchItem(half.key, models[1])])
    assert all(isinstance(t, Timing) for t in results), results
    assert "fp16" in r.fingerprint()["gpu_precision"]
