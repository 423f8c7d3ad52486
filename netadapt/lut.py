"""`netadapt lut` and `netadapt calibrate` as calls: sweep a shape space on a device into a
versioned LUT (then calibrate it), or calibrate a version that has no calibration yet."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import sweep
from bench.devices import load_config, open_runners
from bench.runners.base import Runner
from bench.sweep_plan import Plan
from bench.sweep_run import SweepResult
from bench.sweep_space import SweepSpace
from bench.zoo import FAMILIES
from lut_db.calibration import Calibration
from lut_db.progress import Steps, silent
from lut_db.store import open_lut
from lut_db.versions import Version
from netadapt.errors import OptionError

Log = Callable[[str], None]
DEFAULT_SPACE = "mobilenet_v1,mobilenet_v2"
DEFAULT_GRID = 32
CALIBRATION_NETWORKS = 40
CALIBRATION_PASSES = 3


def default_lut(device: str) -> Path:
    """Where a device's LUT lives unless told: ``luts/DEVICE.db``."""
    return Path("luts") / f"{device}.db"


@dataclass
class BuiltLut:
    """What `netadapt lut` did: the sweep (``bench.SweepResult``) and the calibration."""

    lut: Path
    keys: int  # keys of the space
    sweep: SweepResult
    calibration: Calibration | None

    @property
    def label(self) -> str | None:
        """``file@version``; None after a dry run of a new version."""
        return f"{self.lut}@{self.sweep.version.id}" if self.sweep.version else None

    def to_dict(self) -> dict[str, Any]:
        """What `netadapt lut --json` prints."""
        res, p = self.sweep, self.sweep.plan
        return {"lut": str(self.lut), "version": res.version.id if res.version else None,
                "label": self.label, "action": p.action if p else None, "keys": self.keys,
                "stored_before": p.done if p else None, "measured": res.measured,
                "failed": res.failed, "wall_s": res.wall_s, "dry_run_eta_s": res.eta_s,
                "per_serial": res.per_serial, "agreement": res.agreement,
                "calibration": json.loads(self.calibration.to_json())
                if self.calibration else None}


def build_lut(lut: str | Path | None = None, device: str = "host", *,
              backend: str | None = None, space: str | Sequence[str] = DEFAULT_SPACE,
              resolution: int | Sequence[int] = 224, grid: int = DEFAULT_GRID,
              classes: int = 1000, dtype: str = "float32", serial: str | None = None,
              batch_size: int | None = None, dry_run: bool = False, calibrate: bool = True,
              calibration_networks: int = CALIBRATION_NETWORKS, log: Log | None = None,
              progress: Steps = silent) -> BuiltLut:
    """Sweep the shape space of the ``space`` families on ``device`` into a new version of
    ``lut`` (default ``luts/DEVICE.db``; a building version of the same setup is resumed),
    seal it, then calibrate it from whole networks measured on the same device.
    ``log`` hears what happens in sentences, ``progress`` each long step."""
    say = log or (lambda _m: None)
    families = _families(space)
    resolutions = (resolution,) if isinstance(resolution, int) else tuple(resolution)
    for option, value in (("--grid", grid), ("--batch-size", batch_size),
                          ("--classes", classes), *(("--resolution", r) for r in resolutions)):
        if value is not None and value <= 0:  # batch_size None: the runner's own
            raise OptionError(f"{option} must be positive, got {value}")
    if not resolutions:
        raise OptionError("give at least one --resolution")
    if calibrate and not dry_run:
        _check_calibration_networks(calibration_networks, "--calibration-networks",
                                    "or --no-calibrate to skip calibrating")
    cfg = load_config(device)
    db = Path(lut) if lut is not None else default_lut(cfg.name)
    shapes = SweepSpace(families, resolutions, grid, classes, str(dtype))
    keys = len(shapes.specs())  # a bad space is refused before any device is touched
    with open_runners(cfg, backend, serial=serial) as runners:
        what = (f"{keys} keys ({shapes.describe()}) on {cfg.name}/{runners[0].backend}, "
                f"{len(runners)} runner(s)")
        step, done = f"sweeping {cfg.name}", [0]

        def on_plan(p: Plan) -> None:
            say(_plan_line(p, db, what))
            done[0] = p.done
            if p.missing and not dry_run:
                progress(step, p.done, p.total)

        def measured(n: int, _serial: str) -> None:
            done[0] += n
            progress(step, done[0], keys)

        res = sweep.build_lut(db, cfg.name, runners, shapes, batch_size=batch_size,
                              dry_run=dry_run, on_plan=on_plan, progress=measured,
                              on_event=lambda kind, s, m: say(_farm_line(kind, s, m)))
        for line in _result_lines(res, db, dry_run):
            say(line)
        cal = None
        if calibrate and not dry_run:
            cal = _ensure_calibrated(db, res.version.id, runners[0], calibration_networks,
                                     say, progress)
    return BuiltLut(db, keys, res, cal)


@dataclass
class Calibrated:
    """A version's calibration, made now."""

    version: Version
    calibration: Calibration

    def to_dict(self) -> dict[str, Any]:
        """What `netadapt calibrate --json` prints."""
        return json.loads(self.calibration.to_json())


def calibrate(lut: str | Path, *, device: str | None = None, serial: str | None = None,
              networks: int = CALIBRATION_NETWORKS, passes: int = CALIBRATION_PASSES,
              progress: Steps = silent) -> Calibrated:
    """Measure a calibration set of whole networks on the LUT's device and backend, fit the
    in-network model, and store it with the version (once: a calibration never changes).
    ``lut``: ``file[@version]``."""
    from analysis.calibrate import calibrate as fit_and_store

    if networks < 1 or passes < 1:
        raise OptionError("--networks and --passes must be at least 1")
    _check_calibration_networks(networks, "--networks")
    store, version = open_lut(str(lut))
    with store, open_runners(device or version.device, version.backend,
                             serial=serial) as runners:
        store.lock()
        return Calibrated(version, fit_and_store(
            store, version, runners[0], networks, passes, counter(
                progress, f"calibrating {version.label}: measuring {networks} networks",
                networks * passes)))


def _check_calibration_networks(networks: int, option: str, otherwise: str = "") -> None:
    """Refused before the sweep and the measuring, not by the fit after them."""
    from analysis.calibrate import MIN_NETWORKS

    if networks < MIN_NETWORKS:
        raise OptionError(f"{option} must be at least {MIN_NETWORKS} (a calibration fits its "
                          f"parameters and cross-validates them), got {networks}"
                          + (f"; {otherwise}" if otherwise else ""))


def counter(progress: Steps, name: str, total: float) -> Callable[..., None]:
    """An ``advance(n, detail?)`` callback (what the sweep and the timing loop call) that
    reports the step ``name`` to ``progress``; the step shows from its first advance."""
    count = [0.0]

    def advance(n: float, *what: object) -> None:
        count[0] += n
        detail = str(what[0]) if what and isinstance(what[0], str) else ""
        progress(name, count[0], total, detail)

    return advance


def _families(space: str | Sequence[str]) -> tuple[str, ...]:
    names = space.split(",") if isinstance(space, str) else list(space)
    families = tuple(f.strip() for f in names if f.strip())
    unknown = [f for f in families if f not in FAMILIES]
    if not families or unknown:
        raise OptionError(f"--space {space if isinstance(space, str) else ','.join(space)!r} "
                          f"names {'no family' if not unknown else ', '.join(unknown)} "
                          f"(known: {', '.join(FAMILIES)})")
    return families


def _ensure_calibrated(db: Path, version_id: int, runner: Runner, networks: int, say: Log,
                       progress: Steps) -> Calibration:
    from analysis.calibrate import PASSES, ensure_calibrated

    name = f"calibrating {db}@{version_id}"
    cal, made = ensure_calibrated(db, version_id, runner, networks,
                                  progress=counter(progress, name, networks * PASSES))
    if made:
        say(f"calibrated {db}@{version_id}: {cal.describe()}")
        if cal.busy_warning():
            say(cal.busy_warning())
    return cal


def _plan_line(p: Plan, db: Path, what: str) -> str:
    if p.action == "up-to-date":
        return f"{db}@{p.version.id} (sealed) already holds all {what}: nothing to do"
    verb = {"resume": f"resuming {db}@{p.version.id if p.version else ''}",
            "new": f"new version in {db}",
            "derive": f"new version derived from {db}@{p.parent.id if p.parent else ''}"}
    return f"{verb[p.action]}: {what}; {p.done} stored, {len(p.missing)} to measure"


def _result_lines(res: SweepResult, db: Path, dry_run: bool) -> list[str]:
    if dry_run:
        return [(f"dry run: would measure {len(res.plan.missing)} keys in about "
                 f"{res.eta_s / 60:.1f} min (calibrated on a sample; nothing stored)")]
    if res.plan.action == "up-to-date":
        return []
    eff = f", efficiency {res.efficiency:.2f} (wall / timed)" if res.efficiency else ""
    lines = [(f"sealed {db}@{res.version.id}: {res.measured} measured, {res.failed} failed, "
              f"{res.wall_s:.0f} s{eff}")]
    if len(res.per_serial) > 1:
        lines.append("per phone: " + ", ".join(f"{s} {n}" for s, n in res.per_serial.items()))
    lines += [f"agreement {row['serial']}: median ratio to the farm median "
              f"{row['median_ratio']:.3f} over {row['keys']} keys (p5 {row['p5']:.3f}, "
              f"p95 {row['p95']:.3f})" for row in res.agreement]
    lines += [s.warning("the LUT's entries") for s in res.states if s.warning()]
    if res.failed:
        lines.append(f"{res.failed} key(s) failed: netadapt db show --lut {db}@{res.version.id}; "
                     f"their tool output is in {sweep.failure_dir(db)}/")
    return lines


def _farm_line(kind: str, serial: str, message: str) -> str:
    return {"lost": f"{serial} went away; its unfinished keys are back in the queue, "
                    "waiting for it to return",
            "back": f"{serial} is back and measuring again",
            "gone": f"{serial} left the sweep: {message}"}[kind]
