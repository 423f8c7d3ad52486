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
from bench.runners.base import BatchItem, Runner
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
    batch_size: int = typer.Option(16, help="Keys per batch (one transaction, one round trip)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show counts and ETA; measure nothing."),
) -> None:
    """Sweep the shape space of SPACE on DEVICE into a LUT version; resume if one is building."""
    if ctx.invoked_subcommand is not None:
        return
    with user_errors():
        if grid <= 0 or batch_size <= 0 or classes <= 0 or min(resolution) <= 0:
            raise typer.BadParameter("--grid, --batch-size, --classes and --resolution "
                                     "must be positive")
        cfg = load_config(device)
        db = db or default_db(cfg.name)
        families = [s.strip() for s in space.split(",") if s.strip()]
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
           batch_size: int, dry_run: bool) -> None:
    from bench.tflite_build import build_layer
    from lut_db.store import LutStore

    lead = runners[0]
    fingerprint = lead.fingerprint()
    store = LutStore.memory() if dry_run and not db.exists() else LutStore.open(db, create=True)
    if not dry_run:
        store.lock()
    p = sweep.plan(store, device, lead.backend, fingerprint, specs)
    what = (f"{len(specs)} keys ({', '.join(families)} at {resolutions} px, grid {grid}) "
            f"on {device}/{lead.backend}, {len(runners)} runner(s)")
    if p.action == "up-to-date":
        console.print(f"{db}@{p.version.id} (sealed) already holds all {what}: nothing to do")
        return
    verb = {"resume": f"resuming {db}@{p.version.id if p.version else ''}",
            "new": f"new version in {db}",
            "derive": f"new version derived from {db}@{p.parent.id if p.parent else ''}"}
    console.print(f"{verb[p.action]}: {what}; {p.done} stored, {len(p.missing)} to measure")
    if dry_run:
        eta = calibrate_eta(lead, p.missing, build_layer) / len(runners)
        console.print(f"dry run: would measure {len(p.missing)} keys in about "
                      f"{eta / 60:.1f} min (calibrated on a sample; nothing stored)")
        return
    space = {"sweeps": [{"families": families, "resolutions": resolutions, "grid": grid,
                         "classes": classes}]}
    version = sweep.start_version(store, p, device, lead.backend, fingerprint, space)
    with _progress() as bar:
        task = bar.add_task(f"{device}@{version.id}", total=p.total, completed=p.done)
        res = sweep.run(store, version, p.missing, runners, build_layer, batch_size,
                        progress=lambda n, _s: bar.advance(task, n))
    eff = f", efficiency {res.efficiency:.2f} (wall / timed)" if res.efficiency else ""
    console.print(f"sealed {db}@{res.version.id}: {res.measured} measured, {res.failed} failed, "
                  f"{res.wall_s:.0f} s{eff}")
    if res.failed:
        console.print(f"[yellow]{res.failed} key(s) failed: netadapt db show {db}@{version.id}")
    store.close()


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
