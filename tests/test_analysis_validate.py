"""analysis.validate: the validation set, measuring it, storing and reusing it.

Most tests use FakeRunner, whose "latency" is a deterministic function of the model's
size (so layer sums and whole networks agree up to a known in-network factor); one test
measures for real on the host.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from analysis import profile, sampling
from analysis import validate as val
from analysis.families import HELD_OUT, RESNET_STYLE, VGG_STYLE
from bench import sweep_plan, sweep_run, zoo
from bench.missing import ensure_keys
from bench.runners.base import Timing
from bench.tflite_build import build_layer, build_network
from lut_db.errors import SetupMismatch
from lut_db.network import Network
from lut_db.store import LutStore
from lut_db.versions import Version
from tests.fakes import SPACE, FakeRunner, make_lut


@pytest.fixture(scope="module")
def fake_lut_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lut") / "fake.db"
    store, _ = make_lut(path)
    store.close()
    return path


@pytest.fixture
def fake_lut(fake_lut_file: Path, tmp_path: Path) -> tuple[LutStore, Version]:
    """A fresh copy of one FakeRunner LUT (building it takes seconds; copying, nothing)."""
    path = tmp_path / "fake.db"
    shutil.copy(fake_lut_file, path)
    store = LutStore.open(path)
    return store, store.version()


# -- sampling ------------------------------------------------------------------------------


def test_space_of_a_version_and_its_errors():
    s = sampling.Space.of(SPACE)
    assert s.families == ("mobilenet_v1", "mobilenet_v2")
    assert s.resolutions == (32, 48) and s.grid == 64 and s.classes == 10
    with pytest.raises(sampling.ValidationError, match="no sweep space"):
        sampling.Space.of({})


def test_sample_networks_is_seedable_and_covers_every_kind():
    space = sampling.Space.of(SPACE)
    nets = sampling.sample_networks(space, 60, seed=3)
    assert [n.name for n in nets] == [n.name for n in sampling.sample_networks(space, 60, seed=3)]
    assert [n.name for n in nets] != [n.name for n in sampling.sample_networks(space, 60, seed=4)]
    assert len(nets) == 60 and len({n.name for n in nets}) == len(nets)
    kinds = Counter(n.meta["kind"] for n in nets)
    assert set(kinds) == set(sampling.KINDS)
    assert kinds["multiplier"] == 8  # every multiplier of both families
    held = [n for n in nets if n.meta["held_out"]]
    assert held and {n.meta["family"] for n in held} == set(HELD_OUT)
    assert all(n.meta["kind"] == "held_out" for n in held)
    assert {n.input_shape[0] for n in nets if n.meta["kind"] == "resolution"} == {48}


def test_networks_on_the_grid_use_only_lut_keys_and_off_grid_ones_do_not(fake_lut):
    store, version = fake_lut
    table = store.table(version)
    nets = sampling.sample_networks(sampling.Space.of(version.space), 40, seed=1)
    for net in nets:
        missing = [k for k in net.keys if k not in table]
        if net.meta["kind"] in ("multiplier", "random", "netadapt", "resolution"):
            assert not missing, net.name
        else:
            assert missing, net.name  # off-grid widths and held-out shapes are not in it


def test_netadapt_steps_narrow_one_slot():
    space = sampling.Space.of(SPACE)
    for net in sampling.sample_networks(space, 60, seed=0):
        if net.meta["kind"] == "netadapt":
            assert net.meta["note"].startswith("narrowed ")


def test_names_are_content_hashes():
    fam = zoo.family("mobilenet_v1")
    a = sampling.make_network(fam, "random", fam.multiplier(0.5), 32, 10)
    b = sampling.make_network(fam, "random", fam.multiplier(0.5), 32, 10)
    c = sampling.make_network(fam, "random", fam.multiplier(0.75), 32, 10)
    assert a.name == b.name != c.name


def test_held_out_families_use_only_swept_op_kinds():
    swept = {s.op for f in ("mobilenet_v1", "mobilenet_v2")
             for s in zoo.shape_space(zoo.family(f), 32, 64, 10)}
    for fam in (RESNET_STYLE, VGG_STYLE):
        net = fam.network(width_mult=0.5, resolution=32, classes=10)
        assert {s.op for s in net.specs} <= swept
        assert build_network(net)  # and they build


def test_prefix_networks_build_and_output_every_unread_node():
    net = zoo.family("mobilenet_v2").network(width_mult=0.5, resolution=32, classes=10)
    for k in (1, 4, 5, len(net.nodes)):
        sub = profile.prefix(net, k)
        assert len(sub.nodes) == k
        build_network(sub)
        read = {src for n in sub.nodes for src in n.inputs}
        assert set(sub.outputs) == {n.name for n in sub.nodes if n.name not in read}
    assert profile.prefix(net, len(net.nodes)).outputs == net.outputs


# -- measuring and storing -----------------------------------------------------------------------


def test_validate_stores_rows_and_a_rerun_reuses_them(fake_lut):
    store, version = fake_lut
    runner = FakeRunner()
    first = val.validate(store, version, runner, n=24, seed=0, passes=1, drift_keys=20,
                         repeats=2)
    assert first.measured == len(first.rows) >= 20 and first.reused == 0
    rows = {r["name"]: r for r in store.validations(version)}
    assert len(rows) == first.measured
    row = next(iter(rows.values()))
    timing = json.loads(row["timing"])
    assert len(timing["passes_us"]) == 2 and timing["drift"]["lut_keys"] > 0
    assert len(timing["repeats_us"]) == 2  # at separate moments: the ground truth
    assert row["measured_us"] > 0 and row["estimated_us"] > 0
    Network.from_json_dict(json.loads(row["network"]))  # the network is stored whole
    # Off-grid and held-out keys were measured on demand into a derived, sealed version.
    derived = [v for v in store.versions() if v.parent == version.id]
    assert len(derived) == 1 and derived[0].status == "sealed"
    assert first.extra_label == derived[0].label
    count = runner.models
    again = val.validate(store, version, runner, n=24, seed=0, passes=1, drift_keys=20,
                         repeats=2)
    assert again.measured == 0 and again.reused == len(again.rows)
    assert runner.models == count  # nothing measured again
    assert [r["name"] for r in again.rows] == [r["name"] for r in first.rows]


def test_validate_without_a_device(fake_lut):
    store, version = fake_lut
    with pytest.raises(val.NoDevice, match="0 of the .* measured and no device"):
        val.validate(store, version, None, n=12)
    val.validate(store, version, FakeRunner(), n=12, passes=1, profile=False, repeats=1)
    done = val.validate(store, version, None, n=12, profile=False)  # all stored: fine
    assert done.measured == 0


def test_no_sweep_stops_before_measuring_anything(fake_lut):
    """sweep=False: the keys the set lacks are counted and named with the command that
    measures them; nothing is measured and no version is made."""
    store, version = fake_lut
    runner = FakeRunner()
    nets = sampling.sample_networks(sampling.Space.of(version.space), 12, 0)
    table = store.table(version)
    lacking = {k for net in nets for k in net.keys if k not in table}
    assert lacking  # off-grid widths and held-out families
    with pytest.raises(val.KeysNotSwept) as e:
        val.validate(store, version, runner, n=12, passes=1, repeats=1, sweep=False)
    assert f"fake@1 lacks {len(lacking)} key(s)" in str(e.value)
    assert str(e.value).endswith(f"netadapt report --lut {store.path}@1 --device fake "
                                 "--backend tflite-cpu --networks 12")
    assert runner.models == 0 and [v.id for v in store.versions()] == [version.id]
    # Keys a version derived from it holds count as the LUT's: the networks are measured.
    derived = ensure_keys(store, version, sorted(lacking), runner=runner)
    res = val.validate(store, version, runner, n=12, passes=1, repeats=1, profile=False,
                       sweep=False)
    assert res.measured == len(res.rows) == len(nets) and res.extra_label == derived.label
    assert [v.id for v in store.versions()] == [version.id, derived.id]


def test_validate_refuses_another_setup(fake_lut):
    store, version = fake_lut
    with pytest.raises(SetupMismatch, match="another setup"):
        val.validate(store, version, FakeRunner(device="other"), n=12)


def test_profile_is_stored_with_the_chosen_network(fake_lut):
    store, version = fake_lut
    res = val.validate(store, version, FakeRunner(), n=12, passes=1, repeats=1)
    profiled = [r for r in res.rows if "profile" in json.loads(r["timing"])]
    assert len(profiled) == 1
    prof = json.loads(profiled[0]["timing"])["profile"]
    assert prof["method"].startswith("prefix differencing")
    net = Network.from_json_dict(json.loads(profiled[0]["network"]))
    assert [x["node"] for x in prof["layers"]] == [n.name for n in net.nodes]
    # FakeRunner's prefixes grow by each layer's bytes x 1.1: differences are positive.
    assert sum(x["profile_us"] for x in prof["layers"]) > 0


def test_a_derived_version_keeps_its_parents_validations(fake_lut):
    store, version = fake_lut
    val.validate(store, version, FakeRunner(), n=12, passes=1, profile=False, repeats=1)
    derived = next(v for v in store.versions() if v.parent == version.id)
    res = val.validate(store, derived, None, n=12, profile=False)
    assert res.reused == len(res.rows) and res.measured == 0


@pytest.mark.sweep
def test_networks_are_timed_one_pass_per_call(fast_runner):
    """bench.timing spreads networks over its own passes; the runner adds none, and
    closing the one-pass view leaves the CPUs alone."""
    before = os.sched_getaffinity(0)
    assert fast_runner.for_networks() is fast_runner  # already one pass
    fast_runner.passes = 4
    single = fast_runner.for_networks()
    assert single.passes == 1 and fast_runner.passes == 4
    net = zoo.family("mobilenet_v1").network(width_mult=0.25, resolution=32, classes=10)
    t = single.measure_one(build_network(net))
    assert isinstance(t, Timing) and t.runs >= 3 and "preempted" in t.extra
    single.close()
    assert os.sched_getaffinity(0) == before


@pytest.mark.sweep
def test_timing_interleaves_passes_and_keeps_each(fast_runner):
    from bench.timing import time_networks

    fam = zoo.family("mobilenet_v1")
    nets = {f"w{m}": fam.network(width_mult=m, resolution=32, classes=10) for m in (0.25, 0.5)}
    timed = time_networks(fast_runner, nets, passes=3)
    assert {n: len(m.passes) for n, m in timed.items()} == {"w0.25": 3, "w0.5": 3}
    s = timed["w0.5"].to_dict()
    assert s["latency_us"] > timed["w0.25"].latency_us > 0
    assert len(s["passes_at_s"]) == 3 and s["runs"] >= 3
    assert s["machine_state"]["where"] == "host"  # the host runner reads this machine


@pytest.mark.sweep
def test_validate_for_real_on_the_host(tmp_path, fast_runner):
    """The whole loop with real LiteRT timings on a tiny space."""
    space = {"sweeps": [{"families": ["mobilenet_v1"], "resolutions": [32], "grid": 256,
                         "classes": 10}]}
    store = LutStore.open(tmp_path / "host.db", create=True)
    specs = zoo.shape_space(zoo.MOBILENET_V1, 32, 256, 10)
    fp = fast_runner.fingerprint()
    p = sweep_plan.plan(store, "host", fast_runner.backend, fp, specs)
    v = sweep_plan.start_version(store, p, "host", fast_runner.backend, fp, space)
    v = sweep_run.run(store, v, p.missing, [fast_runner], build_layer).version
    res = val.validate(store, v, fast_runner, n=10, passes=2, drift_keys=10, repeats=1)
    assert res.measured == len(res.rows)
    for r in res.rows:
        # same order of magnitude: same device. Not tighter: at 32 px weight-heavy networks
        # run 2-3x their layers' sum on this VM (benchmarks/README.md, layer_gap), more under load spikes
        assert 0.2 < r["measured_us"] / r["estimated_us"] < 5
