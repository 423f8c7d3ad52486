"""`netadapt calibrate`: fit a LUT version's in-network model from whole networks."""

from __future__ import annotations

import typer

import netadapt as api
from netadapt.lut import CALIBRATION_NETWORKS, CALIBRATION_PASSES
from netadapt_cli.common import console, err_console, lut_option, user_errors
from netadapt_cli.progress import Bars


def calibrate_cmd(
    lut: str = lut_option(),
    device: str | None = typer.Option(None, help="Device config (default: the LUT's device)."),
    serial: str | None = typer.Option(None, help="Phone serial, when several match."),
    networks: int = typer.Option(CALIBRATION_NETWORKS, help="Networks of the calibration set."),
    passes: int = typer.Option(CALIBRATION_PASSES, help="Interleaved passes: each network is "
                               "timed this often."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Measure a calibration set of whole networks on the LUT's device and backend, fit the
    in-network model, and store it with the version (once: a calibration never changes)."""
    with user_errors(as_json):
        with Bars(quiet) as bars:
            made = api.calibrate(lut, device=device, serial=serial, networks=networks,
                                 passes=passes, progress=bars)
        cal = made.calibration
        if as_json:
            print(cal.to_json())
        if cal.busy_warning():
            err_console.print(cal.busy_warning(), style="yellow", highlight=False, markup=False)
        if as_json:
            return
        console.print(f"calibrated {made.version.label}: {cal.describe()}; {cal.physics()}, "
                      f"{cal.us_per_act_mb:.2f} us per MB of activations, "
                      f"{cal.us_per_layer:+.2f} us per layer",
                      highlight=False)
