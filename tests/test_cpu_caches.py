"""The CPU caches a device reports (sysfs), kept in the fingerprint: read on this machine
and over adb, and a LUT from before the field resumes and derives as it did."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench import sweep
from bench.cpu_caches import cache_field, listing_snippet, parse_listing, read_host, size_kb
from bench.devices import make_runners
from bench.runners.base import RunnerError
from loopback.farm import Farm
from loopback.sysfs import write_cpu_caches
from lut_db.errors import SetupMismatch
from lut_db.fingerprint import same_setup, setup_changes
from lut_db.spec import LayerSpec
from lut_db.store import LutStore
from tests.fakes import FakeRunner, macs_us

# a big.LITTLE phone: two little cores sharing a 512 KB L2, a big one with its own 1 MB,
# a 4 MB L3 for all
PHONE = {0: [(1, "Data", "32K"), (1, "Instruction", "32K"), (2, "Unified", "512K"),
             (3, "Unified", "4096K")],
         1: [(1, "Data", "32K"), (2, "Unified", "512K"), (3, "Unified", "4M")],
         2: [(1, "Data", "64K"), (1, "Instruction", "64K"), (2, "Unified", "1024K"),
             (3, "Unified", "4096K")]}
SPECS = [LayerSpec("conv2d", 8, 8, c, o) for c in (8, 16) for o in (8, 16, 32)]
MORE = [LayerSpec("conv2d", 8, 8, 40, o) for o in (8, 16)]
OLD = {"device": "fake", "runs": 3}  # a fingerprint written before caches were recorded
NEW = {**OLD, "cache_kb": {"l1d": 48, "l2": 2048}}


def test_sizes_as_the_kernel_writes_them() -> None:
    assert [size_kb(t) for t in ("2048K", "4M", "1G", "512", "32k", "n/a", "")] == [
        2048, 4096, 1024 * 1024, 512, 32, None, None]


def test_a_sysfs_tree_read_here_and_through_the_shell_snippet(tmp_path: Path) -> None:
    root = write_cpu_caches(tmp_path / "sys", PHONE)
    here = read_host(root)
    shell = parse_listing(subprocess.run(["sh", "-c", listing_snippet(str(root))],
                                         capture_output=True, text=True, check=True).stdout)
    assert sorted(here, key=repr) == sorted(shell, key=repr) and len(here) == 11
    # the measuring core's data caches; instruction caches left out
    assert cache_field(here, [2]) == {"cache_kb": {"l1d": 64, "l2": 1024, "l3": 4096}}
    assert cache_field(here, [5, 0]) == {"cache_kb": {"l1d": 32, "l2": 512, "l3": 4096}}
    assert cache_field(here, [7]) == {} and cache_field([], [0]) == {}
    assert read_host(tmp_path / "nothing") == []


def test_unreadable_lines_are_skipped() -> None:
    text = "0 2 Unified 2048K\n1 2 Unified \ngarbage\n0 3 Unified 32768K\n"
    assert [(c.cpu, c.level, c.size_kb) for c in parse_listing(text)] == [
        (0, 2, 2048), (0, 3, 32768)]


@pytest.mark.phones
def test_the_loopback_phone_reports_its_caches(farm: Farm, tmp_path: Path) -> None:
    farm.write(cpus=[0], adb={"sysfs": str(write_cpu_caches(tmp_path / "sys", PHONE))})
    (r,) = make_runners(farm.config())
    assert r.fingerprint()["cache_kb"] == {"l1d": 32, "l2": 512, "l3": 4096}
    r.close()
    farm.write(cpus=[0], adb={"sysfs": str(tmp_path / "bare")})  # a kernel that lists none
    (r,) = make_runners(farm.config())
    assert "cache_kb" not in r.fingerprint()
    r.close()


def test_a_caches_field_absent_on_one_side_is_the_same_setup() -> None:
    assert same_setup(OLD, NEW) and same_setup(NEW, OLD)
    assert setup_changes(NEW, {**NEW, "cache_kb": {"l2": 1024}}) == ["cache_kb"]
    assert setup_changes(OLD, {**NEW, "runs": 5}) == ["runs"]


def _sweep(store: LutStore, specs, fp, die_at: int | None = None) -> sweep.SweepResult:
    runner = FakeRunner(fp=fp, us=macs_us, die_at=die_at)
    p = sweep.plan(store, "fake", "tflite-cpu", fp, specs)
    v = sweep.start_version(store, p, "fake", "tflite-cpu", fp, {"sweeps": [{"n": len(specs)}]})
    return sweep.run(store, v, p.missing, [runner], lambda s: s.key.encode(), 2)


def test_a_lut_from_before_the_caches_field_resumes_and_derives() -> None:
    store = LutStore.memory()
    with pytest.raises(RunnerError):
        _sweep(store, SPECS, OLD, die_at=2)
    (old,) = store.versions()
    assert old.status == "building" and "cache_kb" not in old.fingerprint

    assert sweep.plan(store, "fake", "tflite-cpu", NEW, SPECS).action == "resume"
    res = _sweep(store, SPECS, NEW)
    assert res.version.id == old.id and res.version.status == "sealed"
    assert res.version.fingerprint == OLD  # resumed as it was written
    store.version(old.id).require_same_setup(NEW, "never raised")

    # a sweep of more keys derives from it, and the derived version's keys join its lineage
    assert sweep.plan(store, "fake", "tflite-cpu", NEW, SPECS + MORE).action == "derive"
    derived = _sweep(store, SPECS + MORE, NEW).version
    assert derived.parent == old.id and derived.fingerprint == NEW
    assert store.root(derived).id == old.id
    assert set(store.lineage(derived)[0]) == {s.key for s in SPECS}
    assert sweep.plan(store, "fake", "tflite-cpu", NEW, SPECS + MORE).action == "up-to-date"



def test_other_caches_are_another_setup() -> None:
    store = LutStore.memory()
    version = _sweep(store, SPECS, NEW).version
    other = {**OLD, "cache_kb": {"l1d": 48, "l2": 1024}}
    assert sweep.plan(store, "fake", "tflite-cpu", other, SPECS).action == "new"
    with pytest.raises(SetupMismatch, match="differs in: cache_kb"):
        version.require_same_setup(other, "another device")
