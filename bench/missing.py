"""LUT keys a network needs and a version lacks: one policy, for every caller.

``error`` names the keys and the command that measures them; ``interpolate`` fills them
in over channel counts from measured neighbours; ``measure`` measures them on the
device now, into a sealed version derived from the selected one (or reuses such a
version measured earlier). `netadapt estimate`, the adapter and validation all go
through ``resolve``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from bench.devices import open_runners
from bench.runners.base import Runner
from bench.sweep import measure_missing
from lut_db.estimate import Estimate, MissingKeys, MissingPolicy, estimate, interpolate
from lut_db.spec import Network
from lut_db.store import LutError, LutStore, Version

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
            runner: Runner | None = None, log: Log | None = None) -> Resolved:
    """Entries for ``keys`` from ``version`` under ``policy`` (see the module)."""
    if policy not in tuple(MissingPolicy):
        raise LutError(f"unknown missing-key policy {policy!r}; use one of "
                       f"{', '.join(MissingPolicy)}")
    table = store.table(version.id)
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
    derived = ensure_keys(store, version, absent, device=device, runner=runner, log=log)
    return Resolved(derived, f"{store.path}@{derived.id}", store.table(derived.id))


def ensure_keys(store: LutStore, version: Version, keys: list[str], *,
                device: str | None = None, runner: Runner | None = None,
                log: Log | None = None) -> Version:
    """A sealed version derived from ``version`` that holds ``keys``: an earlier one if it
    exists, else measured now with ``runner`` or on ``device`` (default: the version's)."""
    from bench.tflite_build import build_layer

    say = log or (lambda _m: None)
    for v in reversed(store.versions()):
        if v.parent == version.id and v.status == "sealed" and set(keys) <= store.keys(v.id):
            say(f"using {v.label}: derived from {version.label} with the missing keys")
            return v
    held = store.locked  # a caller's lock stays with the caller
    store.lock()
    try:
        if runner is not None:
            return measure_missing(store, version, keys, [runner], build_layer)
        with open_runners(device or version.device, version.backend) as runners:
            say(f"measuring {len(keys)} missing key(s) on {device or version.device} into a "
                f"new version derived from {version.label}")
            return measure_missing(store, version, keys, runners, build_layer)
    finally:
        if not held:
            store.unlock()


def estimate_network(store: LutStore, version: Version, net: Network,
                     policy: str = MissingPolicy.ERROR, *, raw: bool = False,
                     device: str | None = None, runner: Runner | None = None,
                     log: Log | None = None) -> Estimate:
    """What `netadapt estimate` prints: ``net`` on ``version``, its missing keys resolved by
    ``policy``, calibrated with the version's in-network model (``raw``: the plain sum).
    A version without a calibration gives the plain sum, and says so through ``log``; so
    does a calibration fitted while the machine was busy."""
    got = resolve(store, version, net.keys, policy, device=device, runner=runner, log=log)
    cal = None if raw else store.calibration(got.version)
    if cal is None and not raw and log:
        log(f"warning: {got.label} has no calibration, so this is the plain sum of its "
            f"entries (typically 5-15 % low); calibrate it with: netadapt calibrate --lut "
            f"{got.label}")
    if cal is not None and log and cal.busy_warning():
        log(cal.busy_warning())
    return estimate(net, got.table, lut=got.label, interpolated=got.interpolated,
                    calibration=cal)

