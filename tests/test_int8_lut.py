"""int8 LUTs: sweeps at dt=int8, their versions, validation and calibration on them, and
the CLI's --dtype options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from analysis import calibrate as cb
from analysis.report_build import build
from analysis.sampling import Space, sample_networks
from analysis.validate import validate
from bench import sweep, sweep_plan
from bench.runners.base import RunnerError
from bench.sweep_space import SweepSpace
from bench.tflite_build import build_network
from bench.zoo import MOBILENET_V1
from lut_db.store import LutStore
from netadapt_cli.main import app
from tests.fakes import FakeRunner, make_lut

TINY = {"families": ("mobilenet_v1",), "resolutions": (32,), "grid": 64, "classes": 10}
INT8_SPACE = {"sweeps": [SweepSpace(**TINY, dtype="int8").descriptor()]}


def test_an_int8_space_is_the_float_space_at_int8() -> None:
    float_keys = {s.key for s in SweepSpace(**TINY).specs()}
    int8 = SweepSpace(**TINY, dtype="int8")
    assert {s.key for s in int8.specs()} == {k.replace("dt=float32", "dt=int8")
                                             for k in float_keys}
    assert int8.descriptor()["dtype"] == "int8" and int8.describe().endswith(", int8")
    assert "float32" not in SweepSpace(**TINY).describe()  # output as before
    assert SweepSpace(**TINY).descriptor()["dtype"] == "float32"
    with pytest.raises(RunnerError, match="dtype 'int4'"):
        SweepSpace(**TINY, dtype="int4").specs()


def test_an_int8_sweep_on_a_float_file_derives_a_version_holding_both(tmp_path: Path) -> None:
    db, runner = tmp_path / "lut.db", FakeRunner()
    plans: list[sweep_plan.Plan] = []
    first = sweep.build_lut(db, "fake", [runner], SweepSpace(**TINY), on_plan=plans.append)
    second = sweep.build_lut(db, "fake", [runner], SweepSpace(**TINY, dtype="int8"),
                             on_plan=plans.append)
    again = sweep.build_lut(db, "fake", [runner], SweepSpace(**TINY, dtype="int8"),
                            on_plan=plans.append)
    assert [p.action for p in plans] == ["new", "derive", "up-to-date"]
    assert second.version.parent == first.version.id and again.version.id == second.version.id
    store = LutStore.open(db)
    keys = store.keys(second.version)
    n = len(SweepSpace(**TINY).specs())
    assert sum("dt=int8" in k for k in keys) == sum("dt=float32" in k for k in keys) == n
    sweeps = store.version(second.version.id).space["sweeps"]
    assert [s["dtype"] for s in sweeps] == ["float32", "int8"]
    assert Space.of(store.version(second.version.id).space).dtypes == ("float32", "int8")


def test_a_float_sweep_again_on_an_old_descriptor_adds_no_sweep() -> None:
    old = {"sweeps": [{"families": ["mobilenet_v1"], "resolutions": [32], "grid": 64,
                       "classes": 10}]}
    new = {"sweeps": [SweepSpace(**TINY).descriptor()]}
    assert sweep_plan.merge_space(old, new) == old


def test_networks_sampled_from_an_int8_space_are_int8() -> None:
    nets = sample_networks(Space.of(INT8_SPACE), n=12)
    assert nets and all(s.dtype == "int8" for net in nets for s in net.specs)
    assert all(net.name.endswith("-int8") and net.meta["dtype"] == "int8" for net in nets)
    build_network(nets[0])  # an int8 network builds as one int8 model


def test_a_space_of_both_dtypes_samples_both() -> None:
    both = {"sweeps": [{**INT8_SPACE["sweeps"][0], "dtype": "float32"}, INT8_SPACE["sweeps"][0]]}
    nets = sample_networks(Space.of(both), n=12)
    dtypes = [{s.dtype for s in net.specs} for net in nets]
    assert all(len(d) == 1 for d in dtypes)
    assert {"float32"} in dtypes and {"int8"} in dtypes
    assert len({net.name for net in nets}) == len(nets)


def test_calibration_set_of_an_int8_space_is_int8() -> None:
    nets = cb.calibration_set(Space.of(INT8_SPACE), n=16)
    assert len(nets) == 16 and all(s.dtype == "int8" for net in nets for s in net.specs)
    assert any(net.input_shape[0] != 32 for net in nets)  # the other-resolution quarter too


def test_an_int8_lut_calibrates_and_validates(tmp_path: Path) -> None:
    store, version = make_lut(tmp_path / "int8.db", space=INT8_SPACE)
    cal = cb.calibrate(store, version, FakeRunner(), n=16, passes=1)
    assert all(name.endswith("-int8") for name in cal.networks)
    validate(store, version, FakeRunner(), n=16, passes=1, profile=False, drift_keys=10,
             repeats=1)
    report = build(store, version, n_boot=20)
    assert report.metrics["predictors"]["calibrated"]["in_space"]["n"] > 0


@pytest.mark.sweep
def test_estimate_and_measure_take_a_dtype_with_a_model(tmp_path: Path, configs: Path) -> None:
    """A real int8 sweep through the CLI (the fast host device), then the zoo network at
    int8 estimated on it and measured."""
    db = tmp_path / "int8.db"
    cli = CliRunner()
    res = cli.invoke(app, ["lut", "--device", "fast", "--space", "mobilenet_v1", "--grid", "64",
                           "--classes", "10", "--resolution", "32", "--dtype", "int8",
                           "--no-calibrate", "--lut", str(db)])
    assert res.exit_code == 0, res.output
    assert "int8" in res.output
    model = ["--model", "mobilenet_v1", "--width", "0.5", "--resolution", "32", "--classes",
             "10"]
    res = cli.invoke(app, ["estimate", "--lut", str(db), *model, "--dtype", "int8", "--raw",
                           "--json"])
    assert res.exit_code == 0, res.output
    est = json.loads(res.stdout)
    assert all(x["key"].endswith("dt=int8") for x in est["layers"]) and est["total_ms"] > 0
    # the float network has no keys in an int8 LUT
    res = cli.invoke(app, ["estimate", "--lut", str(db), *model, "--raw", "--no-sweep"])
    assert res.exit_code != 0 and "dt=float32" in res.output
    res = cli.invoke(app, ["measure", "--device", "fast", *model, "--dtype", "int8",
                           "--passes", "1", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["latency_ms"] > 0


def test_dtype_goes_with_model_only(tmp_path: Path) -> None:
    net = tmp_path / "net.json"
    net.write_text(MOBILENET_V1.network(width_mult=0.25, resolution=32, classes=10).to_json())
    res = CliRunner().invoke(app, ["estimate", "--lut", str(tmp_path / "x.db"), "--network",
                                   str(net), "--dtype", "int8"])
    assert res.exit_code != 0 and "--dtype goes with --model" in res.output
    res = CliRunner().invoke(app, ["lut", "--dtype", "int4", "--lut", str(tmp_path / "x.db")])
    assert res.exit_code != 0 and "int4" in res.output
