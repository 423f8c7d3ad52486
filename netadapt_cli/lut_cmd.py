"""`netadapt lut`: sweep a family's shape space on a device into a versioned LUT."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from bench import sweep, zoo
from bench.devices import load_config, make_runners
from bench.runners.base import BatchItem, Runner, RunnerError
from lut_db.spec import LayerSpec
from netadapt_cli.common import console, default_db, user_errors

DEFAULT_SPACE = "mobilenet_v1,mobilenet_v2"
DEFAULT_GRID = 32

app = typer.Typer(help="Build, resume and check latency look-up tables.",
                  invoke_without_command=True, no_args_is_help=False)


@app.callback()
def lut(
    ctx: typer.Context,
    device: str = typer.Option("host", help="Device config name (device_configs/NAME.toml)."),
    backend: str | None = typer.Option(None, help="Backend of the config (default: its own)."),
    space: str = typer.Option(DEFAULT_SPACE, help="Families whose shape space is swept."),
    resolution: list[int] = typer.Option([224], help="Input resolution (repeatable)."),
    grid: int = typer.Option(DEFAULT_GRID, help="Channel grid: every GRID channels."),
    classes: int = typer.Option(1000, help="Classes of the final FC layer."),
    db: Path | None = typer.Option(None, help="LUT file (default luts/DEVICE.db)."),
    serial: str | None = typer.Option(None, help="Use only this phone (ADB serial)."),
    batch_size: int | None = typer.Option(
        None, help="Keys per batch: one transaction, one ADB round trip for the lot "
        "(default: the runner's, 16 on the host, 100 over ADB)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show counts and ETA; measure nothing."),
) -> None:
    """Sweep the shape space of SPACE on DEVICE into a LUT version; resume if one is building."""
    if ctx.invoked_subcommand is not None:
        return
    with user_errors():
        if grid <= 0 or (batch_size or 1) <= 0 or classes <= 0 or min(resolution) <= 0:
            raise typer.BadParameter("--grid, --batch-size, --classes and --resolution "
                                     "must be positive")
        cfg = load_config(device)
        db = db or default_db(cfg.name)
        families = [s.strip() for s in space.split(",") if s.strip()]
        if not families:
            raise typer.BadParameter(f"--space names no family (known: {', '.join(zoo.FAMILIES)})")
        specs: set[LayerSpec] = set()
        for r in resolution:
            for f in families:
                specs |= zoo.shape_space(zoo.family(f), r, grid, classes)
        runners = make_runners(cfg, backend, serial=serial)
        try:
            _sweep(cfg.name, runners, specs, db, families, resolution, grid, classes,
                   batch_size, dry_run)
        finally:
            for r in runners:
                r.close()


def _sweep(device: str, runners: list[Runner], specs: set[LayerSpec], db: Path,
           families: list[str], resolutions: list[int], grid: int, classes: int,
           batch_size: int | None, dry_run: bool) -> None:
    from bench.tflite_build import build_layer
    from lut_db.store import LutStore

    lead = runners[0]
    fingerprint = farm_fingerprint(runners)
    store = LutStore.memory() if dry_run and not db.exists() else LutStore.open(db, create=True)
    if not dry_run:
        store.lock()
    p = sweep.plan(store, device, lead.backend, fingerprint, specs)
    what = (f"{len(specs)} keys ({', '.join(families)} at {resolutions} px, grid {grid}) "
            f"on {device}/{lead.backend}, {len(runners)} runner(s)")
    if p.action == "up-to-date":
        console.print(f"{db}@{p.version.id} (sealed) already holds all {what}: nothing to do")
        store.close()  # and its writer lock: the process may go on (tests, notebooks)
        return
    verb = {"resume": f"resuming {db}@{p.version.id if p.version else ''}",
            "new": f"new version in {db}",
            "derive": f"new version derived from {db}@{p.parent.id if p.parent else ''}"}
    console.print(f"{verb[p.action]}: {what}; {p.done} stored, {len(p.missing)} to measure")
    if dry_run:
        eta = calibrate_eta(lead, p.missing, build_layer) / len(runners)
        console.print(f"dry run: would measure {len(p.missing)} keys in about "
                      f"{eta / 60:.1f} min (calibrated on a sample; nothing stored)")
        store.close()
        return
    space = {"sweeps": [{"families": families, "resolutions": resolutions, "grid": grid,
                         "classes": classes}]}
    version = sweep.start_version(store, p, device, lead.backend, fingerprint, space)
    failures = db.parent / f"{db.stem}.failures"
    sample = sweep.replica_sample(s.key for s in specs) if len(runners) > 1 else []
    with _progress() as bar:
        task = bar.add_task(f"{device}@{version.id}", total=p.total, completed=p.done)
        try:
            res = sweep.run(store, version, p.missing, runners, build_layer, batch_size,
                            progress=lambda n, _s: bar.advance(task, n), replica_keys=sample,
                            failure_dir=failures, on_event=_farm_event)
        except BaseException:
            store.close()  # and its writer lock: the process may go on (tests, notebooks)
            raise
    eff = f", efficiency {res.efficiency:.2f} (wall / timed)" if res.efficiency else ""
    console.print(f"sealed {db}@{res.version.id}: {res.measured} measured, {res.failed} failed, "
                  f"{res.wall_s:.0f} s{eff}")
    if len(runners) > 1:
        console.print("per phone: " + ", ".join(f"{s} {n}" for s, n in res.per_serial.items()))
        _print_agreement(store, version.id)
    if res.failed:
        console.print(f"[yellow]{res.failed} key(s) failed: netadapt db show {db}@{version.id}; "
                      f"their tool output is in {failures}/", highlight=False)
    store.close()


def farm_fingerprint(runners: list[Runner]) -> dict[str, Any]:
    """The one fingerprint every phone of a sweep shares; phones that differ cannot share
    a version (their numbers would be mixed), so they are refused with the differences."""
    fingerprints = [r.fingerprint() for r in runners]
    lead = fingerprints[0]
    for r, fp in zip(runners[1:], fingerprints[1:]):
        if fp != lead:
            keys = sorted(k for k in fp.keys() | lead.keys() if fp.get(k) != lead.get(k))
            what = ", ".join(f"{k}: {lead.get(k)!r} vs {fp.get(k)!r}" for k in keys)
            raise RunnerError(f"phones {getattr(runners[0], 'serial', '?')} and "
                              f"{getattr(r, 'serial', '?')} differ ({what}); their numbers "
                              "cannot share one LUT version: choose one with --serial")
    return lead


def _farm_event(kind: str, serial: str, message: str) -> None:
    text = {"lost": f"{serial} went away; its unfinished keys are back in the queue, "
                    "waiting for it to return",
            "back": f"{serial} is back and measuring again",
            "gone": f"{serial} left the sweep: {message}"}[kind]
    console.print(f"[yellow]{text}[/]" if kind != "back" else text, highlight=False)


def _print_agreement(store: Any, version: int) -> None:
    from bench.agreement import agreement

    for row in agreement(store, version)["phones"]:
        console.print(f"agreement {row['serial']}: median ratio to the farm median "
                      f"{row['median_ratio']:.3f} over {row['keys']} keys "
                      f"(p5 {row['p5']:.3f}, p95 {row['p95']:.3f})", highlight=False)


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=console, transient=False)


def calibrate_eta(runner: Runner, keys: list[str], build: Any, sample: int = 6) -> float:
    """Seconds to measure ``keys``: time a few of them, fit wall ~ a + b * MACs, sum."""
    if not keys:
        return 0.0
    picks = random.Random(0).sample(keys, min(sample, len(keys)))
    macs, wall = [], []
    for k in picks:
        spec = LayerSpec.parse(k)
        t0 = time.perf_counter()
        runner.measure([BatchItem(k, build(spec))])
        wall.append(time.perf_counter() - t0)
        macs.append(spec.macs)
    if len(set(macs)) > 1:
        b, a = np.polyfit(macs, wall, 1)
        b, a = max(b, 0.0), max(a, min(wall))
    else:
        a, b = float(np.mean(wall)), 0.0
    return float(sum(a + b * LayerSpec.parse(k).macs for k in keys))


@app.command("check")
def check(
    lut: str = typer.Option(..., help="LUT file, optionally @VERSION, e.g. luts/host.db@1."),
    sample: int = typer.Option(40, help="How many random keys to re-measure."),
    seed: int | None = typer.Option(None, help="Seed of the sample (default: a new one)."),
    tolerance: float = typer.Option(0.05, help="Median ratio further than this from 1: stale."),
    device: str | None = typer.Option(None, help="Device config (default: the LUT's device)."),
    backend: str | None = typer.Option(None, help="Backend (default: the LUT's)."),
    serial: str | None = typer.Option(None, help="Phone serial, when several match."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Re-measure a random sample of a sealed version's keys now: has the LUT gone stale?"""
    import json

    from rich.table import Table

    from analysis.drift import check as drift_check
    from netadapt_cli.common import open_lut

    with user_errors():
        store, version = open_lut(lut)
        runners = make_runners(load_config(device or version.device), backend or version.backend,
                               serial=serial)
        if not runners:
            raise RunnerError(f"no {device or version.device} device attached to measure on")
        try:
            drift = drift_check(store, version, runners[0], sample, seed, tolerance)
        finally:
            for r in runners:
                r.close()
            store.close()
        s = drift.summary()
        if as_json:
            print(json.dumps(s, indent=1))
            return
        console.print(f"{version.label}: {s['keys']} keys re-measured now (seed {s['seed']}): "
                      f"median ratio now / LUT {s['median_ratio']:.3f} (p10 {s['p10']:.3f}, "
                      f"p90 {s['p90']:.3f}); {100 * s['within_5pct']:.0f} % of keys within ±5 %",
                      highlight=False)
        if s["outliers"]:
            t = Table("key", "LUT ms", "now ms", "ratio", title="outliers (moved against the rest)")
            for o in s["outliers"]:
                t.add_row(o["key"], f"{o['lut_us'] / 1000:.3f}", f"{o['now_us'] / 1000:.3f}",
                          f"{o['ratio']:.2f}")
            console.print(t)
        if s["stale"]:
            console.print(f"[yellow]stale: the device runs {100 * (s['median_ratio'] - 1):+.1f} % "
                          f"against the LUT (tolerance ±{100 * tolerance:.0f} %); rebuild with: "
                          f"netadapt lut --device {version.device}[/]", highlight=False)
        else:
            console.print(f"fresh: within ±{100 * tolerance:.0f} % of the LUT")
