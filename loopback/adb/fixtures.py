"""pytest fixtures of the loopback phones: the adb binary, private adb servers and
loopback devices (each started for one test and stopped after it), and one device
already `adb connect`ed. ``tests/conftest.py`` imports them so every test module finds
them by name."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol, TypeVar

import adbutils
import pytest

from loopback.adb.device import LoopbackDevice
from loopback.adb.server import AdbServer, find_adb


class _Startable(Protocol):
    def start(self) -> _Startable: ...

    def stop(self) -> None: ...


T = TypeVar("T", bound=_Startable)


def _started_until_teardown(new: Callable[..., T]) -> Iterator[Callable[..., T]]:
    """A fixture's body: yield a maker of started ``new(...)``; stop them all after, newest
    first."""
    made: list[T] = []

    def make(*args: object, **kwargs: object) -> T:
        thing = new(*args, **kwargs)
        made.append(thing)
        thing.start()
        return thing

    yield make
    for thing in reversed(made):
        thing.stop()


@pytest.fixture(scope="session")
def adb_path() -> str:
    """Path of the adb binary; skips the test when there is none."""
    found = find_adb()
    if found is None:
        pytest.skip("adb binary not available")
    return found


@pytest.fixture
def adb_server_factory(
    adb_path: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., AdbServer]]:
    """Call it to start extra private adb servers; all are stopped after the test."""

    def new(**kwargs: object) -> AdbServer:
        home = tmp_path_factory.mktemp("adb-home")
        return AdbServer(home=home, adb=adb_path, **kwargs)  # type: ignore[arg-type]

    yield from _started_until_teardown(new)


@pytest.fixture
def adb_server(adb_server_factory: Callable[..., AdbServer]) -> AdbServer:
    """A started private adb server."""
    return adb_server_factory()


@pytest.fixture
def loopback_device_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., LoopbackDevice]]:
    """Call it (LoopbackDevice arguments minus root) to start devices; all stopped after."""

    def new(
        props: Mapping[str, str] | None = None, state: str = "device", **kwargs: object
    ) -> LoopbackDevice:
        root = tmp_path_factory.mktemp("device-root")
        return LoopbackDevice(root, props, state, **kwargs)  # type: ignore[arg-type]

    yield from _started_until_teardown(new)


@pytest.fixture
def loopback_device(
    loopback_device_factory: Callable[..., LoopbackDevice], adb_server: AdbServer
) -> LoopbackDevice:
    """A started LoopbackDevice already `adb connect`ed to `adb_server`."""
    device = loopback_device_factory()
    adb_server.connect(device.serial)
    return device


@pytest.fixture
def loopback_adb_device(
    loopback_device: LoopbackDevice, adb_server: AdbServer
) -> adbutils.AdbDevice:
    """adbutils handle on `loopback_device` through `adb_server`."""
    return adb_server.device(loopback_device.serial)
