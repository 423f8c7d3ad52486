"""`netadapt lut`: sweep a family's shape space on a device into a versioned LUT."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from bench.devices import BackendName, load_config, open_runners
from bench.machine_state import MachineState
from bench.runners.base import Runner, RunnerError
from bench.sweep import build_lut, failure_dir
from bench.sweep_plan import Plan
from bench.sweep_run import SweepResult
from bench.sweep_space import SweepSpace
from bench.zoo import FamilyName
from lut_db.calibration import Calibration
from lut_db.spec import Dtype
from lut_db.store import open_lut
from netadapt_cli.common import (
    CHECK_FAILED,
    backend_choice,
    console,
    default_db,
    human_output_to_stderr,
    lut_arg,
    lut_option,
    user_errors,
)
from netadapt_cli.progress import Bars

DEFAULT_SPACE = "mobilenet_v1,mobilenet_v2"
DEFAULT_GRID = 32

app = typer.Typer(help="Build, resume and check latency look-up tables.",
                  invoke_without_command=True, no_args_is_help=False)


@app.callback()
def lut(
    ctx: typer.Context,
    device: str = typer.Option("host", help="Device config name (device_configs/NAME.toml)."),
    backend: BackendName | None = backend_choice(),
    space: str = typer.Option(DEFAULT_SPACE, metavar=f"<{'|'.join(FamilyName)}>,...",
                              help="Families whose shape space is swept, separated by commas: "
                              f"{', '.join(FamilyName)}."),
    resolution: list[int] = typer.Option([224], help="Input resolution (repeatable)."),
    grid: int = typer.Option(DEFAULT_GRID, help="Channel grid: every GRID channels."),
    classes: int = typer.Option(1000, help="Classes of the final FC layer."),
    dtype: Dtype = typer.Option(Dtype.FLOAT32, help="Key dtype. int8: full-integer quantized "
                                "layers, int8 in and out; float16: float16 weights (the GPU "
                                "delegate's half precision)."),
    lut_file: Path | None = typer.Option(None, "--lut", help="LUT file (default luts/DEVICE.db)."),
    db: Path | None = typer.Option(None, "--db", hidden=True, help="Old spelling of --lut."),
    serial: str | None = typer.Option(None, help="Use only this phone (ADB serial)."),
    batch_size: int | None = typer.Option(
        None, help="Keys per batch: one transaction, one ADB round trip for the lot "
        "(default: the runner's, 16 on the host, 100 over ADB)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show counts and ETA; measure nothing."),
    calibrate: bool = typer.Option(True, "--calibrate/--no-calibrate", help="After the sweep "
                                   "seals, measure whole networks and fit the in-network model "
                                   "the estimates use (once per version; see netadapt "
                                   "calibrate)."),
    calibration_networks: int = typer.Option(40, help="Networks of the calibration set."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output: the "
                                 "version written and its counts (messages go to stderr)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Sweep the shape space of SPACE on DEVICE into a LUT version (resume if one is building),
    then calibrate it: whole networks measured on the same device fit the in-network model."""
    if ctx.invoked_subcommand is not None:
        return
    with user_errors(as_json), human_output_to_stderr(as_json):
        if grid <= 0 or (batch_size or 1) <= 0 or classes <= 0 or min(resolution) <= 0:
            raise typer.BadParameter("--grid, --batch-size, --classes and --resolution "
                                     "must be positive")
        families = tuple(f.strip() for f in space.split(",") if f.strip())
        unknown = [f for f in families if f not in tuple(FamilyName)]
        if not families or unknown:
            raise typer.BadParameter(f"--space {space!r} names "
                                     f"{'no family' if not unknown else ', '.join(unknown)} "
                                     f"(known: {', '.join(FamilyName)})")
        if db is not None:
            old = lut_arg(str(lut_file) if lut_file else None, str(db),
                          "netadapt lut --db FILE", "netadapt lut --lut FILE")
            lut_file = Path(old)
        cfg = load_config(device)
        db = lut_file or default_db(cfg.name)
        sweep_space = SweepSpace(families, tuple(resolution), grid, classes, str(dtype))
        keys = len(sweep_space.specs())  # a bad space is refused before any device is touched
        with open_runners(cfg, backend, serial=serial) as runners, Bars(quiet) as bars:
            what = (f"{keys} keys ({sweep_space.describe()}) on "
                    f"{cfg.name}/{runners[0].backend}, {len(runners)} runner(s)")
            step, done = f"sweeping {cfg.name}", [0]

            def on_plan(p: Plan) -> None:
                _print_plan(p, db, what, dry_run)
                done[0] = p.done
                if p.missing and not dry_run:
                    bars(step, p.done, p.total)

            def measured(n: int, _serial: str) -> None:
                done[0] += n
                bars(step, done[0], keys)

            res = build_lut(db, cfg.name, runners, sweep_space, batch_size=batch_size,
                            dry_run=dry_run, on_plan=on_plan, progress=measured,
                            on_event=_farm_event)
            bars.end(step)  # a sweep stopped early ends its bar too
            _print_result(res, db, dry_run)
            cal = None
            if calibrate and not dry_run:
                cal = _calibrate(db, res.version.id, runners[0], calibration_networks, bars)
    if as_json:
        print(json.dumps(_result_json(res, db, keys, cal), indent=1))


def _result_json(res: SweepResult, db: Path, keys: int,
                 cal: Calibration | None) -> dict[str, Any]:
    p = res.plan
    return {"lut": str(db), "version": res.version.id if res.version else None,
            "label": f"{db}@{res.version.id}" if res.version else None,
            "action": p.action if p else None, "keys": keys,
            "stored_before": p.done if p else None, "measured": res.measured,
            "failed": res.failed, "wall_s": res.wall_s, "dry_run_eta_s": res.eta_s,
            "per_serial": res.per_serial, "agreement": res.agreement,
            "calibration": json.loads(cal.to_json()) if cal else None}


def _calibrate(db: Path, version_id: int, runner: Runner, networks: int,
               bars: Bars) -> Calibration:
    from analysis.calibrate import PASSES, ensure_calibrated

    cal, made = ensure_calibrated(db, version_id, runner, networks, progress=bars.counter(
        f"calibrating {db}@{version_id}", networks * PASSES))
    bars.end(f"calibrating {db}@{version_id}")  # already calibrated: nothing was measured
    if made:
        console.print(f"calibrated {db}@{version_id}: {cal.describe()}", highlight=False)
        if cal.busy_warning():
            console.print(cal.busy_warning(), style="yellow", highlight=False, markup=False)
    return cal


def _print_plan(p: Plan, db: Path, what: str, dry_run: bool) -> None:
    if p.action == "up-to-date":
        console.print(f"{db}@{p.version.id} (sealed) already holds all {what}: nothing to do")
        return
    verb = {"resume": f"resuming {db}@{p.version.id if p.version else ''}",
            "new": f"new version in {db}",
            "derive": f"new version derived from {db}@{p.parent.id if p.parent else ''}"}
    console.print(f"{verb[p.action]}: {what}; {p.done} stored, {len(p.missing)} to measure")


def _print_result(res: SweepResult, db: Path, dry_run: bool) -> None:
    if dry_run:
        console.print(f"dry run: would measure {len(res.plan.missing)} keys in about "
                      f"{res.eta_s / 60:.1f} min (calibrated on a sample; nothing stored)")
        return
    if res.plan.action == "up-to-date":
        return
    eff = f", efficiency {res.efficiency:.2f} (wall / timed)" if res.efficiency else ""
    console.print(f"sealed {db}@{res.version.id}: {res.measured} measured, {res.failed} failed, "
                  f"{res.wall_s:.0f} s{eff}")
    if len(res.per_serial) > 1:
        console.print("per phone: " + ", ".join(f"{s} {n}" for s, n in res.per_serial.items()))
    for row in res.agreement:
        console.print(f"agreement {row['serial']}: median ratio to the farm median "
                      f"{row['median_ratio']:.3f} over {row['keys']} keys "
                      f"(p5 {row['p5']:.3f}, p95 {row['p95']:.3f})", highlight=False)
    for state in res.states:
        if state.warning():
            console.print(state.warning("the LUT's entries"), style="yellow", highlight=False,
                          markup=False)
    if res.failed:
        console.print(f"[yellow]{res.failed} key(s) failed: netadapt db show --lut "
                      f"{db}@{res.version.id}; their tool output is in {failure_dir(db)}/",
                      highlight=False)


def _farm_event(kind: str, serial: str, message: str) -> None:
    text = {"lost": f"{serial} went away; its unfinished keys are back in the queue, "
                    "waiting for it to return",
            "back": f"{serial} is back and measuring again",
            "gone": f"{serial} left the sweep: {message}"}[kind]
    console.print(f"[yellow]{text}[/]" if kind != "back" else text, highlight=False)


@app.command("check")
def check(
    lut: str = lut_option(),
    sample: int = typer.Option(40, help="How many random keys to re-measure."),
    seed: int | None = typer.Option(None, help="Seed of the sample (default: a new one)."),
    tolerance: float = typer.Option(0.05, help="Median ratio further than this from 1: stale."),
    device: str | None = typer.Option(None, help="Device config (default: the LUT's device)."),
    backend: BackendName | None = backend_choice("Backend of the device's config (default: "
                                                 "the LUT's)."),
    serial: str | None = typer.Option(None, help="Phone serial, when several match."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Re-measure a random sample of a sealed version's keys now: has the LUT gone stale?
    Exit 3 when it has."""
    from analysis.drift import check as drift_check

    with user_errors(as_json):
        store, version = open_lut(lut)
        try:
            with open_runners(device or version.device, backend or version.backend,
                              serial=serial) as runners:
                if not runners:
                    raise RunnerError(f"no {device or version.device} device attached to "
                                      "measure on")
                with Bars(quiet) as bars:
                    drift = drift_check(store, version, runners[0], sample, seed, tolerance,
                                        bars.counter(f"re-measuring {sample} keys of "
                                                     f"{version.label}", sample))
        finally:
            store.close()
        s = drift.summary()
    if as_json:
        print(json.dumps(s, indent=1))
    else:
        _print_check(version.label, f"--device {version.device} --lut {store.path}", s,
                     tolerance, drift.state)
    if s["stale"]:
        raise typer.Exit(CHECK_FAILED)


def _print_check(label: str, rebuild: str, s: dict, tolerance: float,
                 state: MachineState | None) -> None:
    from rich.table import Table

    console.print(f"{label}: {s['keys']} keys re-measured now (seed {s['seed']}): "
                  f"median ratio now / LUT {s['median_ratio']:.3f} (p10 {s['p10']:.3f}, "
                  f"p90 {s['p90']:.3f}); {100 * s['within_5pct']:.0f} % of keys within ±5 %",
                  highlight=False)
    if s["outliers"]:
        t = Table("key", "LUT ms", "now ms", "ratio", title="outliers (moved against the rest)")
        for o in s["outliers"]:
            t.add_row(o["key"], f"{o['lut_us'] / 1000:.3f}", f"{o['now_us'] / 1000:.3f}",
                      f"{o['ratio']:.2f}")
        console.print(t)
    if state is not None:
        console.print(f"machine: {state.describe()}", highlight=False, markup=False)
        if state.warning():
            console.print(state.warning("the keys"), style="yellow", highlight=False,
                          markup=False)
    if s["stale"]:
        console.print(f"[yellow]stale: the device runs {100 * (s['median_ratio'] - 1):+.1f} % "
                      f"against the LUT (tolerance ±{100 * tolerance:.0f} %); rebuild with: "
                      f"netadapt lut {rebuild}[/]", highlight=False)
    else:
        console.print(f"fresh: within ±{100 * tolerance:.0f} % of the LUT")
