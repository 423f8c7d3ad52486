"""bench.devices: device configs (TOML) -> DeviceConfig -> runners; every error names the
file, the key and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.devices import (
    CONFIG_DIR,
    BackendName,
    ConfigError,
    config_dir,
    host_runner_settings,
    known_configs,
    load_config,
    make_runner,
    make_runners,
)
from bench.runners.host import HostRunner


def test_the_shipped_host_config() -> None:
    cfg = load_config("host", CONFIG_DIR)
    assert (cfg.name, cfg.kind, cfg.default_backend) == ("host", "host", "tflite-cpu")
    b = cfg.backend()
    assert b.runner == "host"
    assert b.settings == {"threads": 1, "cpus": "last", "warmup": 3, "runs": 15,
                          "min_time_ms": 20, "passes": 10, "batch_size": 64}
    runner = make_runner(cfg)
    assert (runner.passes, runner.batch_size) == (10, 64)
    assert cfg.path == CONFIG_DIR / "host.toml"
    assert "host" in known_configs(CONFIG_DIR)


def test_backend_names_are_what_the_runners_run_on() -> None:
    """--backend's choices: each names what a runner runs on, none is left out, and every
    shipped config's backends are among them."""
    from bench.runners.snpe_commands import RUNTIME_FLAGS
    from bench.runners.tflite_settings import ACCELERATORS

    runs_on = ({HostRunner.backend} | {f"tflite-{a}" for a in ACCELERATORS}
               | {f"snpe-{r}" for r in RUNTIME_FLAGS})
    assert set(BackendName) == runs_on
    for name in known_configs(CONFIG_DIR):
        assert set(load_config(name, CONFIG_DIR).backends) <= set(BackendName), name


def test_config_dir_comes_from_the_environment(configs: Path) -> None:
    assert config_dir() == configs
    assert known_configs() == ["fast", "host"]
    assert load_config("fast").path == configs / "fast.toml"


def test_make_runner_applies_the_settings(configs: Path) -> None:
    runner = make_runner(load_config("host"))
    assert isinstance(runner, HostRunner) and runner.backend == "tflite-cpu"
    assert (runner.threads, runner.warmup, runner.runs, runner.min_time_ms) == (1, 3, 15, 20)
    fast = make_runner(load_config("fast"), runs=7)  # overrides win
    assert (fast.warmup, fast.runs, fast.min_time_ms) == (1, 7, 0)
    (only,) = make_runners(load_config("fast"))
    assert only.fingerprint()["runs"] == 2


def test_unknown_device_lists_the_known_configs(configs: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config("pixel9")
    msg = str(e.value)
    assert "unknown device 'pixel9'" in msg and "known devices: fast, host" in msg
    assert str(configs / "pixel9.toml") in msg


def test_load_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('[backends.cpu]\nrunner = "host"\n')
    cfg = load_config(str(path))
    assert (cfg.name, cfg.kind, cfg.default_backend) == ("mine", "android", "cpu")
    with pytest.raises(ConfigError, match="unknown device"):
        load_config(str(tmp_path / "other.toml"))


def test_malformed_toml_names_the_file_and_line(configs: Path) -> None:
    path = configs / "broken.toml"
    path.write_text('name = "broken"\nkind = "host"\n\n[backends.cpu\nrunner = "host"\n')
    with pytest.raises(ConfigError) as e:
        load_config("broken")
    msg = str(e.value)
    assert str(path) in msg and "malformed TOML" in msg and "line 4" in msg


def test_a_config_that_is_not_text(configs: Path) -> None:
    (configs / "binary.toml").write_bytes(b"name = \"\xff\xfe\"\n")
    with pytest.raises(ConfigError, match="binary.toml"):
        load_config("binary")


BASE = 'name = "x"\nkind = "android"\n'


@pytest.mark.parametrize("text, words", [
    ('name = "x"\n', ["missing key 'backends'", "dict"]),
    (BASE + "backends = {}\n", ["'backends'", "at least one"]),
    ('kind = "phone"\n[backends.cpu]\nrunner = "host"\n', ["'kind'", "host, android", "phone"]),
    ('name = 3\n[backends.cpu]\nrunner = "host"\n', ["'name'", "expected str", "int 3"]),
    (BASE + "[backends]\ncpu = 1\n", ["'backends.cpu'", "expected a table"]),
    (BASE + "[backends.cpu]\nthreads = 1\n", ["missing key 'backends.cpu.runner'"]),
    (BASE + "[backends.cpu]\nrunner = 5\n", ["'backends.cpu.runner'", "expected str"]),
    (BASE + 'default_backend = "gpu"\n[backends.cpu]\nrunner = "host"\n',
     ["'default_backend'", "'gpu'", "cpu"]),
    (BASE + '[backends.cpu]\nrunner = "host"\n[adb]\nservers = "h:5037"\n',
     ["'adb.servers'", "host:port"]),
    (BASE + '[backends.cpu]\nrunner = "host"\n[adb]\nservers = [5037]\n', ["'adb.servers'"]),
    (BASE + 'match = "pixel"\n[backends.cpu]\nrunner = "host"\n', ["'match'", "expected dict"]),
    (BASE + '[match]\nmodel = 5\n[backends.cpu]\nrunner = "host"\n',
     ["'match.model'", "pattern string"]),
    (BASE + 'thermal = 40\n[backends.cpu]\nrunner = "host"\n', ["'thermal'", "expected dict"]),
])
def test_invalid_configs_name_the_file_and_key(configs: Path, text: str,
                                               words: list[str]) -> None:
    path = configs / "x.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config("x")
    assert str(e.value).startswith(str(path))
    for word in words:
        assert word in str(e.value)


def test_defaults_and_match_lists(configs: Path) -> None:
    (configs / "p.toml").write_text(
        'description = "a phone"\n[match]\nmodel = "Pixel"\nsoc = ["a", "b"]\n'
        '[adb]\nservers = ["h1:5037", "h2:5037"]\n[thermal]\nlimit_c = 45\n'
        '[backends.cpu]\nrunner = "adb-tflite"\n[backends.gpu]\nrunner = "adb-tflite"\n'
        'default = true\nuse_gpu = true\n')
    cfg = load_config("p")
    assert cfg.default_backend == "gpu" and cfg.backend().settings == {"use_gpu": True}
    assert cfg.match == {"model": ["Pixel"], "soc": ["a", "b"]}
    assert cfg.adb_servers == ("h1:5037", "h2:5037") and cfg.thermal == {"limit_c": 45}
    assert cfg.description == "a phone"
    with pytest.raises(ConfigError) as e:
        cfg.backend("dsp")
    assert "no backend 'dsp'" in str(e.value) and "cpu, gpu" in str(e.value)


@pytest.mark.parametrize("settings, words", [
    ({"thread": 1}, ["unknown host backend setting 'thread'", "threads"]),
    ({"threads": "1"}, ["'threads'", "expected an integer, got '1'"]),
    ({"threads": True}, ["'threads'", "True"]),
    ({"min_time_ms": "5"}, ["'min_time_ms'", "expected a number, got '5'"]),
    ({"cpus": 3}, ["'cpus'", "expected a list or a string, got 3"]),
    ({"cpus": "first"}, ["'cpus'", "\"last\""]),
    ({"cpus": [0, "1"]}, ["'cpus'", "CPU numbers"]),
    ({"runs": 0}, ["'runs'", "at least 1"]),
])
def test_host_settings_are_checked(settings: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as e:
        host_runner_settings(settings, Path("dev.toml"))
    assert str(e.value).startswith("dev.toml: ")
    for word in words:
        assert word in str(e.value)


def test_host_settings_pass_through() -> None:
    got = host_runner_settings({"threads": 2, "cpus": "last", "min_time_ms": 1.5}, Path("d"))
    assert got == {"threads": 2, "min_time_ms": 1.5}
    assert host_runner_settings({"cpus": [0]}, Path("d")) == {"cpus": [0]}


def test_unknown_runner_kind(configs: Path) -> None:
    """Refused as the config loads, naming the file (before: by make_runner, without it)."""
    path = configs / "t.toml"
    path.write_text('[backends.npu]\nrunner = "tpu"\n')
    with pytest.raises(ConfigError) as e:
        load_config("t")
    assert str(e.value) == (f"{path}: key 'backends.npu.runner': expected one of adb-tflite, "
                            "host, snpe, got 'tpu'")
