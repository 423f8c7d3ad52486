"""`netadapt report`: validate a LUT version against whole networks and write the report."""

from __future__ import annotations

import json
from pathlib import Path

import typer

import netadapt as api
from bench.devices import BackendName
from netadapt_cli.common import (
    backend_choice,
    commentary,
    console,
    human_output_to_stderr,
    lut_option,
    sweep_option,
    user_errors,
)
from netadapt_cli.progress import Bars


def report_cmd(
    lut: str | None = lut_option(None, "Default: luts/DEVICE.db."),
    device: str | None = typer.Option(None, help="Device config to measure on (default: the "
                                      "LUT's device)."),
    backend: BackendName | None = backend_choice("Backend of the device's config (default: "
                                                 "the LUT's)."),
    serial: str | None = typer.Option(None, help="Phone serial, when several match."),
    compare: str | None = typer.Option(None, help="Another LUT file (optionally @VERSION): other device or "
                                       "backend, to compare with key by key."),
    networks: int = typer.Option(60, "--networks", "-n", help="Validation networks to sample."),
    seed: int = typer.Option(0, help="Seed of the validation set."),
    passes: int = typer.Option(4, help="Interleaved passes per repeat."),
    repeats: int = typer.Option(3, help="Each network is measured this often at separate "
                                "moments (--passes passes each): the median is its latency, "
                                "their spread its repeatability."),
    out: Path = typer.Option(Path("reports"), help="Reports folder: writes "
                             "OUT/DEVICE/VERSION/{index.html,report.md,metrics.json}."),
    measure: bool = typer.Option(True, "--measure/--no-measure", help="Measure validations "
                                 "that are not stored yet (--no-measure: report what is)."),
    sweep: bool = sweep_option("the validation networks need", "stop before measuring "
                               "anything, naming how many and the command that measures them"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output: the report's "
                                 "metrics and files (messages go to stderr)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress and no commentary."),
) -> None:
    """Estimate vs measure whole networks on a LUT's device; write an HTML/Markdown/JSON report."""
    with user_errors(as_json), human_output_to_stderr(as_json):
        with Bars(quiet) as bars:
            done = api.report(lut, device=device, backend=backend, serial=serial,
                              compare=compare, networks=networks, seed=seed, passes=passes,
                              repeats=repeats, out=out, measure=measure, sweep=sweep,
                              log=commentary(quiet=quiet), progress=bars)
        for line in done.verdict():
            console.print(line, highlight=False)
        console.print(f"{done.validation.measured} network(s) measured now, "
                      f"{done.validation.reused} reused; report: {done.folder / 'index.html'}",
                      highlight=False)
    if as_json:
        print(json.dumps(done.to_dict(), indent=1, default=str))
