"""`netadapt calibrate`: fit a LUT version's in-network model from whole networks."""

from __future__ import annotations

import typer

from netadapt_cli.common import console, err_console, lut_option, user_errors
from netadapt_cli.progress import Bars


def calibrate_cmd(
    lut: str = lut_option(),
    device: str | None = typer.Option(None, help="Device config (default: the LUT's device)."),
    serial: str | None = typer.Option(None, help="Phone serial, when several match."),
    networks: int = typer.Option(40, help="Networks of the calibration set."),
    passes: int = typer.Option(3, help="Interleaved passes: each network is timed this often."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Measure a calibration set of whole networks on the LUT's device and backend, fit the
    in-network model, and store it with the version (once: a calibration never changes)."""
    from analysis.calibrate import calibrate
    from bench.devices import open_runners
    from lut_db.store import open_lut

    with user_errors(as_json):
        if networks < 1 or passes < 1:
            raise typer.BadParameter("--networks and --passes must be at least 1")
        store, version = open_lut(lut)
        with store, open_runners(device or version.device, version.backend,
                                 serial=serial) as runners, Bars(quiet) as bars:
            store.lock()
            cal = calibrate(store, version, runners[0], networks, passes, bars.counter(
                f"calibrating {version.label}: measuring {networks} networks",
                networks * passes))
        if as_json:
            print(cal.to_json())
        if cal.busy_warning():
            err_console.print(cal.busy_warning(), style="yellow", highlight=False, markup=False)
        if as_json:
            return
        console.print(f"calibrated {version.label}: {cal.describe()}; {cal.physics()}, "
                      f"{cal.us_per_act_mb:.2f} us per MB of activations, "
                      f"{cal.us_per_layer:+.2f} us per layer",
                      highlight=False)
