"""LUT keys a network needs and a version lacks: one policy, for every caller.

``error`` names the keys and the command that measures them; ``interpolate`` fills them
in over channel counts from measured neighbours; ``measure`` measures them on the
device now, into a sealed version derived from the selected one (or reuses such a
version measured earlier). `netadapt estimate`, the adapter and validation all go
through ``resolve``. A whole shape space a version lacks (a model at a new resolution)
is swept by ``ensure_space``, the way `netadapt lut` sweeps it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from bench.devices import ConfigError, load_config, open_runners
from bench.runners.base import Runner, RunnerError
from bench.sweep import build_lut, farm_fingerprint, measure_missing
from bench.sweep_plan import Plan
from bench.sweep_space import SweepSpace
from lut_db.errors import LutError, UserError
from lut_db.estimate import Estimate, MissingKeys, MissingPolicy, estimate, interpolate
from lut_db.network import Network
from lut_db.progress import Steps, silent
from lut_db.store import LutStore
from lut_db.versions import Version

Log = Callable[[str], None]


@dataclass
class Resolved:
    """The entries to estimate with: the version's, plus the missing keys resolved."""

    version: Version  # the version the entries come from (a derived one after measuring)
    label: str  # file@id of that version, for messages and results
    table: dict[str, float]
    interpolated: list[str] = field(default_factory=list)


def resolve(store: LutStore, version: Version, keys: Iterable[str],
            policy: str = MissingPolicy.ERROR, *, device: str | None = None,
            runner: Runner | None = None, log: Log | None = None,
            progress: Steps = silent) -> Resolved:
    """Entries for ``keys`` from ``version`` under ``policy`` (see the module)."""
    if policy not in tuple(MissingPolicy):
        raise LutError(f"unknown missing-key policy {policy!r}; use one of "
                       f"{', '.join(MissingPolicy)}")
    table = store.table(version)
    label = f"{store.path}@{version.id}"
    absent = [k for k in dict.fromkeys(keys) if k not in table]
    if not absent:
        return Resolved(version, label, table)
    if policy == MissingPolicy.ERROR:
        raise MissingKeys(absent, label)
    if policy == MissingPolicy.INTERPOLATE:
        if log:
            log(f"{label} lacks {len(absent)} key(s): interpolating over channel counts")
        return Resolved(version, label, {**table, **interpolate(absent, table)}, absent)
    derived = ensure_keys(store, version, absent, device=device, runner=runner, log=log,
                          progress=progress)
    return Resolved(derived, f"{store.path}@{derived.id}", store.table(derived))


def ensure_keys(store: LutStore, version: Version, keys: list[str], *,
                device: str | None = None, runner: Runner | None = None,
                log: Log | None = None, progress: Steps = silent) -> Version:
    """A sealed version derived from ``version`` that holds ``keys``: an earlier one if it
    exists, else measured now with ``runner`` or on ``device`` (default: the version's)."""
    from bench.tflite_build import build_layer

    say = log or (lambda _m: None)
    for v in reversed(store.versions()):
        if v.parent == version.id and v.status == "sealed" and set(keys) <= store.keys(v):
            say(f"using {v.label}: derived from {version.label} with the missing keys")
            return v
    held = store.locked  # a caller's lock stays with the caller
    store.lock()
    try:
        if runner is not None:
            return measure_missing(store, version, keys, [runner], build_layer,
                                   _counted(progress, keys))
        on = device or version.device
        with attached(on, version.backend, f"{store.path}@{version.id} lacks {len(keys)} "
                      "key(s)", "run the same command where it is attached (they are "
                      "measured into a version derived from it)") as runners:
            say(f"measuring {len(keys)} missing key(s) on {on} into a new version derived "
                f"from {version.label}")
            return measure_missing(store, version, keys, runners, build_layer,
                                   _counted(progress, keys))
    finally:
        if not held:
            store.unlock()


def _counted(progress: Steps, keys: list[str]) -> Callable[[int, str], None]:
    step, done = f"measuring {len(keys)} missing key(s)", [0]

    def measured(n: int, _serial: str) -> None:
        done[0] += n
        progress(step, done[0], len(keys))

    return measured


class DeviceAbsent(UserError):
    """Keys must be measured on a device that is not attached here."""

    def __init__(self, lacks: str, device: str, why: str, todo: str) -> None:
        self.lacks, self.device, self.why = lacks, device, why
        super().__init__(f"{lacks}, and {device} {why}; {todo}")

    def instead(self, todo: str) -> DeviceAbsent:
        """The same, with another command to run where the device is."""
        return DeviceAbsent(self.lacks, self.device, self.why, todo)


@contextlib.contextmanager
def attached(device: str, backend: str, lacks: str, todo: str) -> Iterator[list[Runner]]:
    """The runners of ``device``; not attached: DeviceAbsent saying what ``lacks`` and, as
    ``todo``, the command to run where the device is. Errors while measuring pass through
    as they are (what was measured is stored, and the same command resumes)."""
    with contextlib.ExitStack() as stack:
        try:
            runners = stack.enter_context(open_runners(device, backend))
        except (RunnerError, ConfigError) as e:
            raise DeviceAbsent(lacks, f"{device} ({backend})", f"cannot measure here ({e})",
                               todo) from None
        if not runners:
            raise DeviceAbsent(lacks, device, "is not attached", todo)
        yield runners


def ensure_space(store: LutStore, version: Version, space: SweepSpace, *,
                 runners: Sequence[Runner] | None = None, log: Log | None = None,
                 progress: Steps = silent) -> Version:
    """A sealed version holding every key of ``space``: ``version`` when it does, else what
    `netadapt lut` makes of the space on the version's own device and backend
    (``bench.sweep.build_lut``: derived from the newest sealed version of that setup, and
    resumed where an interrupted run stopped). Says so in one line through ``log``. The
    device not attached: DeviceAbsent with the `netadapt lut` command to run where it is."""
    need = {s.key for s in space.specs()}
    absent = need - store.keys(version, status="ok")
    if not absent:
        return version
    label = f"{store.path}@{version.id}"
    command = space.command(version.device, store.path, backend_option(version))
    lacks = (f"{label} lacks {len(absent)} of the {len(need)} keys of {space.describe()} "
             f"(on {version.device})")
    if log:
        log(f"{lacks}: sweeping them into a derived version, as `{command}` does "
            "(--no-sweep: stop instead)")
    with contextlib.ExitStack() as stack:
        if runners is None:
            runners = stack.enter_context(attached(
                version.device, version.backend, lacks, f"sweep them with: {command}"))
        version.require_same_setup(farm_fingerprint(runners), "its keys cannot be swept into "
                                   f"a version derived from it; build a LUT for this setup "
                                   f"with: {command}")
        step, done = f"sweeping {space.describe()}", [0]

        def planned(p: Plan) -> None:
            done[0] = p.done
            progress(step, p.done, p.total, f"on {version.device}")

        def measured(n: int, _serial: str) -> None:
            done[0] += n
            progress(step, done[0], len(need), f"on {version.device}")

        res = build_lut(store.path, version.device, runners, space, on_plan=planned,
                        progress=measured)
    assert res.version is not None  # not a dry run
    return store.version(res.version.id)


def covering_sweep(version: Version, keys: Iterable[str], family: str, resolution: int,
                   classes: int, dtype: str = "float32") -> SweepSpace | None:
    """The smallest sweep of ``family`` at ``resolution`` that holds ``keys``: at the grid of
    the version's sweeps of it, else `netadapt lut`'s default, else finer. None: no grid does
    (widths off every grid, or not this family's layers)."""
    from bench.zoo import FAMILIES

    if family not in FAMILIES:
        return None
    grids = [int(s["grid"]) for s in version.space.get("sweeps", [])
             if family in s.get("families", [])]
    want = set(keys)
    for grid in dict.fromkeys([*sorted(grids, reverse=True), 32, 16, 8]):
        space = SweepSpace((family,), (resolution,), grid, classes, dtype)
        if want <= {s.key for s in space.specs()}:
            return space
    return None


def backend_option(version: Version) -> str | None:
    """--backend for commands: left out when it is the device config's default."""
    try:
        return None if load_config(version.device).default_backend == version.backend \
            else version.backend
    except ConfigError:
        return version.backend


def estimate_network(store: LutStore, version: Version, net: Network,
                     policy: str = MissingPolicy.ERROR, *, raw: bool = False,
                     device: str | None = None, runner: Runner | None = None,
                     log: Log | None = None, progress: Steps = silent) -> Estimate:
    """What `netadapt estimate` prints: ``net`` on ``version``, its missing keys resolved by
    ``policy``, calibrated with the version's in-network model (``raw``: the plain sum).
    A version without a calibration gives the plain sum, and says so through ``log``; so
    does a calibration fitted while the machine was busy."""
    got = resolve(store, version, net.keys, policy, device=device, runner=runner, log=log,
                  progress=progress)
    cal = None if raw else store.calibration(got.version)
    if cal is None and not raw and log:
        log(f"warning: {got.label} has no calibration, so this is the plain sum of its "
            f"entries (typically 5-15 % low); calibrate it with: netadapt calibrate --lut "
            f"{got.label}")
    if cal is not None and log and cal.busy_warning():
        log(cal.busy_warning())
    return estimate(net, got.table, lut=got.label, interpolated=got.interpolated,
                    calibration=cal)

