"""Shared fixtures: temp LUT files, a fast host runner, a temp device-config directory."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("NETADAPT_CONFIGS", str(REPO / "device_configs"))
# rich wraps the CLI's output at 80 columns off a terminal: a long temporary path (a pytest-xdist
# worker's, another user's) would break inside a word the tests look for.
os.environ["COLUMNS"] = "250"

try:  # property tests: no example database left in the working tree, no per-example deadline
    from hypothesis import settings

    settings.register_profile("netadapt", database=None, deadline=None)
    settings.load_profile("netadapt")
except ImportError:
    pass

# The loopback phones (a real adb server, loopback devices, farms of them): fixtures that
# every test module needing a phone finds by name.
from loopback.adb.fixtures import (  # noqa: F401
    adb_path,
    adb_server,
    adb_server_factory,
    loopback_adb_device,
    loopback_device,
    loopback_device_factory,
)
from loopback.farm import farm, farm_factory, litert_zygote  # noqa: F401
from tests.fakes import FAST_TOML

# What each marker stands for, so `make test-fast` (which leaves the marked tests out) is
# what it says: a test that uses one of these fixtures carries the marker, or the run stops.
MARKED_FIXTURES = {
    "phones": {"farm", "farm_factory", "adb_server", "adb_server_factory", "loopback_device",
               "loopback_device_factory", "loopback_adb_device", "litert_zygote"},
    "sweep": {"real_lut", "fast_runner", "killed_and_resumed"},  # the last: sweeps in processes
    "browser": {"browser"},
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:  # a sweep that trains checks what timing gives; one that does not, its value
        if item.get_closest_marker("sweep") and not any(
                item.get_closest_marker(m) for m in ("train", "any_load")):
            item.add_marker(pytest.mark.alone)
    unmarked = sorted(f"{item.nodeid} (uses {', '.join(sorted(used))}: mark it {marker})"
                      for item in items
                      for marker, fixtures in MARKED_FIXTURES.items()
                      if (used := fixtures & set(getattr(item, "fixturenames", ())))
                      and item.get_closest_marker(marker) is None)
    if unmarked:
        raise pytest.UsageError("tests without their marker:\n  " + "\n  ".join(unmarked))
    items.sort(key=heavy_modules_first(items))


HEAVY = ("train", "sweep", "phones", "browser")


def heavy_modules_first(items: list[pytest.Item]) -> Callable[[pytest.Item], int]:
    """Sort key: modules by their count of training, sweeping, phone and browser tests,
    most first (a stable sort keeps each module's own order). make test hands whole
    modules to two workers in this order (--no-loadscope-reorder), so the long ones do
    not start last and leave one worker idle at the end."""
    weight: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        weight[module] = weight.get(module, 0) + sum(
            item.get_closest_marker(m) is not None for m in HEAVY)
    return lambda item: -weight[item.nodeid.split("::")[0]]


@contextmanager
def _work_needs_its_marker(item: pytest.Item) -> Iterator[None]:
    """Training (a backward pass) and timing on this host (HostRunner) fail in a test that
    does not carry the train or sweep marker, in its fixtures' set-up as in its body: the
    markers cannot go stale."""
    def refuse(what: str, marker: str):  # type: ignore[no-untyped-def]
        def refused(*_a, **_k):  # type: ignore[no-untyped-def]
            raise AssertionError(f"{item.nodeid} {what}: mark it @pytest.mark.{marker}")
        return refused

    with pytest.MonkeyPatch.context() as mp:
        if item.get_closest_marker("train") is None:
            import torch

            mp.setattr(torch.Tensor, "backward", refuse("trains", "train"))
        if item.get_closest_marker("sweep") is None:
            from bench.runners.host import HostRunner

            mp.setattr(HostRunner, "measure", refuse("times layers on this host", "sweep"))
            mp.setattr(HostRunner, "measure_one", refuse("times a model on this host", "sweep"))
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):  # type: ignore[no-untyped-def]
    with _work_needs_its_marker(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):  # type: ignore[no-untyped-def]
    with _work_needs_its_marker(item):
        return (yield)


@pytest.fixture
def lut_path(tmp_path: Path) -> Path:
    return tmp_path / "luts" / "host.db"


@pytest.fixture
def fast_runner():
    """A host runner with few runs: for tests that need real timings, not precise ones."""
    from bench.runners.host import HostRunner

    with HostRunner(warmup=1, runs=3, min_time_ms=0.0) as runner:
        yield runner


@pytest.fixture
def configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A device-config directory (host.toml and fast.toml) as NETADAPT_CONFIGS."""
    d = tmp_path / "configs"
    d.mkdir()
    (d / "host.toml").write_text((REPO / "device_configs" / "host.toml").read_text())
    (d / "fast.toml").write_text(FAST_TOML)
    monkeypatch.setenv("NETADAPT_CONFIGS", str(d))
    return d


HOLD_LOCK = """\
import sys
from lut_db.store import LutStore
store = LutStore.open(sys.argv[1])
store.lock()
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def lock_holder():
    """Start a second process that holds a LUT's writer lock until the test ends.

    flock belongs to an open file description, so only another process shows that the
    lock keeps other writers out the way a second sweep would meet it."""
    import subprocess
    import sys

    procs: list[subprocess.Popen] = []

    def hold(path: Path) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], cwd=REPO,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(p)
        assert p.stdout.readline().strip() == "locked"
        return p

    yield hold
    for p in procs:
        p.stdin.close()
        p.wait(timeout=10)


@pytest.fixture(scope="session")
def real_lut(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, int]:
    """(table, LUT file, resolution): MobileNetV1's space measured for real on this host."""
    from tests.fakes import measure_real_lut

    return measure_real_lut(tmp_path_factory.mktemp("lut") / "fast.db")


@pytest.fixture(scope="session")
def fixed_lut(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, int]:
    """(table, LUT file, resolution): ``real_lut``'s keys at fixed latencies (their MACs), for
    tests whose outcome would otherwise follow what this machine measured at that moment."""
    from tests.fakes import ADAPT_SPACE, RES, FakeRunner, macs_us, make_lut

    store, version = make_lut(tmp_path_factory.mktemp("lut") / "fixed.db",
                              FakeRunner(us=macs_us, device="fixed"), ADAPT_SPACE)
    table, path = store.table(version), store.path
    store.close()
    return table, path, RES


@pytest.fixture(scope="session")
def validated_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A FakeRunner LUT, calibrated as `netadapt lut` leaves it, with 30 validations stored
    (no per-layer profile); whole networks run 1.3 x their layers."""
    from analysis import calibrate as cb
    from analysis import validate as val
    from tests.fakes import FakeRunner, make_lut

    path = tmp_path_factory.mktemp("validated") / "fake.db"
    store, version = make_lut(path)
    cb.calibrate(store, version, FakeRunner(in_network=1.3), n=16, passes=1)
    val.validate(store, version, FakeRunner(in_network=1.3), n=30, passes=1, profile=False,
                 drift_keys=30, repeats=2)  # two rounds, as before repeats: kept fast
    store.close()
    return path


@pytest.fixture
def validated(validated_file: Path, tmp_path: Path):
    """A private copy of ``validated_file``: (store, version 1)."""
    import shutil

    from lut_db.store import LutStore

    path = tmp_path / "fake.db"
    shutil.copy(validated_file, path)
    store = LutStore.open(path)
    return store, store.version(1)


@pytest.fixture(scope="session")
def report_folder(validated_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of a private copy of ``validated_file``, written once: tests only read it."""
    import shutil

    from analysis.report import write
    from analysis.report_build import build
    from lut_db.store import LutStore

    tmp = tmp_path_factory.mktemp("report")
    with LutStore.open(shutil.copy(validated_file, tmp / "fake.db")) as store:
        return write(build(store, store.version(1), n_boot=200), tmp / "reports")

