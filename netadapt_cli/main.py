"""The `netadapt` command: one thin front for lut_db, bench, analysis and adapter."""

from __future__ import annotations

import typer

from netadapt_cli import (
    adapt_cmd,
    calibrate_cmd,
    db_cmd,
    devices_cmd,
    doctor_cmd,
    estimate_cmd,
    lut_cmd,
    report_cmd,
)
from netadapt_cli.common import HELP_MARKUP, RootGroup

app = typer.Typer(cls=RootGroup, help="Layer-wise latency look-up tables for phones and this "
                  "machine, and NetAdapt against them.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False,
                  rich_markup_mode=HELP_MARKUP)
app.add_typer(lut_cmd.app, name="lut")
app.add_typer(db_cmd.app, name="db")
app.command("calibrate")(calibrate_cmd.calibrate_cmd)
app.command("estimate")(estimate_cmd.estimate_cmd)
app.command("measure")(estimate_cmd.measure_cmd)
app.command("devices")(devices_cmd.devices_cmd)
app.command("doctor")(doctor_cmd.doctor_cmd)
app.command("report")(report_cmd.report_cmd)
app.command("adapt")(adapt_cmd.adapt_cmd)

if __name__ == "__main__":
    app()
