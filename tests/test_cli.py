"""The `netadapt` CLI: each command works, and every bad input ends in one clear message,
a non-zero exit, no traceback, and the LUT as it was."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from bench.devices import load_config, make_runner
from bench.runners.base import Timing
from bench.tflite_build import build_network
from bench.zoo import FAMILIES, MOBILENET_V1, MOBILENET_V3_SMALL, FamilyName, shape_space
from lut_db.schema import SCHEMA_VERSION
from lut_db.store import LutStore
from netadapt_cli.main import app
from tests.fakes import FAST_TOML

SMALL = ["--resolution", "32", "--classes", "10"]
OFF_GRID = "20," + ",".join(str(w) for w in MOBILENET_V1.base[1:])  # conv1: 20 is not swept
SWEEP = ["lut", "--device", "fast", "--space", "mobilenet_v1", "--grid", "64", *SMALL]


def fake_us(spec) -> float:
    return 1.0 + spec.macs / 1e4


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def flat(text: str) -> str:
    """Output with rich's line wrapping (and the frame of usage errors) undone."""
    return " ".join(text.translate(str.maketrans("│╭╮╰╯─", "      ")).split())


def ok(*args: str):
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    return res


def dump(db: Path) -> list[tuple]:
    """Everything a LUT file holds, to show that a failed command changed nothing."""
    con = sqlite3.connect(db)
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                        "ORDER BY name")]
    rows = [(t, *r) for t in tables for r in con.execute(f"SELECT * FROM [{t}]")]
    con.close()
    return sorted(rows, key=repr)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A sealed LUT of MobileNetV1's space at 32 px, grid 64, with made-up latencies and the
    fingerprint of the `fast` config, so measuring into a version derived from it is allowed."""
    d = tmp_path_factory.mktemp("template")
    (d / "fast.toml").write_text(FAST_TOML)
    fp = make_runner(load_config(str(d / "fast.toml"))).fingerprint()
    db = d / "fast.db"
    with LutStore.open(db, create=True) as store:
        v = store.create_version("fast", "tflite-cpu", fp, space={"sweeps": [
            {"families": ["mobilenet_v1"], "resolutions": [32], "grid": 64, "classes": 10}]})
        store.add_results(v, [(s.key, Timing.from_samples([fake_us(s)] * 3))
                              for s in shape_space(MOBILENET_V1, 32, 64, 10)])
        store.set_stat(v, "invoke_overhead_us", 5.0)
        store.seal(v)
    return db


@pytest.fixture
def lut(template: Path, tmp_path: Path, configs: Path) -> Path:
    """A fresh copy of the template LUT, with the test device configs in NETADAPT_CONFIGS."""
    return Path(shutil.copy(template, tmp_path / "fast.db"))


def net_file(tmp_path: Path, net) -> Path:
    path = tmp_path / "net.json"
    path.write_text(net.to_json(indent=1))
    return path


# -- lut ------------------------------------------------------------------------------------


@pytest.mark.sweep
def test_lut_dry_run_counts_and_stores_nothing(configs: Path, tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    res = ok(*SWEEP, "--lut", db, "--dry-run")
    n = len(shape_space(MOBILENET_V1, 32, 64, 10))
    out = flat(res.output)
    assert f"new version in {db}: {n} keys" in out and f"0 stored, {n} to measure" in out
    assert f"dry run: would measure {n} keys in about" in out and "nothing stored" in out
    assert not db.exists() and not list(tmp_path.glob("new.db*"))


def test_lut_as_json(lut: Path) -> None:
    """--json: the version the sweep wrote and its counts, alone on stdout."""
    res = ok(*SWEEP, "--lut", lut, "--no-calibrate", "--json")
    data = json.loads(res.stdout)
    n = len(shape_space(MOBILENET_V1, 32, 64, 10))
    assert data["action"] == "up-to-date" and data["version"] == 1 and data["keys"] == n
    assert data["stored_before"] == n and data["measured"] == 0 and data["calibration"] is None
    assert "nothing to do" in flat(res.stderr)


@pytest.mark.sweep
def test_lut_dry_run_on_an_existing_lut(lut: Path) -> None:
    before = dump(lut)
    res = ok(*SWEEP[:-4], "--resolution", "64", "--classes", "10", "--lut", lut, "--dry-run")
    assert "new version derived from" in flat(res.output) and "to measure" in res.output
    assert dump(lut) == before
    res = ok(*SWEEP, "--lut", lut, "--no-calibrate")  # everything is there already
    assert "nothing to do" in flat(res.output)
    assert dump(lut) == before


@pytest.mark.any_load  # what is stored and refused, not what was timed
@pytest.mark.sweep
def test_lut_calibrates_a_sealed_version_once(lut: Path) -> None:
    """A sealed version without a calibration gets one (the sweep has nothing to do); the
    next run changes nothing, and a calibration can be neither redone nor edited."""
    res = ok(*SWEEP, "--lut", lut, "--calibration-networks", "12")
    out = flat(res.output)
    assert "nothing to do" in out and re.search(
        rf"calibrated {re.escape(str(lut))}@1: \S+ fitted on 12 networks, .*; cache window "
        r"(pinned to the L2 the device reports|chosen out of fold between the L2|cross-validated)", out)
    after = dump(lut)
    assert "nothing to do" in flat(ok(*SWEEP, "--lut", lut).output) and dump(lut) == after
    assert "calibrated already" in fails("calibrate", "--lut", lut, "--device", "fast",
                                         "--networks", "12")
    con = sqlite3.connect(lut)
    with pytest.raises(sqlite3.IntegrityError, match="never changes"):
        con.execute("UPDATE calibrations SET calibration = '{}'")
    with pytest.raises(sqlite3.IntegrityError, match="never changes"):
        con.execute("DELETE FROM calibrations")
    con.close()
    data = json.loads(ok(*_estimate(lut), "--json").stdout)
    assert data["calibrated"] and data["calibration"]["networks"] == 12
    assert data["total_ms"] != data["raw_total_ms"]


# -- db -------------------------------------------------------------------------------------


def test_db_list_and_show(lut: Path) -> None:
    res = ok("db", "list", "--lut", lut)
    assert "sealed" in res.output and "476" in res.output
    res = ok("db", "show", "--lut", f"{lut}@1", "--entries", "3")
    out = flat(res.output)
    assert "fast@1 tflite-cpu [sealed]" in out and "entries: 476 ok, 0 failed" in out
    assert '"runs": 2' in out and "invoke_overhead_us: 5.00" in out
    assert "first 3 entries" in out
    data = json.loads(ok("db", "show", "--lut", lut, "--json").stdout)
    assert data["counts"] == {"ok": 476} and data["version"]["id"] == 1
    assert data["stats"] == {"invoke_overhead_us": 5.0}


def test_db_show_lists_failures(tmp_path: Path) -> None:
    from bench.runners.base import Failure

    db = tmp_path / "f.db"
    with LutStore.open(db, create=True) as store:
        v = store.create_version("host", "tflite-cpu", {})
        store.add_results(v, [("add:in=1x1x1", Failure("model crashed", "log"))])
        store.seal(v)
    out = flat(ok("db", "show", "--lut", db).output)
    assert "entries: 0 ok, 1 failed" in out and "model crashed" in out


def _scaled_copy(lut: Path, factor: float) -> None:
    with LutStore.open(lut) as store:
        rows = json.loads(store.export(store.version(1)))
        del rows["digest"]  # edited on purpose: a version of its own, not the sealed one
        for r in rows["measurements"][:100]:
            r["latency_us"] *= factor
        store.import_(json.dumps(rows))


def test_db_diff(lut: Path) -> None:
    _scaled_copy(lut, 1.5)
    out = flat(ok("db", "diff", "--lut", f"{lut}@1", "2").output)
    assert "fast@1 -> fast@2: 476 common keys, 0 only in 1, 0 only in 2" in out
    assert "median 1.000" in out and "max 1.500" in out
    s = json.loads(ok("db", "diff", "--lut", f"{lut}@1", f"{lut}@2", "--json").stdout)
    assert s["common"] == 476 and s["max"] == pytest.approx(1.5)
    assert s["within_5pct"] == pytest.approx(376 / 476)


def test_db_export_import_round_trip(lut: Path, tmp_path: Path) -> None:
    out = ok("db", "export", "--lut", lut).stdout
    assert json.loads(out)["version"]["device"] == "fast"
    ok("db", "export", "--lut", f"{lut}@1", "--format", "csv", "-o", tmp_path / "v1.csv")
    ok("db", "export", "--lut", f"{lut}@1", "-o", tmp_path / "v1.json")
    other = tmp_path / "other.db"
    res = ok("db", "import", "--lut", other, tmp_path / "v1.json")
    assert f"imported 476 entries as {other}@1" in flat(res.output)
    res = ok("db", "import", "--lut", other, tmp_path / "v1.csv", "--device", "fast", "--backend",
             "tflite-cpu")
    assert f"as {other}@2" in flat(res.output)
    with LutStore.open(lut) as a, LutStore.open(other) as b:
        assert b.table(b.version(1)) == a.table(a.version(1)) == b.table(b.version(2))
        assert b.version(1).fingerprint == a.version(1).fingerprint


# -- estimate and measure -------------------------------------------------------------------


def test_estimate_a_model_as_json(lut: Path) -> None:
    net = MOBILENET_V1.network(width_mult=0.5, resolution=32, classes=10)
    res = ok("estimate", "--lut", lut, "--model", "mobilenet_v1", "--width", "0.5", *SMALL,
             "--json")
    data = json.loads(res.stdout)
    assert data["lut"] == f"{lut}@1"
    assert data["total_us"] == pytest.approx(sum(fake_us(s) for s in net.specs))
    assert (data["macs"], data["params"], data["interpolated"]) == (net.macs, net.params, 0)
    assert [layer["node"] for layer in data["layers"]] == [n.name for n in net.nodes]


def test_estimate_anchor_needs_a_calibration_and_no_raw(lut: Path) -> None:
    args = ("estimate", "--lut", lut, "--model", "mobilenet_v1", "--width", "0.5", *SMALL,
            "--anchor")
    res = invoke(*args)
    assert res.exit_code == 2 and "needs a calibrated LUT version" in flat(res.output)
    res = invoke(*args, "--raw")
    assert res.exit_code == 2 and "drop --raw" in flat(res.output)


def test_estimate_a_network_file(lut: Path, tmp_path: Path) -> None:
    net = MOBILENET_V1.network(width_mult=0.75, resolution=32, classes=10)
    res = ok("estimate", "--lut", f"{lut}@1", "--network", net_file(tmp_path, net))
    out = flat(res.output)
    total_ms = sum(fake_us(s) for s in net.specs) / 1000
    assert f"estimated latency: {total_ms:.3f} ms" in out
    assert f"{net.macs / 1e6:.1f} M MACs" in out


@pytest.mark.sweep
def test_estimate_missing_keys(lut: Path) -> None:
    args = ["estimate", "--lut", lut, "--model", "mobilenet_v1", "--widths",
            OFF_GRID, *SMALL]
    before = dump(lut)
    res = invoke(*args, "--no-sweep")
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit)
    out = flat(res.output)
    assert f"{lut}@1 has no entry for 3 layer(s)" in out
    assert "conv2d:in=32x32x3,out=20" in out and "netadapt lut" in out
    assert dump(lut) == before
    data = json.loads(ok(*args, "--missing", "interpolate", "--json").stdout)
    assert data["interpolated"] == 3
    res = ok(*args, "--json")  # by default measured on the LUT's device, this machine
    data = json.loads(res.stdout)  # the commentary and progress went to stderr
    assert data["lut"] == f"{lut}@2" and data["interpolated"] == 0
    assert "measuring 3 missing key(s) on fast into a new version derived from" in res.stderr
    assert "measuring 3 missing key(s) 3/3" in res.stderr
    with LutStore.open(lut) as store:
        v2 = store.version(2)
        assert (v2.parent, v2.status) == (1, "sealed")
        assert len(store.keys(v2)) == 476 + 3 and len(store.keys(store.version(1))) == 476
    assert [r for r in dump(lut) if r[0] == "measurements" and r[1] == 1] == [
        r for r in before if r[0] == "measurements"]


@pytest.mark.sweep
def test_measure_a_model(configs: Path) -> None:
    net = MOBILENET_V1.network(width_mult=1.0, resolution=32, classes=10)
    data = json.loads(ok("measure", "--device", "fast", "--model", "mobilenet_v1", *SMALL,
                         "--json").stdout)
    assert data["runs"] >= 2 and data["latency_ms"] > 0
    assert data["min_ms"] <= data["latency_ms"] <= data["max_ms"]
    # the machine's state and the repeat rule's verdict travel with the number
    assert data["machine_state"]["where"] == "host" and isinstance(data["reliable"], bool)
    assert len(data["repeats_ms"]) == data["repeats"] >= 1
    assert (data["macs"], data["params"], data["network"]) == (net.macs, net.params, net.name)
    out = flat(ok("measure", "--device", "fast", "--model", "mobilenet_v2", "--width", "0.5",
                  *SMALL).output)
    assert "mobilenet_v2_x0.5_32 on fast:" in out and "ms (median of 5 passes" in out


def test_measure_says_when_its_number_is_unreliable(configs: Path, monkeypatch) -> None:
    """Repeats that never agree, on a busy machine: two lines say so, the number stays."""
    from bench import timing
    from tests.fakes import BUSY

    passes = tuple(Timing.from_samples([us] * 3) for us in (2710.0, 4060.0, 2880.0))
    checked = timing.Checked(timing.Measurement(passes, 3, {}, BUSY), False, 0.10)
    monkeypatch.setattr(timing, "time_until_agreed", lambda *a, **k: checked)
    out = flat(ok("measure", "--device", "fast", "--model", "mobilenet_v1", *SMALL,
                  "--passes", "1").output)
    assert "2.880 ms (median of 1 passes" in out
    assert "measured 3 times, as the passes disagreed: 2.710, 4.060, 2.880 ms" in out
    assert "warning: the passes were measured while host was busy (other processes used " \
           "1.20 of 2 cores; load average 2.40)" in out
    assert "UNRELIABLE: measured 3 times, the results still disagree by 47 %" in out
    data = json.loads(ok("measure", "--device", "fast", "--model", "mobilenet_v1", *SMALL,
                         "--json").stdout)
    assert data["reliable"] is False and data["repeats_ms"] == [2.71, 4.06, 2.88]
    assert data["machine_state"]["busy"] and len(data["warnings"]) == 2


@pytest.mark.sweep
def test_estimate_and_measure_a_model_file(lut: Path, tmp_path: Path) -> None:
    """A .tflite file is estimated as the network it holds and measured as it is."""
    net = MOBILENET_V1.network(width_mult=0.5, resolution=32, classes=10)
    path = tmp_path / "v1.tflite"
    path.write_bytes(build_network(net, seed=3))
    data = json.loads(ok("estimate", "--lut", lut, "--model-file", path, "--json").stdout)
    assert data["total_us"] == pytest.approx(sum(fake_us(s) for s in net.specs))
    assert [layer["node"] for layer in data["layers"]] == [n.name for n in net.nodes]
    assert data["free_ops"] == []
    res = ok("measure", "--device", "fast", "--model-file", path, "--lut", lut, "--json")
    data = json.loads(res.stdout)
    assert data["network"] == "v1" and data["latency_ms"] > 0
    assert data["estimated_ms"] == pytest.approx(sum(fake_us(s) for s in net.specs) / 1000)
    assert data["estimated_over_measured"] == pytest.approx(
        data["estimated_ms"] / data["latency_ms"])


@pytest.mark.sweep
def test_measure_a_model_file_times_its_own_bytes(configs: Path, tmp_path: Path,
                                                  monkeypatch) -> None:
    from bench.runners.host import HostRunner

    path = tmp_path / "v3.tflite"
    path.write_bytes(build_network(MOBILENET_V3_SMALL.network(resolution=32, classes=10), 9))
    seen = []
    real = HostRunner.measure
    monkeypatch.setattr(HostRunner, "measure",
                        lambda self, batch: seen.extend(batch) or real(self, batch))
    out = flat(ok("measure", "--device", "fast", "--model-file", path, "--passes", "2",
                  "--max-repeats", "1").output)
    assert "v3 on fast:" in out and "ms (median of 2 passes" in out
    assert [item.model for item in seen] == [path.read_bytes()] * 2  # once per pass


@pytest.mark.sweep
def test_model_file_with_keys_the_lut_lacks(lut: Path, tmp_path: Path) -> None:
    path = tmp_path / "v3.tflite"
    path.write_bytes(build_network(MOBILENET_V3_SMALL.network(resolution=32, classes=10)))
    out = fails("estimate", "--lut", lut, "--model-file", path, "--no-sweep")
    assert "has no entry for" in out and "hard_swish:in=16x16x16,dt=float32" in out
    assert f"netadapt estimate --lut {lut}@1 --model-file {path}" in out
    # ... which measures the new op kinds on this machine, one single-op model each
    res = ok("estimate", "--lut", lut, "--model-file", path)
    out = flat(res.output)
    assert "estimated latency:" in out and "hard_swish:in=16x16x16,dt=float32" in out
    assert "1 op(s) of the file have no key of their own: op #105 RESHAPE (no work)" in out


@pytest.mark.parametrize("content, words", [
    (b"not a model at all", ["bad.tflite", "not a flatbuffer"]),
    (None, ["cannot read model file", "bad.tflite"]),
])
def test_bad_model_files(lut: Path, tmp_path: Path, content: bytes | None,
                         words: list[str]) -> None:
    path = tmp_path / "bad.tflite"
    if content is not None:
        path.write_bytes(content)
    for command in (["estimate", "--lut", lut], ["measure", "--device", "fast"]):
        out = fails(*command, "--model-file", path)
        assert all(w in out for w in words), out


# -- bad input: one message, non-zero exit, no traceback, nothing lost ----------------------


def fails(*args: str, code: int = 1) -> str:
    res = invoke(*args)
    assert res.exit_code == code, res.output
    assert isinstance(res.exception, SystemExit), res.exception  # handled, not a crash
    assert "Traceback" not in res.output
    assert res.output.count("Error") == 1, res.output  # one message
    return flat(res.output)


def test_unknown_device_lists_known_configs(configs: Path, tmp_path: Path) -> None:
    out = fails(*SWEEP, "--device", "pixel9", "--lut", tmp_path / "x.db")
    assert "unknown device 'pixel9'" in out and "known devices: fast, host" in out
    out = fails("measure", "--device", "pixel9", "--model", "mobilenet_v1")
    assert "known devices: fast, host" in out
    assert not (tmp_path / "x.db").exists()


def test_malformed_device_toml_names_file_and_line(configs: Path) -> None:
    (configs / "broken.toml").write_text('name = "broken"\n[backends.cpu\nrunner = "host"\n')
    out = fails("measure", "--device", "broken", "--model", "mobilenet_v1", *SMALL)
    assert str(configs / "broken.toml") in out and "line 2" in out


def test_bad_host_settings_in_a_config(configs: Path) -> None:
    (configs / "pinned.toml").write_text(FAST_TOML.replace("threads = 1", "cpus = [4096]"))
    out = fails("measure", "--device", "pinned", "--model", "mobilenet_v1", *SMALL)
    assert "cannot pin to CPU(s) [4096]" in out
    (configs / "zero.toml").write_text(FAST_TOML.replace("runs = 2", "runs = 0"))
    out = fails("measure", "--device", "zero", "--model", "mobilenet_v1", *SMALL)
    assert "zero.toml" in out and "'runs'" in out


def _estimate(ref) -> list[str]:
    return ["estimate", "--lut", str(ref), "--model", "mobilenet_v1", *SMALL]


def test_lut_that_is_not_a_lut(tmp_path: Path, configs: Path) -> None:
    path = tmp_path / "x.db"
    content = b"hello, I am a text file\n" * 20
    path.write_bytes(content)
    for args in (_estimate(path), ["db", "show", "--lut", path], ["db", "list", "--lut", path],
                 [*SWEEP, "--lut", path], ["db", "import", "--lut", path, path]):
        out = fails(*args)
        assert f"{path} is not a netadapt LUT (SQLite says: file is not a database)" in out
    assert path.read_bytes() == content
    path.write_bytes(b"")  # an empty file: nothing to read (a sweep may create a LUT in it)
    for args in (_estimate(path), ["db", "show", "--lut", path], ["db", "list", "--lut", path]):
        assert f"{path} is empty, not a netadapt LUT" in fails(*args)


def test_lut_of_another_app(tmp_path: Path, configs: Path) -> None:
    path = tmp_path / "music.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE songs (title TEXT)")
    con.execute("PRAGMA user_version = 4")
    con.commit()
    con.close()
    before = dump(path)
    for args in (_estimate(path), [*SWEEP, "--lut", path], ["db", "import", "--lut", path, path]):
        assert "not a netadapt LUT (tables: songs)" in fails(*args)
    assert dump(path) == before


def test_corrupt_lut(lut: Path) -> None:
    data = bytearray(lut.read_bytes())
    data[4096:] = b"\xab" * (len(data) - 4096)
    lut.write_bytes(bytes(data))
    for args in (_estimate(lut), ["db", "list", "--lut", lut], [*SWEEP, "--lut", lut]):
        assert "malformed" in fails(*args)


def test_lut_of_a_newer_schema(lut: Path) -> None:
    con = sqlite3.connect(lut)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    before = lut.read_bytes()
    for args in (_estimate(lut), ["db", "list", "--lut", lut], [*SWEEP, "--lut", lut]):
        out = fails(*args)
        assert "written by a newer netadapt-farm" in out and "pip install -U" in out
    assert lut.read_bytes() == before


def test_missing_lut_file(tmp_path: Path) -> None:
    out = fails(*_estimate(tmp_path / "none.db"))
    assert "no such LUT file" in out and "netadapt lut --lut" in out
    assert not (tmp_path / "none.db").exists()


def test_version_that_does_not_exist(lut: Path) -> None:
    for args in (_estimate(f"{lut}@9"), ["db", "show", "--lut", f"{lut}@9"],
                 ["db", "export", "--lut", f"{lut}@9"], ["db", "diff", "--lut", f"{lut}@1", "9"]):
        assert "has no version 9 (versions: 1 sealed)" in fails(*args)
    assert "must be a number" in fails(*_estimate(f"{lut}@latest"))


def test_no_sealed_version_yet(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    with LutStore.open(db, create=True) as store:
        store.create_version("host", "tflite-cpu", {})
    assert "no sealed version yet (versions: 1 building)" in fails(*_estimate(db))


SHAPE_ERRORS = [
    ([{"name": "c1", "spec": "conv2d:in=32x32x3,out=0,k=3x3,s=2x2,pad=same,act=relu"}],
     ["node 'c1'", "cout must be a positive integer"]),
    ([{"name": "c1", "spec": "conv2d:in=32x32x3,out=8,k=33x33,s=1x1,pad=valid,act=relu"}],
     ["node 'c1'", "kernel 33x33 is larger than the input 32x32 with valid padding"]),
    ([{"name": "c1", "spec": "conv2d:in=32x32x3,out=8,k=3x3,s=2x2,pad=same,act=relu"},
      {"name": "c2", "spec": "conv2d:in=16x16x8,out=16", "inputs": ["c1"]},
      {"name": "res", "spec": "add:in=16x16x8", "inputs": ["c1", "c2"]}],
     ["node 'res'", "shape mismatch", "'c2' gives 16x16x16", "add expects 16x16x8"]),
    ([{"name": "c1", "spec": "conv2d:in=32x32x3"}], ["node 'c1'", "missing field 'out'"]),
    ([{"name": "c1", "spec": "convolution:in=32x32x3,out=8"}], ["node 'c1'", "unknown op"]),
    ([{"name": "c1", "spec": "conv2d:in=32x32x3,out=8", "inputs": ["x"]}],
     ["node 'c1'", "'x' is not an earlier node"]),
]


@pytest.mark.parametrize("nodes, words", SHAPE_ERRORS)
def test_invalid_network_json(lut: Path, tmp_path: Path, nodes: list, words: list[str]) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"name": "mine", "input": [32, 32, 3], "nodes": nodes}))
    for args in (["estimate", "--lut", lut, "--network", path],
                 ["measure", "--device", "fast", "--network", path]):
        out = fails(*args)
        assert str(path) in out and "network 'mine'" in out
        assert all(w in out for w in words), out


@pytest.mark.parametrize("text, words", [
    ("{", ["not valid JSON"]),
    ('{"input": [32, 32, 3], "nodes": 3}', ["'nodes' must be a list"]),
    ('{"input": [32, 32], "nodes": []}', ["'input' must be [H, W, C]"]),
])
def test_malformed_network_json(lut: Path, tmp_path: Path, text: str, words: list[str]) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    out = fails("estimate", "--lut", lut, "--network", path)
    assert all(w in out for w in words), out
    assert "cannot read network file" in fails("estimate", "--lut", lut, "--network",
                                               tmp_path / "none.json")


@pytest.mark.parametrize("extra, words", [
    (["--model", "mobilenet_v1", "--network", "x.json"], ["exactly one of --network"]),
    (["--model", "mobilenet_v1", "--model-file", "x.tflite"], ["--model-file FILE.tflite"]),
    ([], ["exactly one of --network"]),
    (["--model", "mobilenet_v1", "--width", "0.5", "--widths", "8"], ["--width", "not both"]),
    (["--model", "mobilenet_v1", "--widths", "8,16"], ["takes 14 widths", "got 2"]),
    (["--model", "mobilenet_v1", "--widths", "8,x"], ["--widths must be integers"]),
    (["--model", "mobilenet_v1", "--resolution", "0"], ["h must be a positive integer"]),
])
def test_bad_network_options(lut: Path, extra: list[str], words: list[str]) -> None:
    out = fails("estimate", "--lut", lut, *extra)
    assert all(w in out for w in words), out


def test_measuring_into_a_sealed_version_of_another_setup(lut: Path, configs: Path) -> None:
    """A sealed version never takes new rows; measuring on demand with another setup would
    mix two setups in one derived version, so it is refused before anything is measured."""
    (configs / "slow.toml").write_text(FAST_TOML.replace("runs = 2", "runs = 5"))
    before = dump(lut)
    out = fails("estimate", "--lut", lut, "--model", "mobilenet_v1", "--widths",
                OFF_GRID, *SMALL,
                "--missing", "measure", "--device", "slow")
    assert "fast@1 was measured with another setup (differs in: runs)" in out
    assert dump(lut) == before


def test_two_sweeps_on_one_lut(lut: Path, lock_holder) -> None:
    holder = lock_holder(lut)
    before = dump(lut)
    out = fails(*SWEEP[:-4], "--resolution", "64", "--classes", "10", "--lut", lut)
    assert f"is being written by another sweep (pid {holder.pid})" in out
    assert dump(lut) == before


def test_usage_errors(lut: Path, tmp_path: Path) -> None:
    out = fails(*SWEEP, "--grid", "0", "--lut", tmp_path / "x.db", code=2)
    assert "--grid must be positive, got 0" in out
    # before: --batch-size 0 quietly meant the runner's own, and a calibration set too small
    # to fit was refused only after the whole sweep (measured, then thrown away)
    out = fails(*SWEEP, "--batch-size", "0", "--lut", tmp_path / "x.db", code=2)
    assert "--batch-size must be positive, got 0" in out
    out = fails(*SWEEP, "--calibration-networks", "3", "--lut", tmp_path / "x.db", code=2)
    assert "--calibration-networks must be at least 8" in out and "--no-calibrate" in out
    out = fails("estimate", "--lut", lut, "--model", "mobilenet_v1", "--missing", "zero", code=2)
    assert "'zero' is not one of 'error', 'interpolate', 'measure'" in out
    out = fails(*SWEEP, "--space", " , ", "--lut", tmp_path / "x.db", code=2)
    assert "names no family (known: mobilenet_v1, mobilenet_v2, mobilenet_v3_small)" in out
    out = fails(*SWEEP, "--space", "mobilenet_v1,mobilenet_v3", "--lut", tmp_path / "x.db",
                code=2)
    assert "names mobilenet_v3 (known: mobilenet_v1," in out
    before = dump(lut)  # a layer no model file can hold is refused, not measured as a failure
    out = fails("estimate", "--lut", lut, "--model", "mobilenet_v1", "--resolution", "100000")
    assert "its output 50000x50000x32 (float32) would need 298.0 GiB" in out
    assert dump(lut) == before
    out = fails("estimate", "--lut", lut, "--model", "mobilenet_v1", "--classes", "0")
    assert "--classes must be at least 1, got 0" in out  # was: fully_connected: cout must be
    out = fails("estimate", "--lut", lut, "--model", "mobilenet_v1", "--width", "0")
    assert "the width multiplier must be positive, got 0" in out
    out = fails("estimate", "--lut", lut, "--model", "mobilenet_v1", "--width", "inf")
    assert "the width multiplier must be a finite number" in out  # was an OverflowError
    out = fails("estimate", "--lut", lut, "--model", "resnet50", code=2)
    assert "'resnet50' is not one of 'mobilenet_v1', 'mobilenet_v2', 'mobilenet_v3_small'" in out
    assert "'int4' is not one of 'float32', 'float16', 'int8'" in fails(
        *SWEEP, "--dtype", "int4", "--lut", tmp_path / "x.db", code=2)
    assert not (tmp_path / "x.db").exists()


def test_exit_codes(lut: Path, tmp_path: Path) -> None:
    """0 done, 1 a user error, 2 a usage error, 3 a check that found a problem (docs/cli.md;
    `lut check` below)."""
    assert "no such LUT file" in fails(*_estimate(tmp_path / "none.db"), code=1)
    assert "No such option" in fails(*_estimate(lut), "--nope", code=2)
    assert invoke("db", "verify", "--lut", lut).exit_code == 0
    con = sqlite3.connect(lut)  # a sealed entry edited behind the store's back
    for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        con.execute(f"DROP TRIGGER {name}")
    con.execute("UPDATE measurements SET latency_us = 2 WHERE rowid = 1")
    con.commit()
    con.close()
    res = invoke("db", "verify", "--lut", lut, "--json")
    assert res.exit_code == 3, res.output
    [row] = json.loads(res.stdout)
    assert row["status"] == "changed" and "latency_us changed in 1 entry" in row["problem"]


@pytest.mark.parametrize("option, value, words", [
    ("--tolerance", "-1", "--tolerance must be a ratio of 0 or more, e.g. 0.05; got -1.0"),
    ("--tolerance", "nan", "--tolerance must be a ratio of 0 or more, e.g. 0.05; got nan"),
    ("--sample", "0", "--sample must be at least 1 (got 0)"),
    ("--networks", "-1", "--networks 0 or more (got -1)"),
])
def test_lut_check_refuses_nonsense_before_measuring(lut: Path, option: str, value: str,
                                                     words: str) -> None:
    """Before, --tolerance -1 called every LUT stale (exit 3), --tolerance nan none (`fresh:
    within ±nan %`), and --networks -1 meant none."""
    out = fails("lut", "check", "--lut", lut, "--device", "fast", option, value, code=2)
    assert words in out


@pytest.mark.sweep
def test_lut_check_exits_3_when_stale(lut: Path) -> None:
    check = ["lut", "check", "--lut", lut, "--device", "fast", "--sample", "4"]
    assert invoke(*check, "--tolerance", "1000").exit_code == 0
    res = invoke(*check, "--tolerance", "0")
    assert res.exit_code == 3 and "Error" not in res.output, res.output
    assert f"rebuild with: netadapt lut --device fast --lut {lut}" in flat(res.output)
    for tolerance, code in (("1000", 0), ("0", 3)):  # a finding, not an error: no "error"
        res = invoke(*check, "--tolerance", tolerance, "--json")
        assert res.exit_code == code and "error" not in json.loads(res.stdout), res.output


def test_old_lut_spellings_work_and_warn(lut: Path, tmp_path: Path) -> None:
    """`lut --db` and the positional LUT under `db` still work for one release, each with
    one line of warning on stderr naming the new spelling."""
    export = tmp_path / "v1.json"
    ok("db", "export", "--lut", f"{lut}@1", "-o", export)
    cases = [
        ([*SWEEP, "--db", lut, "--no-calibrate"], ("netadapt lut --db FILE is deprecated, use "
         "netadapt lut --lut FILE")),
        (["db", "list", lut], "netadapt db list LUT is deprecated, use netadapt db list --lut"),
        (["db", "show", lut], "netadapt db show --lut LUT"),
        (["db", "verify", lut], "netadapt db verify --lut LUT"),
        (["db", "export", lut], "netadapt db export --lut LUT"),
        (["db", "diff", f"{lut}@1", "1"], "netadapt db diff --lut A B"),
        (["db", "import", tmp_path / "other.db", export], "netadapt db import --lut DB SOURCE"),
    ]
    for args, warning in cases:
        res = ok(*args)
        assert res.stderr.count("\n") == 1 and "warning:" in res.stderr, (args, res.stderr)
        assert warning in res.stderr and "next release" in res.stderr, (args, res.stderr)
        assert "deprecated" not in res.stdout
    assert "deprecated" not in ok("db", "list", "--lut", lut).stderr
    out = fails("db", "list", "--lut", lut, lut, code=2)
    assert "give the LUT once, as --lut" in out
    assert "missing option --lut" in fails("db", "show", code=2)


def test_export_to_a_csv_file_imports_back(lut: Path, tmp_path: Path) -> None:
    """`db import` reads a .csv as CSV; before, `db export -o v1.csv` wrote JSON into it, so
    the import asked for --device and --backend, and with them failed on a bad key."""
    ok("db", "export", "--lut", f"{lut}@1", "-o", tmp_path / "v1.csv")
    assert (tmp_path / "v1.csv").read_text().startswith("key,")
    ok("db", "import", "--lut", tmp_path / "back.db", tmp_path / "v1.csv", "--device", "fast",
       "--backend", "tflite-cpu")
    with LutStore.open(lut) as a, LutStore.open(tmp_path / "back.db") as b:
        assert b.table(b.version(1)) == a.table(a.version(1))


def test_bad_imports_and_diffs(lut: Path, tmp_path: Path) -> None:
    before = dump(lut)
    (tmp_path / "junk.json").write_text("[1, 2, 3]")
    assert "not a netadapt LUT export" in fails("db", "import", "--lut", lut, tmp_path / "junk.json")
    assert "No such file" in fails("db", "import", "--lut", lut, tmp_path / "none.json")
    (tmp_path / "v.csv").write_text("key,latency_us\nadd:in=1x1x1,3\n")
    assert "--device and --backend" in fails("db", "import", "--lut", lut, tmp_path / "v.csv")
    # before: "abc" and "nan" stayed text in the REAL column and, like -5, were sealed as ok
    for latency in ("abc", "nan", "-5", "0"):
        (tmp_path / "n.csv").write_text(f"key,latency_us\nadd:in=1x1x1,{latency}\n")
        out = fails("db", "import", "--lut", lut, tmp_path / "n.csv", "--device", "x",
                    "--backend", "tflite-cpu")
        assert "import: row 'add:in=1x1x1,act=none,dt=float32'" in out and latency in out
    (tmp_path / "n.csv").write_text("key,latency_us,runs\nadd:in=1x1x1,3,two\n")
    assert "runs 'two' is not a number of 0 or more" in fails(
        "db", "import", "--lut", lut, tmp_path / "n.csv", "--device", "x", "--backend",
        "tflite-cpu")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00key")  # was a UnicodeDecodeError
    assert "bin.csv is not a text file" in fails("db", "import", "--lut", lut,
                                                 tmp_path / "bin.csv")
    assert dump(lut) == before
    out = fails("db", "export", "--lut", f"{lut}@1", "-o", tmp_path / "no" / "v.json")
    assert "cannot write" in out and "No such file or directory" in out  # was a bare [Errno 2]
    # a refused import into a new file leaves no empty LUT behind (it left one before)
    fresh = tmp_path / "fresh.db"
    assert "not a netadapt LUT export" in fails("db", "import", "--lut", fresh,
                                                tmp_path / "junk.json")
    assert not list(tmp_path.glob("fresh.db*"))
    # a CSV of latencies alone is a LUT too: it imports, shows and estimates
    other = tmp_path / "other.db"
    ok("db", "import", "--lut", other, tmp_path / "v.csv", "--device", "x", "--backend",
       "tflite-gpu")
    out = flat(ok("db", "show", "--lut", other).output)
    assert "entries: 1 ok" in out and "add:in=1x1x1,act=none,dt=float32 0.003 - -" in out
    with LutStore.open(lut) as store:
        v = store.create_version("fast", "tflite-cpu", {})
        store.add_results(v, [("add:in=1x1x1", Timing.from_samples([1.0]))])
        store.seal(v)
    assert "no key in common" in fails("db", "diff", "--lut", f"{lut}@1", "2")


# -- help -----------------------------------------------------------------------------------


def _commands(cmd, path: tuple[str, ...] = ("netadapt",), parent=None):
    ctx = cmd.context_class(cmd, info_name=path[-1], parent=parent)
    yield path, cmd, ctx
    if hasattr(cmd, "list_commands"):
        for name in cmd.list_commands(ctx):
            yield from _commands(cmd.get_command(ctx, name), (*path, name), ctx)


def test_every_command_and_option_has_help_text() -> None:
    """Like sqlite-utils' docs test: the CLI reference is generated from --help."""
    missing = []
    seen = set()
    for path, cmd, ctx in _commands(typer.main.get_command(app)):
        seen.add(" ".join(path[1:]))
        if not (cmd.help or "").strip():
            missing.append(" ".join(path))
        for p in cmd.get_params(ctx):
            if not (getattr(p, "help", None) or "").strip():
                missing.append(f"{' '.join(path)} {p.opts[0] if p.opts else p.name}")
    assert {"lut", "db", "db list", "db show", "db diff", "db export", "db import",
            "estimate", "measure"} <= seen
    assert not missing, f"no help text: {missing}"


def test_one_vocabulary() -> None:
    """The LUT file is --lut wherever a command takes one (no --db shown), and every command
    that reports a result has --json."""
    no_json = {"db export", "db browse"}  # the export itself; an interactive browser
    for path, cmd, ctx in _commands(typer.main.get_command(app)):
        name = " ".join(path[1:])
        if getattr(cmd, "commands", None) and name != "lut":
            continue  # a group, not a verb (`lut` is both)
        shown = {o for p in cmd.get_params(ctx) if not getattr(p, "hidden", False)
                 for o in getattr(p, "opts", [])}
        assert "--db" not in shown, name
        assert ("--json" in shown) != (name in no_json), name


def test_help_lists_the_choices() -> None:
    """Every closed choice is an enum (one per concept, the library's own) and --help lists
    its values."""
    assert set(FamilyName) == set(FAMILIES)

    def help_of(*args: str) -> str:
        return CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"}).output

    lut_help, estimate_help = help_of("lut"), help_of("estimate")
    assert "<float32|float16|int8>" in lut_help
    assert "<mobilenet_v1|mobilenet_v2|mobilenet_v3_small>,..." in lut_help
    assert "<error|interpolate|measure>" in estimate_help
    assert "<json|csv>" in help_of("db", "export")


def test_help_text_reads_as_written() -> None:
    """A docstring's wrapped lines join in the commands list, and brackets stay text."""
    def help_of(*args: str) -> str:
        return CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"}).output

    assert "fit the in-network model, and store it" in help_of()
    assert "LUT[@VERSION], e.g. luts/host.db@1" in help_of("db", "show")
    assert "NAME_int8.tflite" in flat(help_of("adapt"))


@pytest.mark.parametrize("args", [[], ["lut"], ["db"], ["db", "diff"], ["estimate"],
                                  ["measure"]])
def test_help_runs(args: list[str]) -> None:
    res = invoke(*args, "--help")
    assert res.exit_code == 0 and "Usage" in res.output and "Traceback" not in res.output


def test_every_json_command_prints_json_alone_on_stdout(lut: Path, tmp_path: Path) -> None:
    """Success and failure alike: stdout parses as JSON (messages go to stderr)."""
    missing = tmp_path / "none.db"
    cases = [
        (_estimate(lut), 0), ([*_estimate(lut), "--raw"], 0), (_estimate(missing), 1),
        ([*_estimate(lut), "--missing", "nope"], 2),
        (["measure", "--device", "pixel9", "--model", "mobilenet_v1"], 1),
        (["db", "show", "--lut", lut], 0), (["db", "show", "--lut", missing], 1),
        (["db", "list", "--lut", lut], 0), (["db", "list", "--lut", missing], 1),
        (["db", "verify", "--lut", lut], 0), (["db", "verify", "--lut", missing], 1),
        ([*SWEEP, "--lut", lut, "--no-calibrate"], 0), ([*SWEEP, "--grid", "0"], 2),
        (["db", "diff", "--lut", f"{lut}@1", "1"], 0), (["db", "diff", "--lut", f"{missing}@1", "2"], 1),
        (["lut", "check", "--lut", missing], 1),
        (["calibrate", "--lut", missing], 1),
        (["devices", "--config", "pixel9"], 1),
    ]
    for args, code in cases:
        res = invoke(*args, "--json")
        assert res.exit_code == code, (args, res.output)
        data = json.loads(res.stdout)
        assert ("error" in data) == (code != 0), (args, data)

