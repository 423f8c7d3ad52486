"""`netadapt lut`: sweep a family's shape space on a device into a versioned LUT."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

import netadapt as api
from bench.devices import BackendName, open_runners
from bench.machine_state import MachineState
from bench.runners.base import RunnerError
from bench.zoo import FamilyName
from lut_db.spec import Dtype
from lut_db.store import open_lut
from netadapt.lut import CALIBRATION_NETWORKS, DEFAULT_GRID, DEFAULT_SPACE
from netadapt_cli.common import (
    CHECK_FAILED,
    HELP_MARKUP,
    backend_choice,
    console,
    human_output_to_stderr,
    lut_arg,
    lut_option,
    user_errors,
)
from netadapt_cli.progress import Bars

app = typer.Typer(help="Build, resume and check latency look-up tables.",
                  invoke_without_command=True, no_args_is_help=False, rich_markup_mode=HELP_MARKUP)


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
    calibration_networks: int = typer.Option(CALIBRATION_NETWORKS,
                                             help="Networks of the calibration set."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output: the "
                                 "version written and its counts (messages go to stderr)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Sweep the shape space of SPACE on DEVICE into a LUT version (resume if one is building),
    then calibrate it: whole networks measured on the same device fit the in-network model."""
    if ctx.invoked_subcommand is not None:
        return
    with user_errors(as_json), human_output_to_stderr(as_json):
        if db is not None:
            old = lut_arg(str(lut_file) if lut_file else None, str(db),
                          "netadapt lut --db FILE", "netadapt lut --lut FILE")
            lut_file = Path(old)
        with Bars(quiet) as bars:
            built = api.build_lut(
                lut_file, device, backend=backend, space=space, resolution=resolution,
                grid=grid, classes=classes, dtype=str(dtype), serial=serial,
                batch_size=batch_size, dry_run=dry_run, calibrate=calibrate,
                calibration_networks=calibration_networks, log=say, progress=bars)
    if as_json:
        print(json.dumps(built.to_dict(), indent=1))


def say(message: str) -> None:
    """Every line of the sweep's story, --quiet or not (it silences the bars only)."""
    console.print(message, highlight=False, markup=False)


@app.command("check")
def check(
    lut: str = lut_option(),
    sample: int = typer.Option(40, help="How many random keys to re-measure."),
    seed: int | None = typer.Option(None, help="Seed of the sample (default: a new one)."),
    tolerance: float = typer.Option(0.05, help="Median ratio further than this from 1: stale."),
    networks: int = typer.Option(8, help="Calibration networks to time whole beside the keys "
                                 "(layers alone cannot see a slower memory); 0: none."),
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

    # a negative or NaN tolerance made every LUT stale or none (`fresh: within ±nan %`)
    if not 0 <= tolerance < math.inf:
        raise typer.BadParameter(f"--tolerance must be a ratio of 0 or more, e.g. 0.05; "
                                 f"got {tolerance}")
    if sample < 1 or networks < 0:
        raise typer.BadParameter(f"--sample must be at least 1 (got {sample}) and --networks "
                                 f"0 or more (got {networks})")
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
                                                     f"{version.label}", sample), networks)
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
    if s.get("network_ratio") is not None:
        console.print(f"{s['networks']} calibration networks timed whole: median measured / "
                      f"calibrated estimate {s['network_ratio']:.3f}", highlight=False)
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
        nets = s.get("network_ratio")
        whole = f", whole networks {100 * (nets - 1):+.1f} %" if nets is not None else ""
        console.print(f"[yellow]stale: the device runs {100 * (s['median_ratio'] - 1):+.1f} % "
                      f"against the LUT{whole} (tolerance ±{100 * tolerance:.0f} %); rebuild "
                      f"with: netadapt lut {rebuild}[/]", highlight=False)
    else:
        console.print(f"fresh: within ±{100 * tolerance:.0f} % of the LUT")
